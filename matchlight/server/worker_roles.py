"""The two kinds of worker process of ``matchlight serve --workers N`` (see :mod:`.workers`).

- **The writer** owns the event log: it listens on a unix socket of its own
  (inherited from the supervisor) and answers the write methods, validating,
  deciding and appending with group commit (:class:`~actors.write_path.WritePath`).
  It also stores the snapshots the readers send (``save_snapshots``).
- **A reader** answers every method on the public connections the supervisor
  hands it (see :mod:`.handover`). Reads come from its own projections, which
  follow the log; a read first catches up with everything committed when it
  arrived (read-your-writes across processes); it applies each commit as soon
  as the writer rings (see :mod:`.commit_bell`). Writes are forwarded to the
  writer.

Readers send their actors' snapshots to the writer, which keeps the newest of
each entity (and one that mends a damaged snapshot any reader found). Each
reader's actors see every event, so only one reader, the *keeper* (worker 1),
snapshots every ``--snapshot-every`` events; the others only when they
passivate an actor (:func:`reader_config`). The keeper also loads new
legacy-feed snapshots; the others follow the feed store's current one.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import socket
import time
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any, Final, Literal

import attrs
import trio

from actors import LmdbEventStore, Snapshot
from actors.follower import LogFollower
from actors.write_path import WritePath, open_write_path
from legacy_adapter import Router
from matchlight import __version__
from matchlight.client import AsyncClient, open_client
from matchlight.errors import BadRequest, RpcError
from matchlight.server import statistics, worker_figures
from matchlight.server.apply_board import ApplyBoard, board_path
from matchlight.server.commit_bell import FALLBACK_POLL_S, Bell, BellListener, bell_path
from matchlight.server.config import ServeConfig
from matchlight.server.engine import (
    open_engine,
    open_stores,
    rpc_server,
    serve_until_signal,
    start_feed_watch,
)
from matchlight.server.handover import HandedListener
from matchlight.server.methods import Methods
from matchlight.server.read_times import ReadTimes
from matchlight.server.rpc import Handler, RpcCounters, RpcServer
from matchlight.server.shadow_offload import ShadowOffload, run_shadows_handler
from matchlight.server.write_methods import ForwardedWrites, WriteMethods

log = logging.getLogger(__name__)

#: How often a worker checks that its supervisor is alive, seconds.
PARENT_CHECK_S: Final = 0.5
#: ``snapshot_every`` of the readers other than the keeper: they snapshot only on passivation.
NEVER: Final = 2**62
#: How often a reader sends its actors' snapshots to the writer, seconds.
SNAPSHOT_SEND_S: Final = 0.2
#: The methods that read a reader's projections (after catching up with the log).
READS: Final = ("get_item", "get_user", "search", "recommend")
#: How long a reader's ``stats`` waits for the writer's figures, seconds.
WRITER_STATS_S: Final = 1.0
#: The writer's statistics a reader's ``stats`` shows as the node's (readers do not write).
WRITER_KEYS: Final = (
    "log_seq",
    "store_map_bytes",
    "store_resizes",
    "commits",
    "events_committed",
    "batches_committed",
    "commit_events_mean",
    "commit_events_max",
    "commit_batches_mean",
    "writes_held",
    "writes_held_s",
)


@attrs.define
class _Startup:
    #: Whether this process has told the supervisor it is ready, or why it failed.
    told: bool = False


_startup = _Startup()


@attrs.frozen(kw_only=True)
class WorkerRole:
    """What the supervisor started this process as (the hidden ``--worker-spec`` of ``serve``)."""

    kind: Literal["writer", "reader"]
    #: 0 for the writer, 1… for readers; reader 1 is the keeper (it loads the legacy feed).
    id: int
    #: The writer's inherited listening socket (its unix socket).
    listen_fd: int | None = None
    #: A reader's inherited end of its hand-over channel, down which the supervisor
    #: sends it public connections.
    handover_fd: int | None = None
    #: The writer's unix socket, which readers connect to.
    writer_socket: str
    #: A pipe to the supervisor: ``ready`` is written there once serving.
    ready_fd: int
    #: How many readers the node has (a reader hands shadow work to the next one).
    readers: int = 1

    @property
    def name(self) -> str:
        return "writer" if self.kind == "writer" else f"reader-{self.id}"

    @property
    def keeper(self) -> bool:
        return self.kind == "reader" and self.id == 1

    @property
    def run_dir(self) -> Path:
        return Path(self.writer_socket).parent

    def reader_socket(self, reader: int) -> str:
        """Reader ``reader``'s own unix socket, where its siblings send it shadow work."""
        return str(self.run_dir / f"reader-{reader}.sock")

    @property
    def sibling(self) -> int | None:
        """The reader this one hands its shadow work to; ``None`` if it is the only one."""
        if self.kind != "reader" or self.readers < 2:
            return None
        return self.id % self.readers + 1

    def say_ready(self) -> None:
        """Tell the supervisor this worker serves."""
        self._say(b"ready\n")

    def say_failed(self, message: str) -> bool:
        """Tell the supervisor why this worker could not start (it reports it once for all
        workers); False if this worker had started, and should log the failure itself."""
        return self._say(b"failed " + message.replace("\n", " ").encode() + b"\n")

    def _say(self, line: bytes) -> bool:
        if _startup.told:
            return False
        _startup.told = True
        with contextlib.suppress(OSError):  # the supervisor is gone: it will not read it
            os.write(self.ready_fd, line)
        with contextlib.suppress(OSError):
            os.close(self.ready_fd)
        return True

    def listener(self) -> trio.SocketListener | HandedListener:
        """Where this worker takes its connections from."""
        if self.handover_fd is not None:
            return HandedListener(socket.socket(fileno=self.handover_fd))
        assert self.listen_fd is not None
        sock = socket.socket(fileno=self.listen_fd)
        return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


