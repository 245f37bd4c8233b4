"""The item index as a projection of the log: kept current by the ItemActors, rebuilt at start.

:func:`index_item` is what an ItemActor calls after applying events: an
item that exists and is active is (re)put into the index, any other is
discarded. The actor system reserves internal ids in log order before the
actors apply a commit (:meth:`index.Index.reserve`), so ids follow the
order of each item's first event.

:func:`rebuild_index` makes the same index from the store: every item
stream in the order of its first event, each item's state from its latest
snapshot plus the events after it. Rebuilt and incrementally maintained
indexes are equal (``tests/actors/test_item_index.py`` checks it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

from actors import decay, item
from actors.behavior import decoded_snapshot
from actors.codec import decode_item_record
from actors.errors import CodecError
from actors.gc_pause import collector_paused
from actors.item import ItemState
from actors.store import EventStore, Snapshot
from actors.user import TYPE_WEIGHTS
from index import DocumentFields, Index

log = logging.getLogger(__name__)


class _Fields(NamedTuple):
    """The fields of an item snapshot a rebuild reads."""

    decayed: dict[str, float]
    landmark: float
    updated: float
    searchable: bool
    kind: str | None
    terms: Any
    numbers: Any
    counters: Any


#: The standard interaction types: their counters are numeric fields of every item (0 if none).
COUNTER_FIELDS: Final = tuple(TYPE_WEIGHTS)


#: How much one interaction of a type adds to an item's popularity (negative types add nothing).
POPULARITY_WEIGHTS: Final = {t: max(w, 0.0) for t, w in TYPE_WEIGHTS.items()}


def new_index() -> Index:
    """An empty item index with the standard counter fields."""
    return Index(counter_fields=COUNTER_FIELDS)


def popularity_mass(decayed: Mapping[str, float]) -> float:
    """An item's time-decayed popularity as a mass against its landmark (see :mod:`actors.decay`).

    Interaction types outside the standard ones count as views.
    """
    weights, other = POPULARITY_WEIGHTS, POPULARITY_WEIGHTS["view"]
    return sum(weights.get(t, other) * mass for t, mass in decayed.items())


class ItemSignals:
    """Per-item numbers the ranker reads in bulk, by the index's internal ids.

    A projection of item state kept alongside the index (by :func:`index_item`
    and :func:`rebuild_index`): every item's time-decayed popularity and the
    time of its latest interaction. ``clock`` is the latest interaction time
    seen: the ranker's "now", which follows the event stream (clients stamp
    events; a replay runs in the past).

    Popularity is kept in the log domain, against a fixed origin rather than a
    landmark shared by all items: ``level[doc] = log2(mass) + landmark / half_life``
    for an item whose own forward-decay mass is ``mass`` against its own
    ``landmark``, so its popularity at ``now`` is ``2**(level - now / half_life)``.
    Each item's entry depends on that item's events alone: no event of one item,
    however far in the future or the past it is stamped, changes another
    item's entry, and no stored value can overflow or underflow (the levels
    of today's items are a few thousand; ``-inf`` means no popularity).
    Comparing levels compares popularity at any moment. Not thread-safe:
    written by the item actors and read by the ranker on the Trio thread.
    """

    def __init__(self, half_life: float = decay.DEFAULT_HALF_LIFE_S) -> None:
        self.half_life = half_life
        self.level: npt.NDArray[np.float64] = np.full(1024, -np.inf)
        self.updated: npt.NDArray[np.float64] = np.zeros(1024)
        #: Items with any interaction (the others are cold: nobody engaged with them yet).
        self.engaged = BitMap()
        self.clock = 0.0

    def set(self, doc: int, mass: float, landmark: float, updated: float) -> None:
        """Record an item's popularity ``mass`` (against its ``landmark``) and last interaction."""
        if doc >= len(self.level):
            self._grow(doc + 1)
        # Masses are sums of non-negative weights: 0 (or an underflow) is no popularity.
        self.level[doc] = math.log2(mass) + landmark / self.half_life if mass > 0.0 else -math.inf
        self.updated[doc] = updated
        self.engaged.add(doc)
        if updated > self.clock:
            self.clock = updated

    def clear(self, doc: int, updated: float) -> None:
        """Forget an item's popularity and last interaction (it was removed at ``updated``).

        The clock still moves to ``updated``: it is the latest interaction on any item.
        """
        if doc < len(self.level):
            self.level[doc] = -math.inf
            self.updated[doc] = 0.0
        self.engaged.discard(doc)
        if updated > self.clock:
            self.clock = updated

    def _grow(self, size: int) -> None:
        size = max(size, 2 * len(self.level))
        level = np.full(size, -np.inf)
        level[: len(self.level)] = self.level
        updated = np.zeros(size)
        updated[: len(self.updated)] = self.updated
        self.level, self.updated = level, updated

    def levels(self, docs: npt.NDArray[np.uint32]) -> npt.NDArray[np.float64]:
        """Each item's popularity level (see the class docstring): ordered like popularity."""
        inside = np.minimum(docs, len(self.level) - 1)
        return np.where(docs < len(self.level), self.level[inside], -np.inf)

    def popularity(self, docs: npt.NDArray[np.uint32], now: float) -> npt.NDArray[np.float64]:
        """Each item's decayed popularity as of ``now`` (finite: capped near float's range)."""
        exponent = self.levels(docs) - now / self.half_life
        # Only an item stamped far ahead of `now` comes near the cap (2**1000 ≈ 1e301).
        return np.exp2(np.minimum(exponent, decay.MAX_EXPONENT))

    def last_interaction(self, docs: npt.NDArray[np.uint32]) -> npt.NDArray[np.float64]:
        """Each item's latest interaction time, 0 if none."""
        inside = np.minimum(docs, len(self.updated) - 1)
        return np.where(docs < len(self.updated), self.updated[inside], 0.0)


