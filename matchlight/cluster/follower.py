"""A node's copy of the stream: every message, in order, into its LMDB log and its actors.

:class:`StreamFollower` takes what the ordered consumer delivers (on the
asyncio thread) into a bounded buffer, and on Trio appends each drained run of
messages to the node's event store through the actor system's group-commit
writer, with the last message's stream sequence stored in the same LMDB
transaction (:attr:`~actors.store.PreparedBatch.position`). So a node that
restarts, even after ``kill -9``, resumes exactly after what it stored: no
event applied twice, none skipped. Event ids are checked as in one process,
so an event published twice (a client's retry in another batch) is stored once.

:class:`ClusterWrites` is the write side: it publishes a write's events and
answers once they are in the stream (replicated) and applied here.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Final

import attrs
import msgpack
import trio

from actors import ActorSystem, StoreError
from actors.codec import decode_event, encode_event
from actors.errors import CodecError
from actors.events import Event, InteractionRecorded, StoredEvent
from actors.system import WriteResult
from matchlight.cluster.bridge import AsyncioThread
from matchlight.cluster.partitions import Layout
from matchlight.cluster.stream import TRANSIENT, EventStream, LogUnavailable
from matchlight.errors import Unavailable

log = logging.getLogger(__name__)

#: Messages buffered between the consumer and the store before the consumer waits.
MAX_BUFFERED: Final = 4_096
#: Per stream sequence, what its message did here, kept for the writers waiting on it.
KEPT_RESULTS: Final = 65_536
#: How long a read or a write waits for this node to apply the stream up to a point, seconds.
APPLY_DEADLINE_S: Final = 10.0
#: How often a start that replays the stream logs how far it is, seconds.
REPLAY_LOG_S: Final = 10.0
#: How often the follower checks that it still advances while the stream grows, seconds.
WATCH_S: Final = 2.0


def encode_message(events: Sequence[Event]) -> bytes:
    """A stream message's data: the events, each as the event store encodes it."""
    data: bytes = msgpack.packb([encode_event(e) for e in events], use_bin_type=True)
    return data


def decode_message(data: bytes) -> list[Event]:
    """The events of a stream message.

    Raises:
        CodecError: it is not a list of encoded events.
    """
    try:
        records = msgpack.unpackb(data, raw=False)
    except (ValueError, msgpack.ExtraData) as exc:
        raise CodecError(f"not msgpack: {exc}") from None
    if not isinstance(records, list) or not all(isinstance(r, bytes) for r in records):
        raise CodecError("not a list of encoded events")
    return [decode_event(r) for r in records]


def message_id(events: Sequence[Event]) -> str:
    """A message's ``Nats-Msg-Id``: the same events make the same id (a retry is stored once)."""
    digest = hashlib.blake2b(digest_size=16)
    for event in events:
        digest.update(event.id.encode())
        digest.update(b"\0")
    return f"{digest.hexdigest()}-{len(events)}"


@attrs.define(eq=False)
class _Probe:
    """One request for the stream's head, and the reads waiting for its answer."""

    done: trio.Event = attrs.field(factory=trio.Event)
    head: int = 0
    error: str | None = None


