"""The actor system: the event store, its group-commit writer and the user and item actors.

Every write follows the event-sourcing loop: ask the owning actors to
``decide`` → append the resulting events durably (group commit) → the writer
dispatches them, in log order, to every actor whose stream they belong to →
the caller is answered once they are applied (read-your-writes).

Use :func:`open_actor_system`; on exit it drains queued writes, snapshots the
active actors that changed and flushes those snapshots.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any, Final, TypedDict, TypeVar

import attrs
import trio
from opentelemetry import trace

from actors.cooccurrence import CoOccurrence, load_cooccurrence, observe_events, save_cooccurrence
from actors.cooccurrence_saver import keep_snapshots
from actors.errors import ActorError, AskTimeoutError, MatchlightError
from actors.events import Event, InteractionRecorded, StoredEvent
from actors.fields import FieldAdmission
from actors.follower import DEFAULT_POLL_S, LogFollower
from actors.item import ItemState, RecordInteraction, RemoveItem, UpsertItem
from actors.item_actor import item_actor
from actors.item_index import ItemSignals, new_index, rebuild_index
from actors.messages import ApplyEvents, GetState
from actors.runtime import ActorRuntime, RuntimeConfig, RuntimeStatistics
from actors.store import EventStore, Snapshot, StoreStatistics
from actors.user import UserState
from actors.user_actor import user_actor
from actors.writer import Completion, StoreWriter, WriterStatistics
from index import Index, IndexStatistics, Query, SearchResult, Sort

log = logging.getLogger(__name__)
#: The process's OpenTelemetry tracer (a no-op until the server sets a provider).
_TRACER = trace.get_tracer("matchlight.actors")

T = TypeVar("T", ItemState, UserState)

#: How far ahead of the server's clock an event may be stamped, by default (seconds).
DEFAULT_CLOCK_SKEW_S: Final = 300.0
#: Distinct numeric fields of the catalogue, by default (see SystemConfig).
DEFAULT_MAX_NUMERIC_FIELDS: Final = 1024


@attrs.frozen(kw_only=True)
class SystemConfig:
    runtime: RuntimeConfig = attrs.field(factory=RuntimeConfig)
    #: Deadline for asking actors to decide or answer, seconds.
    ask_timeout_s: float = 10.0
    max_group_events: int = 32_768
    #: Events may be stamped at most this far ahead of the server's clock (seconds): the
    #: server refuses later ones, and the ranker's "now" never runs further ahead.
    clock_skew_s: float = DEFAULT_CLOCK_SKEW_S
    #: Distinct numeric fields the catalogue may have: item ``numbers`` and event types
    #: (each type is a counter field) together. Each costs a little memory of its own.
    max_numeric_fields: int = DEFAULT_MAX_NUMERIC_FIELDS
    #: While serving, the co-occurrence snapshot is written again every this many events
    #: (see :mod:`actors.cooccurrence_saver`), so a start after a crash replays at most
    #: about this many events of co-occurrence.
    cooccurrence_snapshot_every: int = 100_000
    #: In a node of worker processes: the writer holds new writes while the slowest reader
    #: is more than this many events behind the log (see
    #: :mod:`matchlight.server.apply_board`); 0 never holds them.
    max_apply_lag: int = 20_000
    #: Item actors also snapshot on their first event and once their state is this many log
    #: positions past their last snapshot (:attr:`RuntimeConfig.snapshot_within`): a start
    #: rebuilds the item index from the items' snapshots and the events after them, so this
    #: bounds what it replays.
    item_snapshot_within: int = 100_000


@attrs.frozen(kw_only=True)
class WriteResult:
    """What a write did: events newly stored, ids already known, and the log's ``seq`` after it."""

    accepted: int
    duplicates: int
    seq: int


@attrs.frozen(kw_only=True)
class SystemStatistics:
    store: StoreStatistics
    writer: WriterStatistics
    items: RuntimeStatistics
    users: RuntimeStatistics
    index: IndexStatistics