def index_item(index: Index, state: ItemState, signals: ItemSignals | None = None) -> None:
    """Bring ``index`` (and ``signals``) up to date with one item's current state."""
    if signals is not None:
        doc = index.reserve(state.id)
        if state.decayed:
            signals.set(doc, popularity_mass(state.decayed), state.landmark, state.updated)
        else:
            signals.clear(doc, state.updated)  # removed: its interactions are gone with it
    if state.exists and state.active:
        index.put(
            state.id,
            kind=state.kind,
            terms=state.terms,
            numbers=state.numbers,
            counters=state.counters,
        )
    else:
        index.discard(state.id)


def rebuild_index(store: EventStore, signals: ItemSignals | None = None) -> Index:
    """The item index of everything in ``store`` (blocking: run it on a worker thread).

    Also fills ``signals``, if given (a new :class:`ItemSignals`).

    Pauses the cyclic garbage collector while it runs (see
    :func:`~actors.gc_pause.collector_paused`); meant for startup, when nothing else is
    running.

    Raises:
        StoreError: the store cannot be read.
        CodecError: a snapshot or event cannot be decoded.
    """
    with collector_paused():
        return _rebuild(store, ItemSignals() if signals is None else signals)


def _rebuild(store: EventStore, signals: ItemSignals) -> Index:
    started = time.perf_counter()
    index = new_index()
    streams = sorted(store.iter_streams(item.KIND, snapshots=True), key=lambda s: s.first_seq)
    for info in streams:
        index.reserve(info.entity_id)
    replayed = left_out = 0
    searchable: list[DocumentFields] = []
    for entity_id, _, last_seq, snapshot in streams:
        fields = None
        if snapshot is not None and snapshot.seq >= last_seq:
            # The common case after a clean shutdown: the snapshot is the state.
            fields = _snapshot_fields(store, snapshot)
            if fields is None:  # corrupt (reported to the store): replay the whole stream
                snapshot = None
        if fields is not None:
            doc = index.doc_of(entity_id)
            assert doc is not None  # reserved above
            if fields.decayed:
                signals.set(doc, popularity_mass(fields.decayed), fields.landmark, fields.updated)
            else:
                signals.clear(doc, fields.updated)
            if fields.searchable:
                searchable.append(
                    (entity_id, fields.kind, fields.terms, fields.numbers, fields.counters)
                )
            continue
        state = item.initial(entity_id)
        if snapshot is not None:
            decoded = decoded_snapshot(store, snapshot)
            if isinstance(decoded, ItemState):
                state = decoded
        try:
            tail = store.read_stream(item.KIND, entity_id, after=state.seq)
        except CodecError as exc:  # a corrupt event (counted by the store): leave the item out
            left_out += 1
            log.error("item index: item %r left out: %s", entity_id, exc)
            continue
        for stored in tail:
            item.apply(state, stored)
        replayed += len(tail)
        doc = index.reserve(state.id)
        if state.decayed:
            signals.set(doc, popularity_mass(state.decayed), state.landmark, state.updated)
        else:
            signals.clear(doc, state.updated)
        if state.exists and state.active:
            searchable.append((state.id, state.kind, state.terms, state.numbers, state.counters))
    # The maps come from decoding or from states nothing else holds: the index may keep them.
    index.load(searchable, owned=True)
    log.log(
        logging.WARNING if left_out else logging.INFO,
        "item index rebuilt: %d searchable of %d items (%d events replayed%s) in %.2f s",
        len(index),
        len(streams),
        replayed,
        f"; {left_out} left out, their streams being corrupt" if left_out else "",
        time.perf_counter() - started,
    )
    return index


def _snapshot_fields(store: EventStore, snapshot: Snapshot) -> _Fields | None:
    """What a rebuild needs of an item snapshot (see :func:`decode_item_record`), read
    without building an :class:`ItemState`; ``None`` (reported to the store) unless it is
    this item's state at the snapshot's ``seq``."""
    try:
        r = decode_item_record(snapshot.data)
        if (r["id"], r["seq"]) != (snapshot.entity_id, snapshot.seq):
            raise CodecError(f"it holds {r['id']!r} at seq {r['seq']}")
        return _Fields(
            r["decayed"],
            r["landmark"],
            r["updated"],
            r["exists"] and r["active"],
            r["kind"],
            r["terms"],
            r["numbers"],
            r["counters"],
        )
    except (CodecError, KeyError, TypeError) as exc:
        store.report_corrupt_snapshot(snapshot, str(exc) or type(exc).__name__)
        return None
