"""Group commit: one task owns all writes to the event store.

Callers hand a batch to :meth:`StoreWriter.append` and wait. The writer task
takes everything queued since its last commit (up to ``max_group_events``),
writes it in *one* LMDB transaction on a worker thread (one thread hop per
commit, not per event), and only then answers each caller. Concurrent
callers therefore share one fsync, which is what lets durable ingest run at
hundreds of thousands of events per second instead of a few thousand.

After a commit, and before answering, the writer hands the newly stored
events to ``dispatch`` (the actor system's router) in log order; dispatch
returns a :class:`Completion` that fires once every actor applied its share,
and callers wait for it too, so an acknowledged write is visible to reads
(read-your-writes). Because one task dispatches every commit in order, each
actor sees its events in ``seq`` order.

Snapshots ride along with the next commit (or are flushed when the writer is
idle); only the newest per entity is kept while queued.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import attrs
import trio
from opentelemetry import metrics

from actors.errors import StoreError, SystemClosedError
from actors.events import Event, StoredEvent
from actors.ratelimit import RateLimitedLog
from actors.store import AppendResult, EventStore, PreparedBatch, Snapshot, Written, to_result

log = logging.getLogger(__name__)
#: Events per group commit, the only registration of this histogram. Through the
#: process's global meter (a no-op until the application installs one), in
#: powers of two from 1 to 65,536 events: the default buckets are milliseconds.
_COMMIT_EVENTS: Final = metrics.get_meter("matchlight.actors").create_histogram(
    "matchlight.store.commit.events",
    unit="{event}",
    description="Events per group commit",
    explicit_bucket_boundaries_advisory=tuple(float(2**i) for i in range(17)),
)


@attrs.define(eq=False)
class Completion:
    """Counts down to zero as actors finish applying a commit's events."""

    remaining: int
    #: Called once, when every part is applied.
    on_done: Callable[[], None] | None = None
    _done: trio.Event = attrs.field(factory=trio.Event, init=False)

    def __attrs_post_init__(self) -> None:
        if self.remaining <= 0:
            self._finish()

    def finish_one(self) -> None:
        self.remaining -= 1
        if self.remaining <= 0:
            self._finish()

    def _finish(self) -> None:
        if not self._done.is_set():
            self._done.set()
            if self.on_done is not None:
                self.on_done()

    @property
    def done(self) -> bool:
        """Whether every part is applied."""
        return self._done.is_set()

    async def wait(self) -> None:
        """Wait until every part is applied. A checkpoint."""
        await self._done.wait()


Dispatch = Callable[[Sequence[StoredEvent]], Awaitable[Completion]]


@attrs.define(eq=False)
class _Pending:
    batch: PreparedBatch
    done: trio.Event = attrs.field(factory=trio.Event)
    result: AppendResult | BaseException | None = None
    completion: Completion | None = None


@attrs.frozen(kw_only=True)
class WriterStatistics:
    #: Commits that carried at least one batch (snapshot-only commits excluded).
    commits: int
    events: int
    batches: int
    largest_group_events: int

    @property
    def mean_group_events(self) -> float:
        return self.events / self.commits if self.commits else 0.0