class ActorSystem:
    def __init__(
        self,
        store: EventStore,
        config: SystemConfig | None = None,
        *,
        index: Index | None = None,
        signals: ItemSignals | None = None,
        cooccurrence: CoOccurrence | None = None,
        save_snapshot: Callable[[Snapshot], None] | None = None,
        owns_user: Callable[[str], bool] | None = None,
    ) -> None:
        """``save_snapshot``: where the actors' snapshots go; by default into the writer's
        next commit (a reader worker, which never commits, passes them on or drops them).

        ``owns_user`` (a cluster node): whether this node serves a user now. Committed
        events then reach the user actors only of users it serves or that are active
        anyway; any other user's state stays in the log, where an activation reads it.
        Item actors, the index and the co-occurrence take in every event."""
        self._owns_user = owns_user
        self.store = store
        self.config = config or SystemConfig()
        #: Searchable items, kept current by the item actors (see actors.item_index).
        self.index = new_index() if index is None else index
        #: Per-item popularity and recency by internal id, kept like the index.
        self.signals = ItemSignals() if signals is None else signals
        #: Item-to-item co-occurrence by internal id, fed in log order as events commit.
        self.cooccurrence = CoOccurrence() if cooccurrence is None else cooccurrence
        #: The last ``seq`` the co-occurrence has seen (set by whoever rebuilt it), and
        #: dispatched to the actors.
        self.observed_seq = 0
        #: Dispatched commits some actor has not applied yet: while there are any, an
        #: entity's state may lag ``observed_seq`` (a decision records it: see
        #: :mod:`ranker.replay`).
        self.applying = 0
        self.writer = StoreWriter(store, max_group_events=self.config.max_group_events)
        self.writer.set_dispatch(self._dispatch)
        save = self.writer.save_snapshot_nowait if save_snapshot is None else save_snapshot
        #: In a reader worker: what keeps the projections following the writer's log.
        self.follower: LogFollower | None = None
        #: In a cluster node: where decided events go instead of this store's writer (the
        #: cluster's stream); it answers once they are durable there and applied here.
        self.publish: Callable[[Sequence[Event]], Awaitable[WriteResult]] | None = None
        #: In a cluster node: waits until what the cluster's stream holds now is applied.
        self.upstream_catch_up: Callable[[], Awaitable[None]] | None = None
        self.items = ActorRuntime(
            item_actor(store, self.index, self.signals),
            save_snapshot=save,
            config=attrs.evolve(
                self.config.runtime, snapshot_within=self.config.item_snapshot_within
            ),
        )
        self.users = ActorRuntime(user_actor(store), save_snapshot=save, config=self.config.runtime)
        self._fields = FieldAdmission(
            self.index.numeric_field_names, limit=self.config.max_numeric_fields
        )

    # -- writes ---------------------------------------------------------------

    async def _decide(
        self, commands: Sequence[RecordInteraction | UpsertItem | RemoveItem]
    ) -> list[Event]:
        with (
            _TRACER.start_as_current_span("actors.decide", attributes={"commands": len(commands)}),
            self._deadline("item"),
        ):
            replies = await self.items.ask_many([(c.item, c) for c in commands])
        events: list[Event] = []
        for reply in replies:
            if type(reply) is ActorError:
                raise reply
            events.extend(reply)
        return events

    async def _append(self, events: Sequence[Event]) -> WriteResult:
        if self.publish is not None:
            return await self.publish(events)
        # Waits for the group commit (fsync) and for the actors to apply and index the events.
        with _TRACER.start_as_current_span("store.commit", attributes={"events": len(events)}):
            result = await self.writer.append(events)
        return WriteResult(
            accepted=len(result.stored), duplicates=len(result.duplicates), seq=result.seq
        )

    async def ingest(self, commands: Sequence[RecordInteraction]) -> WriteResult:
        """Record interactions atomically; duplicates (by event id) are counted, not applied.

        A checkpoint. Returns once the events are durable and applied.

        Raises:
            FieldLimitError: a new event type would exceed ``max_numeric_fields``.
        """
        with self._fields.admit_events(commands):
            return await self._append(await self._decide(commands))

    async def upsert_items(self, commands: Sequence[UpsertItem]) -> WriteResult:
        """Create or change items atomically. A checkpoint.

        Raises:
            FieldLimitError: new ``numbers`` fields would exceed ``max_numeric_fields``.
        """
        with self._fields.admit_items(commands):
            return await self._append(await self._decide(commands))

    async def remove_items(self, commands: Sequence[RemoveItem]) -> WriteResult:
        """Remove items atomically; ``accepted`` counts those that existed. A checkpoint."""
        return await self._append(await self._decide(commands))

    async def _dispatch(self, stored: Sequence[StoredEvent]) -> Completion:
        """Route committed events to their actors in log order (called by the writer).

        Events are grouped per entity, so an actor applies all of a commit's
        events for it in one message while its state is hot in the CPU cache
        (a Zipf-shaped stream gives its heavy users hundreds per commit), and
        one envelope per shard carries the groups. An interaction goes to both
        its user and its item.
        """
        to_users, to_items = self._route(stored)
        self.applying += 1
        completion = Completion(remaining=len(to_users) + len(to_items), on_done=self._applied)
        await self.users.tell_shards(to_users, completion)
        await self.items.tell_shards(to_items, completion)
        return completion

    async def _apply_followed(self, stored: Sequence[StoredEvent]) -> Completion:
        """Apply a page of the followed log at once, on the follower's task (a reader worker).

        As :meth:`_dispatch` routes them, but the shards' handling runs here rather
        than after a trip through their mailboxes: a read waiting for the page
        waits for the work only, not for the shard tasks to be scheduled among
        other reads, and the page costs about a fifth less. Safe because the
        follower is the only source of events in a reader and waits for each
        page before reading the next (see :meth:`ActorRuntime.handle_now`).
        Returns a completion already done.
        """
        to_users, to_items = self._route(stored)
        self.users.handle_now(to_users)
        self.items.handle_now(to_items)
        return Completion(remaining=0)

    def _route(
        self, stored: Sequence[StoredEvent]
    ) -> tuple[dict[int, list[tuple[str, Any]]], dict[int, list[tuple[str, Any]]]]:
        """Group ``stored`` per entity and shard, feeding the index's ids and the
        co-occurrence on the way; the users' and the items' ``ApplyEvents`` by shard."""
        by_user: dict[str, list[StoredEvent]] = {}
        by_item: dict[str, list[StoredEvent]] = {}
        owns, active = self._owns_user, self.users.peek
        for entry in stored:
            event = entry.event
            if type(event) is InteractionRecorded and (
                owns is None or owns(event.user) or active(event.user) is not None
            ):
                events = by_user.get(event.user)
                if events is None:
                    by_user[event.user] = [entry]
                else:
                    events.append(entry)
            events = by_item.get(event.item)
            if events is None:
                by_item[event.item] = [entry]
            else:
                events.append(entry)
        # Internal index ids in log order of each item's first event, whatever
        # order the item shards apply in: a rebuilt index numbers them the same.
        reserve = self.index.reserve
        for item_id in by_item:
            reserve(item_id)
        if by_user or owns is not None:  # (a cluster node observes every user)
            observe_events(
                self.cooccurrence,
                self.index,
                (e.event for e in stored if type(e.event) is InteractionRecorded),
            )
        if stored:
            self.observed_seq = stored[-1].seq
        to_users = self.users.split(
            [(user_id, ApplyEvents(events)) for user_id, events in by_user.items()]
        )
        to_items = self.items.split(
            [(item_id, ApplyEvents(events)) for item_id, events in by_item.items()]
        )
        return to_users, to_items

    def _applied(self) -> None:
        self.applying -= 1

    @contextlib.contextmanager
    def _deadline(self, kind: str) -> Iterator[None]:
        """Bound an ask by ``ask_timeout_s``; a miss raises :class:`AskTimeoutError`."""
        try:
            with trio.fail_after(self.config.ask_timeout_s):
                yield
        except trio.TooSlowError:
            raise AskTimeoutError(
                f"no reply from {kind} actors within {self.config.ask_timeout_s}s"
            ) from None

    # -- reads ----------------------------------------------------------------

    async def catch_up(self) -> None:
        """In a reader worker, wait until every event stored now is applied (read-your-writes
        across processes), or in a cluster node until what the stream holds is applied;
        otherwise nothing: a single process applies before it answers."""
        if self.follower is not None:
            await self.follower.catch_up()
        if self.upstream_catch_up is not None:
            await self.upstream_catch_up()

    async def get_item(self, item_id: str) -> ItemState:
        """The item's current state (``exists`` is false for unknown or removed items)."""
        state: ItemState = await self._ask(self.items, item_id)
        return state

    async def get_user(self, user_id: str) -> UserState:
        """The user's current state (empty for a user never seen)."""
        state: UserState = await self._ask(self.users, user_id)
        return state

    async def get_user_view(self, user_id: str) -> UserState:
        """The user's state for a read that ends before the caller's next checkpoint.

        The live state of an active user, read without queueing behind writes
        in the user's mailbox (see :meth:`ActorRuntime.peek`): do not change it,
        and do not keep it across an ``await``. An inactive user is asked for
        (and activated), as :meth:`get_user` does. A checkpoint only then.
        """
        state = self.users.peek(user_id)
        if state is None:
            state = await self.get_user(user_id)
        return state

    async def get_users(self, user_ids: Sequence[str]) -> list[UserState]:
        """Several users' current states in one round trip through the user shards."""
        with self._deadline("user"):
            replies = await self.users.ask_many([(u, GetState()) for u in user_ids])
        for reply in replies:
            if isinstance(reply, ActorError):
                raise reply
        return replies

    async def _ask(self, runtime: ActorRuntime[T], entity_id: str) -> T:
        with self._deadline(runtime.kind):
            reply = await runtime.ask(entity_id, GetState())
        if isinstance(reply, ActorError):
            raise reply
        state: T = reply
        return state

    def search(self, query: Query, *, limit: int, sort: Sort | None = None) -> SearchResult:
        """Searchable items matching ``query``: the first ``limit`` and the total. Not a checkpoint.

        Raises:
            QueryError: the query or sort names a field the index does not have.
        """
        return self.index.search(query, limit=limit, sort=sort)

    def statistics(self) -> SystemStatistics:
        return SystemStatistics(
            store=self.store.statistics(),
            writer=self.writer.statistics(),
            items=self.items.statistics(),
            users=self.users.statistics(),
            index=self.index.statistics(),
        )


