"""The write path of a node run as worker processes: decide, then append with group commit.

In a single-process node the actor system decides and applies every write
itself (:mod:`actors.system`). With ``matchlight serve --workers N`` one
process owns the log and does only what a write needs before it is durable:

- **decide**: an interaction is stamped with its item's current terms, and a
  removal of an item that does not exist produces no event. That takes the
  catalogue's terms and existence, nothing else, so :class:`Catalogue` keeps
  just that (items' counters, users and the index live in the reader workers);
- hold the write's new numeric fields within the limit (:mod:`actors.fields`);
- append through the group-commit :class:`~actors.writer.StoreWriter`, and
  answer once the events are durable.

Reader workers follow the log (:mod:`actors.follower`) and send the writer
the snapshots their actors make (:meth:`WritePath.save_snapshots`), which it
stores with its next commit: one process writes the log.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from typing import Final

import attrs
import trio
from opentelemetry import trace

from actors import item
from actors.behavior import decoded_snapshot
from actors.errors import CodecError, CorruptRecordError
from actors.events import Event, InteractionRecorded, StoredEvent
from actors.fields import FieldAdmission
from actors.gc_pause import collector_paused
from actors.item import ItemState, RecordInteraction, RemoveItem, UpsertItem
from actors.item_index import COUNTER_FIELDS
from actors.store import EventStore, Snapshot, StoreStatistics
from actors.system import SystemConfig, WriteResult
from actors.writer import Completion, StoreWriter, WriterStatistics

log = logging.getLogger(__name__)
_TRACER = trace.get_tracer("matchlight.actors")

#: The state ``decide`` sees for an item the catalogue does not have.
_ABSENT: Final = item.initial("")
#: The standard event types: counter fields of every index from the start.
_STANDARD: Final = frozenset(COUNTER_FIELDS)
#: How often a held write looks again whether the readers have caught up, seconds.
HOLD_POLL_S: Final = 0.002


@attrs.frozen(kw_only=True)
class WritePathStatistics:
    store: StoreStatistics
    writer: WriterStatistics
    #: Items in the catalogue (those that exist).
    catalogue_items: int
    #: Writes held because a reader was more than ``max_apply_lag`` events behind, and the
    #: seconds they waited in all.
    writes_held: int
    held_s: float


class Catalogue:
    """Each item's terms and whether it exists (what ``decide`` needs), and the numeric
    fields in use, counted as the readers' indexes count them: a field is in use while a
    searchable (existing, active) item has it among its ``numbers`` or its counters."""

    def __init__(self) -> None:
        self.items: dict[str, ItemState] = {}
        #: Per item, the event types other than the standard ones it has counters of.
        self.types: dict[str, set[str]] = {}
        #: The numeric fields in use: the standard counters always, and every field some
        #: searchable item has (see ``_uses``). What the field limit counts.
        self.fields: set[str] = set(COUNTER_FIELDS)
        #: How many searchable items have each field other than the standard counters.
        self._uses: Counter[str] = Counter()
        #: Items whose stream holds a corrupt event, and why: writes to them fail, as their
        #: item actor fails in a single process (``matchlight verify`` tells more).
        self.broken: dict[str, str] = {}

    def decide(self, command: RecordInteraction | UpsertItem | RemoveItem) -> tuple[Event, ...]:
        """The events ``command`` makes (see :func:`actors.item.decide`).

        Raises:
            CorruptRecordError: the item's stream could not be read at start.
        """
        reason = self.broken.get(command.item)
        if reason is not None:
            raise CorruptRecordError(f"item {command.item!r} failed: {reason}")
        return item.decide(self.items.get(command.item, _ABSENT), command)

    def apply(self, stored: Iterable[StoredEvent]) -> None:
        """Take committed events into account, in log order."""
        for entry in stored:
            event = entry.event
            if type(event) is InteractionRecorded:
                # The standard types are always fields; a new one counts once per item.
                if event.type not in _STANDARD and event.type not in self.types.get(event.item, ()):
                    before = self._fields_of(event.item)
                    self.types.setdefault(event.item, set()).add(event.type)
                    self._count(before, self._fields_of(event.item))
            else:
                before = self._fields_of(event.item)
                self.take(entry)
                self._count(before, self._fields_of(event.item))

    def take(self, entry: StoredEvent) -> None:
        """Apply one item event (not an interaction) to its item, fields not counted."""
        event = entry.event
        if type(event) is InteractionRecorded:
            if event.type not in _STANDARD:
                self.types.setdefault(event.item, set()).add(event.type)
            return
        state = self.items.get(event.item)
        if state is None:
            state = item.initial(event.item)
        item.apply(state, entry)
        if state.exists:
            self.items[event.item] = state
        else:  # removed: its counters are gone with it
            self.items.pop(event.item, None)
            self.types.pop(event.item, None)

    def count_all(self) -> None:
        """Count every item's fields afresh (after loading)."""
        self._uses.clear()
        for item_id in self.items:
            self._uses.update(self._fields_of(item_id))
        self.fields = set(COUNTER_FIELDS) | self._uses.keys()

    def _fields_of(self, item_id: str) -> set[str]:
        """The fields ``item_id`` brings to the index (none unless it is searchable)."""
        state = self.items.get(item_id)
        if state is None or not (state.exists and state.active):
            return set()
        return {*state.numbers, *self.types.get(item_id, ())}

    def _count(self, before: set[str], after: set[str]) -> None:
        for name in after - before:
            self._uses[name] += 1
            self.fields.add(name)
        for name in before - after:
            self._uses[name] -= 1
            if self._uses[name] <= 0:
                del self._uses[name]
                if name not in _STANDARD:
                    self.fields.discard(name)