class StreamFollower:
    """Applies the stream to a node's actor system; tells readers and writers how far."""

    def __init__(self, thread: AsyncioThread, stream: EventStream, system: ActorSystem) -> None:
        self.thread = thread
        self.stream = stream
        self.system = system
        #: The last stream sequence stored and applied here.
        self.position = system.store.position()
        #: Per stream sequence: (events stored, events already known).
        self.results: OrderedDict[int, tuple[int, int]] = OrderedDict()
        #: Messages skipped: not a list of events, or refused by the store.
        self.undecodable = 0
        self._buffer: deque[tuple[int, bytes]] = deque()
        self._signalled = False
        self._wakeup = trio.Event()
        self._advanced = trio.Event()
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        #: The head request reads wait for that has not been sent yet (see :meth:`head`).
        self._next_probe: _Probe | None = None
        self._probing = False

    # -- the asyncio side ---------------------------------------------------------

    async def _sink(self, seq: int, data: bytes) -> None:
        self._buffer.append((seq, data))
        if not self._signalled and self._token is not None:
            self._signalled = True
            try:
                self._token.run_sync_soon(self._wakeup.set)
            except trio.RunFinishedError:
                return
        while len(self._buffer) > MAX_BUFFERED:  # noqa: ASYNC110 (filled and drained apart)
            await asyncio.sleep(0.002)  # the consumer's flow control then holds the server

    # -- the Trio side ----------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow the stream from after :attr:`position` until cancelled."""
        self._token = trio.lowlevel.current_trio_token()
        await self._subscribe()
        task_status.started()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._watch)
            while True:
                await self._wakeup.wait()
                self._wakeup = trio.Event()
                self._signalled = False
                batch: list[tuple[int, bytes]] = []
                while self._buffer and len(batch) < MAX_BUFFERED:
                    batch.append(self._buffer.popleft())
                if batch:
                    await self._apply(batch)
                if self._buffer:
                    self._wakeup.set()

    async def _subscribe(self) -> None:
        await self.thread.run(self.stream.follow, self.position + 1, self._sink)

    async def _apply(self, batch: list[tuple[int, bytes]]) -> None:
        events: list[Event] = []
        spans: list[tuple[int, int, int]] = []  # (seq, first event, end)
        last = self.position
        for seq, data in batch:
            if seq <= last:  # delivered again after a new subscription
                continue
            last = seq
            try:
                decoded = decode_message(data)
            except CodecError as exc:
                self.undecodable += 1
                log.error("stream message %d skipped: %s", seq, exc)
                decoded = []
            spans.append((seq, len(events), len(events) + len(decoded)))
            events.extend(decoded)
        if last == self.position:
            return
        try:
            stored = (await self.system.writer.append(events, position=last)).stored
        except StoreError:
            stored = await self._append_each(events, spans)
        # Each stored event counts for the first message that carried it (one id may come in
        # two messages of a run: a client's retry in another batch).
        unclaimed = {entry.event.id for entry in stored}
        for seq, start, end in spans:
            accepted = 0
            for event in events[start:end]:
                if event.id in unclaimed:
                    unclaimed.discard(event.id)
                    accepted += 1
            self.results[seq] = (accepted, end - start - accepted)
        while len(self.results) > KEPT_RESULTS:
            self.results.popitem(last=False)
        self.position = last
        self._advanced.set()
        self._advanced = trio.Event()

    async def _append_each(
        self, events: list[Event], spans: list[tuple[int, int, int]]
    ) -> tuple[StoredEvent, ...]:
        """Append a run's messages one by one, after the run failed as a whole: a message
        the store refuses while it takes an empty write (an event id too long, say) is
        skipped and counted; if the store refuses everything (a full disk), wait and try
        again, losing nothing."""
        stored: list[StoredEvent] = []
        for seq, start, end in spans:
            while True:
                try:
                    result = await self.system.writer.append(events[start:end], position=seq)
                    stored.extend(result.stored)
                    break
                except StoreError as exc:
                    try:
                        await self.system.writer.append([], position=seq)
                    except StoreError:
                        log.error("stream message %d not stored yet: %s", seq, exc)
                        await trio.sleep(1.0)
                        continue
                    self.undecodable += 1
                    log.error("stream message %d skipped: %s", seq, exc)
                    break
        return tuple(stored)

    async def _watch(self) -> None:
        """Subscribe again if the stream grows and this node stays put (its consumer was on
        a server that died, say)."""
        while True:
            await trio.sleep(WATCH_S)
            try:
                head = await self.thread.run(self.stream.last_seq, WATCH_S)
            except LogUnavailable:
                continue
            if head <= self.position:
                continue
            before = self.position
            await trio.sleep(WATCH_S)
            if self.position == before and not self._buffer:
                log.warning(
                    "stream at %d, this node at %d and not moving: following again", head, before
                )
                try:
                    await self._subscribe()
                except (LogUnavailable, *TRANSIENT) as exc:
                    log.warning("following the stream again failed: %s", exc)

    async def wait_for(self, seq: int, deadline_s: float = APPLY_DEADLINE_S) -> None:
        """Wait until the stream is applied here up to ``seq``.

        Raises:
            Unavailable: not within ``deadline_s``.
        """
        with trio.move_on_after(deadline_s):
            while self.position < seq:
                await self._advanced.wait()
            return
        raise Unavailable(
            f"this node has applied the stream up to {self.position}, not yet {seq}; try again"
        )

    async def catch_up(self) -> None:
        """Wait until everything the stream holds now is applied here (read-your-writes).

        Raises:
            Unavailable: the stream cannot be reached, or this node is too far behind.
        """
        await self.wait_for(await self.head())

    async def replay(self) -> None:
        """At start: wait, however long it takes, until what the stream holds now is applied
        here (a node with an empty data directory replays it all), logging the progress
        every ``REPLAY_LOG_S``.

        Raises:
            Unavailable: the stream cannot be reached.
        """
        head = await self.head()
        started, before = time.monotonic(), self.position
        while True:
            try:
                await self.wait_for(head, REPLAY_LOG_S)
                break
            except Unavailable:
                elapsed = time.monotonic() - started
                log.info(
                    "replaying the stream: %d of %d (%.0f messages/s)",
                    self.position,
                    head,
                    (self.position - before) / elapsed,
                )

    async def head(self) -> int:
        """The stream's last sequence, asked after this call began.

        Reads arriving together share one request: a read joins the next request to be
        sent (never one already on its way, which may predate a write acknowledged to
        its caller), so under load each read waits for at most two round trips to NATS
        and the node sends one request per round trip, not one per read.

        Raises:
            Unavailable: the stream cannot be reached.
        """
        probe = self._next_probe
        if probe is None:
            probe = self._next_probe = _Probe()
            if not self._probing:
                self._probing = True
                assert self._nursery is not None, "run() has not started"
                self._nursery.start_soon(self._send_probes)
        await probe.done.wait()
        if probe.error is not None:
            raise Unavailable(f"the event stream is not reachable: {probe.error}")
        return probe.head

    async def _send_probes(self) -> None:
        try:
            while self._next_probe is not None:
                probe, self._next_probe = self._next_probe, None
                try:
                    probe.head = await self.thread.run(self.stream.last_seq, APPLY_DEADLINE_S)
                except LogUnavailable as exc:
                    probe.error = str(exc)
                probe.done.set()
        finally:
            self._probing = False