class _Projections(TypedDict):
    index: Index
    signals: ItemSignals
    cooccurrence: CoOccurrence


async def _rebuild(store: EventStore, cooccurrence_file: Path | None, until: int) -> _Projections:
    """The item index and signals rebuilt from ``store``, and the co-occurrence from
    ``cooccurrence_file`` (if usable) plus the log after it up to ``until`` (on threads)."""
    signals = ItemSignals()
    index = await trio.to_thread.run_sync(rebuild_index, store, signals)
    cooccurrence = await trio.to_thread.run_sync(
        partial(load_cooccurrence, store, index, cooccurrence_file, until=until)
    )
    return {"index": index, "signals": signals, "cooccurrence": cooccurrence}


@asynccontextmanager
async def open_actor_system(
    store: EventStore,
    config: SystemConfig | None = None,
    *,
    cooccurrence_file: Path | None = None,
    owns_user: Callable[[str], bool] | None = None,
) -> AsyncIterator[ActorSystem]:
    """Run an actor system over ``store`` for the duration of the block (``owns_user``:
    see :class:`ActorSystem`).

    It first rebuilds the item index from the store (snapshots plus tails), and
    the co-occurrence from ``cooccurrence_file`` (if usable) plus the log after it.

    On exit (normal or not) it stops taking writes, commits what is queued,
    passivates every active actor (snapshotting those that changed) and
    writes those snapshots, and the co-occurrence to ``cooccurrence_file``.
    The store itself stays open; its owner closes it.
    """
    start = store.last_seq()
    projections = await _rebuild(store, cooccurrence_file, start)
    system = ActorSystem(store, config, **projections, owns_user=owns_user)
    system.observed_seq = start
    ahead = system.signals.clock - time.time()
    if ahead > system.config.clock_skew_s:
        # Written before event times were checked: the ranker's clock stays at the wall clock.
        log.warning(
            "the log holds events stamped up to %.0f s ahead of this server's clock; "
            "recommendations take now as the server's clock plus %g s",
            ahead,
            system.config.clock_skew_s,
        )
    async with trio.open_nursery() as nursery:
        await nursery.start(system.items.run)
        await nursery.start(system.users.run)
        await nursery.start(system.writer.run)
        snapshotting = _start_snapshots(nursery, system, cooccurrence_file)
        try:
            yield system
        finally:
            snapshotting.cancel()
            with trio.CancelScope(shield=True):
                await system.writer.aclose()
                await system.writer.wait_stopped()
                await system.items.aclose()
                await system.users.aclose()
    snapshots = system.writer.take_snapshots()
    if snapshots:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.commit, [], snapshots)
        log.info("flushed %d snapshots on shutdown", len(snapshots))
    await _save_cooccurrence(system, cooccurrence_file)