async def exit_with_parent(parent: int) -> None:
    """Exit at once (as ``kill -9`` would) when the supervisor ``parent`` is gone.

    A worker is useless without its supervisor, and a writer left behind would
    keep writing the log while a new server starts: the kernel reparents an
    orphan, so a changed parent id means the supervisor died.
    """
    while os.getppid() == parent:  # noqa: ASYNC110 (an OS fact: nothing to wait on)
        await trio.sleep(PARENT_CHECK_S)
    log.error("the supervisor (pid %d) is gone; exiting", parent)
    os._exit(1)


# -- the writer -------------------------------------------------------------------------------


class WriterMethods:
    """The writer worker's methods: the writes, ``save_snapshots``, ``health`` and ``stats``."""

    def __init__(self, path: WritePath, writes: WriteMethods, rpc: RpcCounters) -> None:
        self.path = path
        self.writes = writes
        self.rpc = rpc
        self.started = time.monotonic()

    def table(self) -> dict[str, Handler]:
        return {
            **self.writes.table(),
            "save_snapshots": self.save_snapshots,
            "health": self.health,
            "stats": self.stats,
        }

    async def save_snapshots(self, params: Any) -> dict[str, Any]:
        """Snapshots from a reader: ``snapshots``, a list of ``[kind, id, seq, data]``."""
        raw = params[0].get("snapshots") if params and isinstance(params[0], Mapping) else None
        if not isinstance(raw, list):
            raise BadRequest("snapshots: expected a list of [kind, id, seq, data]")
        snapshots = []
        for entry in raw:
            match entry:
                case [str(kind), str(entity_id), int(seq), bytes(data)] if kind in ("item", "user"):
                    snapshots.append(Snapshot(kind=kind, entity_id=entity_id, seq=seq, data=data))
                case _:
                    raise BadRequest("snapshots: expected a list of [kind, id, seq, data]")
        self.path.save_snapshots(snapshots)
        return {"saved": len(snapshots)}

    async def health(self, params: Any) -> dict[str, Any]:
        return {"status": "ok", "version": __version__, "worker": "writer"}

    async def stats(self, params: Any) -> dict[str, Any]:
        s = self.path.statistics()
        values: dict[str, object | None] = dict.fromkeys(statistics.source_names())
        values.update(
            server=statistics.ServerStatistics(
                version=__version__, uptime_s=round(time.monotonic() - self.started, 3)
            ),
            store=s.store,
            writer=s.writer,
            rpc=self.rpc.statistics(),
        )
        return {
            **statistics.flatten(values),
            "catalogue_items": s.catalogue_items,
            "writes_held": s.writes_held,
            "writes_held_s": round(s.held_s, 3),
        }