def by_subject(events: Sequence[Event], layout: Layout) -> list[tuple[str, list[Event]]]:
    """``events`` by the subject each is published on (interactions on their user's
    partition's, item events on the items subject), each subject's in their order."""
    grouped: dict[str, list[Event]] = {}
    for event in events:
        subject = (
            layout.user_subject(event.user)
            if type(event) is InteractionRecorded
            else layout.items_subject
        )
        grouped.setdefault(subject, []).append(event)
    return list(grouped.items())


class ClusterWrites:
    """Publishes decided events (:attr:`ActorSystem.publish`): interactions on their user's
    partition subject, item events on the items subject; answers once the stream has
    stored them (all replicas) and this node applied them."""

    def __init__(self, follower: StreamFollower, *, publish_deadline_s: float = 30.0) -> None:
        """Publishes to ``follower``'s stream, and waits for ``follower`` to apply."""
        self.follower = follower
        self.publish_deadline_s = publish_deadline_s

    async def append(self, events: Sequence[Event]) -> WriteResult:
        """Publish ``events``; what was stored, as :meth:`ActorSystem.ingest` says.

        Raises:
            Unavailable: the stream did not acknowledge them within the deadline (nothing
                may be acknowledged to the client; a retry with the same event ids is safe).
        """
        if not events:
            return WriteResult(accepted=0, duplicates=0, seq=self.follower.position)
        follower = self.follower
        grouped = by_subject(events, follower.stream.layout)
        outgoing = [(subject, encode_message(part), message_id(part)) for subject, part in grouped]
        try:
            acks = await follower.thread.run(
                follower.stream.publish, outgoing, self.publish_deadline_s
            )
        except LogUnavailable as exc:
            raise Unavailable(f"events not stored: {exc}; retrying is safe") from None
        last = max(ack.seq for ack in acks)
        await self.follower.wait_for(last)
        accepted = duplicates = 0
        for (_, part), ack in zip(grouped, acks, strict=True):
            outcome = None if ack.duplicate else self.follower.results.get(ack.seq)
            if outcome is None:  # stored before, under this message id: all known
                duplicates += len(part)
            else:
                accepted += outcome[0]
                duplicates += outcome[1]
        return WriteResult(accepted=accepted, duplicates=duplicates, seq=last)