def load_catalogue(store: EventStore) -> Catalogue:
    """The catalogue of everything in ``store``: each item's snapshot and the item events
    after it (blocking: run it on a worker thread). Pauses the cyclic garbage collector
    meanwhile (:func:`~actors.gc_pause.collector_paused`): for startup.

    Raises:
        StoreError: the store cannot be read.
    """
    with collector_paused():
        return _load_catalogue(store)


def _load_catalogue(store: EventStore) -> Catalogue:
    started = time.perf_counter()
    catalogue = Catalogue()
    for entity_id, _, last_seq, snapshot in store.iter_streams(item.KIND, snapshots=True):
        state = None if snapshot is None else decoded_snapshot(store, snapshot)
        after = 0
        if type(state) is ItemState:
            types = {name for name in state.counters if name not in _STANDARD}
            if types:
                catalogue.types[entity_id] = types
            # Only what decide reads: the counters and decayed masses stay with the readers.
            state.counters, state.decayed = {}, {}
            if state.exists:
                catalogue.items[entity_id] = state
            after = state.seq
        if last_seq > after:
            try:
                tail = store.read_stream(item.KIND, entity_id, after)
            except CodecError as exc:  # a corrupt event (counted by the store)
                catalogue.broken[entity_id] = str(exc)
                log.error("catalogue: item %r left out: %s", entity_id, exc)
                continue
            for entry in tail:
                catalogue.take(entry)
    catalogue.count_all()
    log.info(
        "catalogue loaded: %d items, %d numeric fields in %.2f s",
        len(catalogue.items),
        len(catalogue.fields),
        time.perf_counter() - started,
    )
    return catalogue