def _start_snapshots(
    nursery: trio.Nursery, system: ActorSystem, path: Path | None
) -> trio.CancelScope:
    """Write the co-occurrence snapshot to ``path`` every so many events while serving,
    until the returned scope is cancelled (a child still writing one is then killed: a
    clean stop writes its own)."""
    scope = trio.CancelScope()

    async def run(path: Path) -> None:
        with scope:
            await keep_snapshots(
                system.cooccurrence,
                system.store,
                path,
                lambda: system.observed_seq,
                every=system.config.cooccurrence_snapshot_every,
            )

    if path is not None:
        nursery.start_soon(run, path)
    return scope


async def _save_cooccurrence(system: ActorSystem, path: Path | None) -> None:
    """Write the co-occurrence snapshot on shutdown (a failure is logged: the next start
    replays more of the log)."""
    if path is None:
        return
    with trio.CancelScope(shield=True):
        try:
            await trio.to_thread.run_sync(
                save_cooccurrence, system.cooccurrence, system.store, path, system.observed_seq
            )
        except (OSError, MatchlightError) as exc:
            log.warning("co-occurrence snapshot not written to %s: %s", path, exc)


@asynccontextmanager
async def open_follower_system(
    store: EventStore,
    config: SystemConfig | None = None,
    *,
    save_snapshot: Callable[[Snapshot], None],
    cooccurrence_file: Path | None = None,
    snapshot_cooccurrence: bool = False,
    poll_s: float = DEFAULT_POLL_S,
    freeze_applied: bool = False,
) -> AsyncIterator[ActorSystem]:
    """Run an actor system that follows a log another process writes (a reader worker).

    It rebuilds the index and co-occurrence as of the log's head now (the
    co-occurrence from ``cooccurrence_file`` if usable, plus the log after it), then a
    :class:`~actors.follower.LogFollower` applies everything after it, in
    order, as it is committed. It never writes the log: its actors' snapshots go to
    ``save_snapshot`` (to the writer, or nowhere), on exit too (every active actor
    is passivated). With ``snapshot_cooccurrence`` (one reader of a node) it writes
    the co-occurrence to ``cooccurrence_file`` on exit. Reads call
    :meth:`ActorSystem.catch_up` first. The follower looks for new events every
    ``poll_s``, and at once when ``system.follower.nudge()`` is called. With
    ``freeze_applied`` (a process of its own), what each page leaves is frozen out of
    the cyclic garbage collector (see :mod:`actors.follower`).
    """
    start = store.head()
    projections = await _rebuild(store, cooccurrence_file, start)
    system = ActorSystem(store, config, **projections, save_snapshot=save_snapshot)
    system.observed_seq = start
    follower = system.follower = LogFollower(
        store, system._apply_followed, start=start, poll_s=poll_s, freeze_applied=freeze_applied
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(system.items.run)
        await nursery.start(system.users.run)
        following = trio.CancelScope()

        async def follow() -> None:
            with following:
                await follower.run()

        nursery.start_soon(follow)
        snapshotting = _start_snapshots(
            nursery, system, cooccurrence_file if snapshot_cooccurrence else None
        )
        try:
            yield system
        finally:
            # Stop following, then passivate every actor: their snapshots go to save_snapshot.
            following.cancel()
            snapshotting.cancel()
            with trio.CancelScope(shield=True):
                await system.items.aclose()
                await system.users.aclose()
    if snapshot_cooccurrence:
        await _save_cooccurrence(system, cooccurrence_file)
