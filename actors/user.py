"""User domain: what we know about one user, and ``apply``/``evolve``.

A user's stream holds :class:`~actors.events.InteractionRecorded` events. The
state keeps counters per event type, the most recent interactions, a
time-decayed affinity per item term (``field=value``, weighted by event type)
and every item the user ever interacted with (so surfaces can avoid showing
them again, see :func:`excluded_docs`). Counters, recent interactions and
affinity are bounded; the seen items are not (a bounded list would let an
item the user rated long ago come back), so they are kept compact: an
insertion-ordered dict of interned ids, about 21-28 bytes per item in memory and
one byte more than the id in a snapshot.

As for items, :func:`apply` holds the rules and changes a state in place (the
UserActor's own copy); :func:`evolve` and :func:`fold` are the pure forms.

No Trio, no I/O: :mod:`actors.user_actor` moves messages and persists.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Final, NamedTuple

import attrs
from pyroaring import BitMap

from actors import decay
from actors.events import InteractionRecorded, StoredEvent

KIND: Final = "user"
RECENT_MAX: Final = 50
AFFINITY_MAX: Final = 256
DISMISS: Final = "dismiss"

#: How much one event of a type moves the user's affinity to the item's terms.
TYPE_WEIGHTS: Final[Mapping[str, float]] = {
    "view": 0.1,
    "click": 0.3,
    "like": 1.0,
    "save": 1.0,
    "hire": 2.0,
    "dismiss": -1.0,
    "accept": 1.0,
    "decline": -1.0,
}
OTHER_TYPE_WEIGHT: Final = 0.1


# NamedTuple for cheap construction on the ingest path (one per event).
class Recent(NamedTuple):
    item: str
    type: str
    ts: float


#: An item id -> its internal id in the item index, ``None`` if it has none (yet).
DocOf = Callable[[str], int | None]


@attrs.define(kw_only=True, eq=False)
class SeenDocs:
    """The internal index ids of a user's seen items, kept for requests (memory only).

    ``docs`` covers every seen item but those in ``pending`` (items seen since
    it was last brought up to date, or not in the index yet). Valid for the
    index whose ``doc_of`` built it; internal ids never change in an index.
    """

    doc_of: DocOf
    docs: BitMap
    pending: list[str]
    #: ``len(docs)`` when last brought up to date (``len`` of a BitMap is not free).
    size: int = 0


#: A SeenDocs with more pending items than this (and than resolved ones) is
#: dropped rather than kept growing: rebuilding it costs at most twice as much.
SEEN_DOCS_SLACK: Final = 64


@attrs.define(kw_only=True)
class UserState:
    """One user as of the event with global sequence number ``seq``."""

    id: str
    seq: int = 0
    counters: dict[str, int] = attrs.field(factory=dict)
    #: Most recent interactions, oldest first, at most ``RECENT_MAX``.
    recent: list[Recent] = attrs.field(factory=list)
    #: ``"field=value"`` -> time-decayed affinity as a forward-decay mass against
    #: ``landmark`` (see :mod:`actors.decay`); at most ``AFFINITY_MAX`` terms.
    affinity: dict[str, float] = attrs.field(factory=dict)
    landmark: float = 0.0
    #: Every item the user ever interacted with, first interaction first: an
    #: insertion-ordered set (values are ``None``) of interned ids, so users share
    #: one copy of each id string. Never bounded, never reordered.
    seen: dict[str, None] = attrs.field(factory=dict)
    #: The seen items whose latest interaction is a dismissal.
    dismissed: set[str] = attrs.field(factory=set)
    updated: float = 0.0
    #: Decoded from a snapshot that kept only the latest 1,000 seen items
    #: (codec v1): the actor replays the user's whole stream instead.
    partial: bool = False
    #: A cache for :func:`excluded_docs`, not state: never compared, copied or
    #: stored. The one field a reader of a live state (``peek``) updates.
    seen_docs: SeenDocs | None = attrs.field(default=None, eq=False, repr=False)


def initial(user_id: str) -> UserState:
    return UserState(id=user_id)


def copy(state: UserState) -> UserState:
    """An independent copy (values inside the containers are immutable)."""
    return UserState(
        id=state.id,
        seq=state.seq,
        counters=dict(state.counters),
        recent=list(state.recent),
        affinity=dict(state.affinity),
        seen=dict(state.seen),
        dismissed=set(state.dismissed),
        landmark=state.landmark,
        updated=state.updated,
        partial=state.partial,
    )


def term_key(field: str, value: str) -> str:
    return f"{field}={value}"


def apply(state: UserState, stored: StoredEvent) -> None:
    """Change ``state`` in place by one event of this user's stream."""
    event = stored.event
    if type(event) is not InteractionRecorded:
        raise TypeError(f"a user stream holds interactions only, got {type(event).__name__}")
    state.seq = stored.seq
    if event.ts > state.updated:
        state.updated = event.ts
    counters = state.counters
    counters[event.type] = counters.get(event.type, 0) + 1
    recent = state.recent
    recent.append(Recent(event.item, event.type, event.ts))
    if len(recent) > RECENT_MAX:
        del recent[0]
    seen, item_id = state.seen, event.item
    if item_id not in seen:
        item_id = sys.intern(item_id)
        seen[item_id] = None
        memo = state.seen_docs
        if memo is not None:
            memo.pending.append(item_id)
            if len(memo.pending) > SEEN_DOCS_SLACK and len(memo.pending) > memo.size:
                state.seen_docs = None
    if event.type == DISMISS:
        state.dismissed.add(sys.intern(item_id))
    elif state.dismissed:
        state.dismissed.discard(item_id)
    weight = event.weight * TYPE_WEIGHTS.get(event.type, OTHER_TYPE_WEIGHT)
    if weight and event.item_terms:
        affinity = state.affinity
        if not affinity:
            state.landmark = event.ts
        elif decay.needs_rescale(event.ts, state.landmark):
            decay.rescale(affinity, state.landmark, event.ts)
            state.landmark = event.ts
        mass = weight * decay.growth(event.ts, state.landmark)
        for field, values in event.item_terms.items():
            for value in values:
                key = f"{field}={value}"
                affinity[key] = affinity.get(key, 0.0) + mass
        if len(affinity) > AFFINITY_MAX:
            _trim_affinity(affinity)