class WritePath:
    """Decides and appends writes; answers once they are durable (not applied: readers
    apply them and catch up before they read)."""

    def __init__(
        self,
        store: EventStore,
        catalogue: Catalogue,
        config: SystemConfig | None = None,
        *,
        on_commit: Callable[[], None] | None = None,
        slowest: Callable[[], int | None] | None = None,
    ) -> None:
        """``on_commit`` is called after each commit that stored events, before they are
        acknowledged (the writer worker rings its readers). ``slowest`` says how far the
        slowest reader has applied the log (``None``: no reader is following now); while it
        is more than ``config.max_apply_lag`` events behind, new writes wait."""
        self.store = store
        self._on_commit = on_commit
        self._slowest = slowest
        self._held = 0
        self._held_s = 0.0
        self.config = config or SystemConfig()
        self.catalogue = catalogue
        self.writer = StoreWriter(store, max_group_events=self.config.max_group_events)
        self.writer.set_dispatch(self._dispatch)
        self._fields = FieldAdmission(
            lambda: self.catalogue.fields, limit=self.config.max_numeric_fields
        )

    async def ingest(self, commands: Sequence[RecordInteraction]) -> WriteResult:
        """Record interactions atomically; duplicates (by event id) are counted, not stored.

        Raises:
            FieldLimitError: a new event type would exceed ``max_numeric_fields``.
        """
        with self._fields.admit_events(commands):
            return await self._append(commands)

    async def upsert_items(self, commands: Sequence[UpsertItem]) -> WriteResult:
        """Create or change items atomically.

        Raises:
            FieldLimitError: new ``numbers`` fields would exceed ``max_numeric_fields``.
        """
        with self._fields.admit_items(commands):
            return await self._append(commands)

    async def remove_items(self, commands: Sequence[RemoveItem]) -> WriteResult:
        """Remove items atomically; ``accepted`` counts those that existed."""
        return await self._append(commands)

    async def _append(
        self, commands: Sequence[RecordInteraction | UpsertItem | RemoveItem]
    ) -> WriteResult:
        await self._wait_for_readers()
        decide = self.catalogue.decide
        with _TRACER.start_as_current_span("actors.decide", attributes={"commands": len(commands)}):
            events = [event for command in commands for event in decide(command)]
        with _TRACER.start_as_current_span("store.commit", attributes={"events": len(events)}):
            result = await self.writer.append(events)
        return WriteResult(
            accepted=len(result.stored), duplicates=len(result.duplicates), seq=result.seq
        )

    async def _wait_for_readers(self) -> None:
        """Wait while the slowest reader is more than ``max_apply_lag`` events behind the
        log (before deciding: the catalogue may change meanwhile). A checkpoint only if it
        waits."""
        limit = self.config.max_apply_lag
        if self._slowest is None or limit <= 0:
            return
        started = None
        while True:
            slowest = self._slowest()
            if slowest is None or self.store.last_seq() - slowest <= limit:
                break
            if started is None:
                started = time.perf_counter()
                self._held += 1
            await trio.sleep(HOLD_POLL_S)
        if started is not None:
            self._held_s += time.perf_counter() - started

    async def _dispatch(self, stored: Sequence[StoredEvent]) -> Completion:
        self.catalogue.apply(stored)
        if self._on_commit is not None:
            self._on_commit()
        return Completion(remaining=0)

    def save_snapshots(self, snapshots: Iterable[Snapshot]) -> None:
        """Store the readers' snapshots with the next commit (a newer one of an entity wins)."""
        for snapshot in snapshots:
            self.writer.save_snapshot_nowait(snapshot)

    def statistics(self) -> WritePathStatistics:
        return WritePathStatistics(
            store=self.store.statistics(),
            writer=self.writer.statistics(),
            catalogue_items=len(self.catalogue.items),
            writes_held=self._held,
            held_s=self._held_s,
        )


@asynccontextmanager
async def open_write_path(
    store: EventStore,
    config: SystemConfig | None = None,
    *,
    on_commit: Callable[[], None] | None = None,
    slowest: Callable[[], int | None] | None = None,
) -> AsyncIterator[WritePath]:
    """Run the write path over ``store`` for the block; on exit commit what is queued
    (snapshots included). The store stays open. ``on_commit`` and ``slowest``: see
    :class:`WritePath`."""
    catalogue = await trio.to_thread.run_sync(load_catalogue, store)
    path = WritePath(store, catalogue, config, on_commit=on_commit, slowest=slowest)
    async with trio.open_nursery() as nursery:
        await nursery.start(path.writer.run)
        try:
            yield path
        finally:
            with trio.CancelScope(shield=True):
                await path.writer.aclose()
                await path.writer.wait_stopped()
    snapshots = path.writer.take_snapshots()
    if snapshots:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(store.commit, [], snapshots)