async def serve_writer(config: ServeConfig, role: WorkerRole) -> None:
    """Run the writer worker until SIGTERM."""
    listener = role.listener()
    bell = Bell([bell_path(role.run_dir, r) for r in range(1, role.readers + 1)])
    with (
        contextlib.closing(bell),
        ApplyBoard(board_path(role.run_dir), role.readers) as board,
        LmdbEventStore(config.data / "events") as store,
    ):
        async with open_write_path(
            store, config.system, on_commit=bell.ring, slowest=board.slowest
        ) as path:
            gc.freeze()
            counters = RpcCounters()
            writes = WriteMethods(
                path, clock_skew_s=config.system.clock_skew_s, telemetry=config.telemetry
            )
            methods = WriterMethods(path, writes, counters)
            rpc = RpcServer(
                methods.table(), config.limits, counters=counters, telemetry=config.telemetry
            )

            def figures() -> dict[str, Any]:
                s = path.statistics()
                return {
                    "role": "writer",
                    "requests": counters.requests,
                    "events_committed": s.writer.events,
                    "log_seq": s.store.last_seq,
                    "writes_held": s.writes_held,
                }

            async with trio.open_nursery() as background:
                background.start_soon(worker_figures.publish, role.run_dir, role.name, figures)
                await serve_until_signal(config, rpc, [listener], role.say_ready, public=False)
                background.cancel_scope.cancel()


# -- a reader -------------------------------------------------------------------------------


class SnapshotRelay:
    """A reader's actor snapshots, sent to the writer in batches (the newest per entity)."""

    def __init__(self, writer: AsyncClient) -> None:
        self._writer = writer
        self._pending: dict[tuple[str, str], Snapshot] = {}
        self.sent = 0

    def save(self, snapshot: Snapshot) -> None:
        self._pending[(snapshot.kind, snapshot.entity_id)] = snapshot

    async def run(self) -> None:
        """Send what is pending every :data:`SNAPSHOT_SEND_S`; keep it if the writer is away."""
        while True:
            await trio.sleep(SNAPSHOT_SEND_S)
            await self.flush()

    async def flush(self) -> None:
        """Send what is pending now (kept for the next try if the writer is away)."""
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        wire = [[s.kind, s.entity_id, s.seq, s.data] for s in batch.values()]
        try:
            await self._writer.call("save_snapshots", {"snapshots": wire})
        except OSError as exc:
            log.info("snapshots not sent (%s); trying again", exc)
            self._pending = {**batch, **self._pending}
            return
        self.sent += len(wire)


class ReaderMethods(Methods):
    """A reader worker's methods: writes go to the writer; ``stats`` shows the writer's
    figures for the log and commits, and says which worker answered."""

    def __init__(
        self,
        *args: Any,
        worker: str,
        forwarded: ForwardedWrites,
        run_dir: Path,
        read_times: ReadTimes,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, writes=forwarded.table(), **kwargs)
        self.worker = worker
        self.forwarded = forwarded
        self.run_dir = run_dir
        self.read_times = read_times

    def table(self) -> Mapping[str, Handler]:
        """The contract's methods; reads are marked for the follower, which lets them finish
        before it applies its next page (see :mod:`actors.follower`), and timed."""
        table = dict(super().table())
        follower = self.system.follower
        if follower is not None:
            for name in READS:
                table[name] = _marked(follower, self.read_times, name, table[name])
        return table

    async def health(self, params: Any) -> dict[str, Any]:
        return {**await super().health(params), "worker": self.worker}

    async def stats(self, params: Any) -> dict[str, Any]:
        out = await super().stats(params)
        writer: Mapping[str, Any] = {}
        with trio.move_on_after(WRITER_STATS_S), contextlib.suppress(RpcError):
            writer = await self.forwarded.call("stats")
        # While the writer restarts, the log figures are this reader's view of the log.
        out.update((key, writer[key]) for key in WRITER_KEYS if key in writer)
        out["writer_reachable"] = bool(writer)
        out["worker"] = self.worker
        follower = self.system.follower
        if follower is not None:
            out.update(("follower_" + k, v) for k, v in attrs.asdict(follower.statistics()).items())
        out.update(worker_figures.read_all(self.run_dir))
        return out