def evolve(state: UserState, stored: StoredEvent) -> UserState:
    """The state after one more event. Pure: ``state`` is not changed."""
    new = copy(state)
    apply(new, stored)
    return new


def fold(state: UserState, events: Iterable[StoredEvent]) -> UserState:
    """``evolve`` over several events in order. Pure."""
    new = copy(state)
    for stored in events:
        apply(new, stored)
    return new


def excluded_docs(state: UserState, doc_of: DocOf, *, dismissed_only: bool = False) -> BitMap:
    """The internal index ids of the items ``state``'s user must not be shown again.

    Every item they ever interacted with; with ``dismissed_only`` (a surface
    that allows repeats) only those whose latest interaction is a dismissal.
    ``doc_of`` maps an item id to its internal id in the index the caller
    queries (``Index.doc_of``); items it does not know are left out.

    The ids of all seen items are cached in ``state`` (:attr:`UserState.seen_docs`)
    and brought up to date with the items seen since, so a request pays for
    the items new since the previous one, not for the whole history. The
    result is the caller's to change. Not a checkpoint.
    """
    if dismissed_only:
        return BitMap([d for d in map(doc_of, state.dismissed) if d is not None])
    memo = state.seen_docs
    if memo is None or memo.doc_of != doc_of:
        memo = state.seen_docs = SeenDocs(doc_of=doc_of, docs=BitMap(), pending=list(state.seen))
    pending = memo.pending
    if pending:
        docs = list(map(doc_of, pending))
        found = [d for d in docs if d is not None]
        # An item not in the index yet is retried by the next request.
        memo.pending = (
            [i for i, d in zip(pending, docs, strict=True) if d is None]
            if len(found) < len(docs)
            else []
        )
        memo.docs.update(found)
        memo.size = len(memo.docs)
    return memo.docs.copy()


def _trim_affinity(affinity: dict[str, float]) -> None:
    """Drop the weakest terms (smallest magnitude; ties by key).

    Masses share one landmark, so comparing masses compares decayed values.
    """
    ranked = sorted(affinity, key=lambda k: (abs(affinity[k]), k))
    for key in ranked[: len(affinity) - AFFINITY_MAX]:
        del affinity[key]


def affinity_at(state: UserState, ts: float) -> dict[str, float]:
    """The decayed affinity per term as of ``ts``, strongest (by magnitude) first."""
    values = {k: decay.value_at(m, state.landmark, ts) for k, m in state.affinity.items()}
    return dict(sorted(values.items(), key=lambda kv: (-abs(kv[1]), kv[0])))