class StoreWriter:
    """Serialises and groups every write to ``store``. Run it with :meth:`run` in a nursery."""

    def __init__(
        self,
        store: EventStore,
        *,
        dispatch: Dispatch | None = None,
        max_group_events: int = 32_768,
        max_queued_batches: int = 4_096,
        snapshot_flush_s: float = 0.05,
    ) -> None:
        self._store = store
        self._dispatch = dispatch
        self._max_group_events = max_group_events
        self._snapshot_flush_s = snapshot_flush_s
        self._send, self._receive = trio.open_memory_channel[_Pending](max_queued_batches)
        self._snapshots: dict[tuple[str, str], Snapshot] = {}
        #: A failing disk fails every commit: log once a minute, with a count.
        self._log_errors = RateLimitedLog(log)
        self._closed = False
        self._stopped = trio.Event()
        self._commits = 0
        self._events = 0
        self._batches = 0
        self._largest = 0

    def set_dispatch(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch

    async def append(self, batch: Sequence[Event], *, position: int | None = None) -> AppendResult:
        """Durably append one atomic batch; return once it is committed and applied.

        ``position``: where the batch stands in an upstream log, stored with it (see
        :attr:`~actors.store.PreparedBatch.position`).

        A checkpoint. Waits (backpressure) while the queue is full.

        Raises:
            StoreError: the batch could not be written; nothing of it was.
            SystemClosedError: the writer is shutting down.
        """
        if self._closed:
            raise SystemClosedError("the store writer is closed")
        # Encode here, on the event loop's thread: see PreparedBatch.
        prepared = self._store.prepare(batch)
        if position is not None:
            prepared = attrs.evolve(prepared, position=position)
        pending = _Pending(batch=prepared)
        try:
            await self._send.send(pending)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise SystemClosedError("the store writer is closed") from None
        await pending.done.wait()
        if isinstance(pending.result, BaseException):
            raise pending.result
        assert pending.result is not None
        if pending.completion is not None:
            await pending.completion.wait()
        return pending.result

    def save_snapshot_nowait(self, snapshot: Snapshot) -> None:
        """Queue a snapshot for the next commit; never blocks."""
        self._snapshots[(snapshot.kind, snapshot.entity_id)] = snapshot

    def statistics(self) -> WriterStatistics:
        return WriterStatistics(
            commits=self._commits,
            events=self._events,
            batches=self._batches,
            largest_group_events=self._largest,
        )

    async def aclose(self) -> None:
        """Stop taking batches; :meth:`run` finishes what is queued, flushes snapshots, returns."""
        self._closed = True
        await self._send.aclose()

    async def wait_stopped(self) -> None:
        """Wait until :meth:`run` has committed everything queued and returned. A checkpoint."""
        await self._stopped.wait()

    def take_snapshots(self) -> list[Snapshot]:
        """Remove and return the queued snapshots (for a final flush after :meth:`run`)."""
        snapshots = list(self._snapshots.values())
        self._snapshots.clear()
        return snapshots

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Commit groups until :meth:`aclose` and the queue is drained; then return."""
        task_status.started()
        try:
            async with self._receive:
                while True:
                    group = await self._next_group()
                    if group is None:
                        break
                    if group or self._snapshots:
                        await self._commit(group)
        finally:
            self._stopped.set()

    async def _next_group(self) -> list[_Pending] | None:
        """The batches to commit next; ``None`` once closed and drained."""
        # Wake up now and then while idle so queued snapshots get written.
        timeout = self._snapshot_flush_s
        group: list[_Pending] = []
        with trio.move_on_after(timeout):
            try:
                group.append(await self._receive.receive())
            except trio.EndOfChannel:
                return None
        size = sum(len(p.batch.events) for p in group)
        while size < self._max_group_events:
            try:
                pending = self._receive.receive_nowait()
            except trio.WouldBlock:
                break
            except trio.EndOfChannel:
                break
            group.append(pending)
            size += len(pending.batch.events)
        return group

    async def _commit(self, group: list[_Pending]) -> None:
        snapshots = self.take_snapshots()
        try:
            written: list[Written | StoreError] = await trio.to_thread.run_sync(
                self._store.write, [p.batch for p in group], snapshots
            )
        except StoreError as exc:
            self._log_errors.error("commit", "commit of %d batches failed", len(group), exc=exc)
            for snap in snapshots:  # keep them for the next commit unless superseded
                self._snapshots.setdefault((snap.kind, snap.entity_id), snap)
            for pending in group:
                pending.result = exc
                pending.done.set()
            return
        stored: list[StoredEvent] = []
        for pending, outcome in zip(group, written, strict=True):
            if isinstance(outcome, StoreError):
                pending.result = outcome
            else:
                result = pending.result = to_result(pending.batch, outcome)
                stored.extend(result.stored)
        completion = await self._dispatch(stored) if self._dispatch and stored else None
        events = len(stored)
        if group:  # snapshot-only commits are not counted: they carry no batches
            self._commits += 1
            _COMMIT_EVENTS.record(events)
        self._events += events
        self._batches += len(group)
        self._largest = max(self._largest, events)
        for pending in group:
            pending.completion = completion
            pending.done.set()