def _marked(follower: LogFollower, times: ReadTimes, method: str, handler: Handler) -> Handler:
    async def read(params: Any) -> Mapping[str, Any]:
        began = time.perf_counter()
        with follower.reading():
            answer = await handler(params)
        times.add(method, time.perf_counter() - began)
        return answer

    return read


def reader_config(config: ServeConfig, role: WorkerRole) -> ServeConfig:
    """``config`` as reader ``role`` runs it: only the keeper snapshots its actors every
    ``--snapshot-every`` events (and its items when their snapshot falls
    ``item_snapshot_within`` positions behind); the others follow the same events, so
    theirs would be the same snapshots again (encoding them was an eighth of a reader's
    actor work while following, in a py-spy profile). They still snapshot an actor they
    passivate (or stop) with events not in its stored snapshot, which also mends a damaged
    snapshot only they found."""
    if role.keeper:
        return config
    runtime = attrs.evolve(config.system.runtime, snapshot_every=NEVER)
    system = attrs.evolve(config.system, runtime=runtime, item_snapshot_within=0)
    return attrs.evolve(config, system=system)


async def serve_reader(config: ServeConfig, role: WorkerRole) -> None:
    """Run a reader worker until SIGTERM."""
    config = reader_config(config, role)
    listener = role.listener()
    with (
        open_stores(config, events_readonly=True, feed_loader=role.keeper) as stores,
        # Before the follower reads the log's head: no later commit goes unrung.
        contextlib.closing(BellListener(bell_path(role.run_dir, role.id))) as bell,
        ApplyBoard(board_path(role.run_dir), role.readers) as board,
    ):
        async with (
            open_client(unix=role.writer_socket, timeout=30.0, retries=8) as writer,
            trio.open_nursery() as background,
        ):
            relay = SnapshotRelay(writer)
            background.start_soon(relay.run)
            await start_feed_watch(config, stores, background)
            async with open_engine(
                config,
                stores,
                follow=relay.save,
                keeper=role.keeper,
                follow_poll_s=FALLBACK_POLL_S,
            ) as engine:
                gc.freeze()
                rpc = rpc_server(
                    config,
                    engine,
                    ReaderMethods,
                    worker=role.name,
                    forwarded=ForwardedWrites(writer),
                    run_dir=role.run_dir,
                    read_times=(read_times := ReadTimes()),
                )
                follower = engine.system.follower
                assert follower is not None
                follower.on_progress = partial(board.post, role.id)
                background.start_soon(bell.run, follower.nudge)

                def figures() -> dict[str, Any]:
                    following = follower.statistics()
                    return {
                        "role": "reader",
                        "requests": rpc.counters.requests,
                        "connections_open": rpc.counters.connections_open,
                        "applied_seq": following.applied_seq,
                        # Reads that waited for this reader to apply what was committed
                        # when they came, and how long in all (the bench reads them).
                        "catch_ups": following.catch_ups,
                        "catch_up_wait_s": round(following.catch_up_wait_s, 6),
                        # Each read method's answers by time (matchlight.server.read_times).
                        "read_ms_buckets": read_times.figures(),
                    }

                background.start_soon(worker_figures.publish, role.run_dir, role.name, figures)
                await _serve_siblings(config, role, engine.router, background)
                await serve_until_signal(config, rpc, [listener], role.say_ready)
            # The engine passivated every actor: the writer stores their snapshots, so the
            # next start replays less (the supervisor stops the writer after the readers).
            with trio.move_on_after(config.drain_s):
                await relay.flush()
            background.cancel_scope.cancel()


async def _serve_siblings(
    config: ServeConfig, role: WorkerRole, router: Router, nursery: trio.Nursery
) -> None:
    """Take shadow work from sibling readers on this reader's unix socket, and hand this
    reader's shadow work to its sibling (see :mod:`.shadow_offload`), in ``nursery``."""
    if role.sibling is None:
        return
    path = role.reader_socket(role.id)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # left by this reader's previous process
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(path)
    sock.listen(64)
    siblings = RpcServer({"run_shadows": run_shadows_handler(router)}, config.limits)
    await nursery.start(trio.serve_listeners, siblings.serve_stream, [trio.SocketListener(sock)])
    offload = ShadowOffload(role.reader_socket(role.sibling))
    router.offload = offload.submit
    nursery.start_soon(offload.run)
