"""Item domain: the state of one catalogue item, ``decide``, and ``apply``/``evolve``.

Commands: :class:`UpsertItem`, :class:`RemoveItem`, :class:`RecordInteraction`.
Events: :class:`~actors.events.ItemUpserted`, :class:`~actors.events.ItemRemoved`,
:class:`~actors.events.InteractionRecorded` (decided here because the item
contributes its current terms to the event).

The rules of how an event changes the state live in one place, :func:`apply`,
which updates a state in place: that is what the ItemActor does with the
state it alone owns, because copying every container for every event would
cap ingest throughput. :func:`evolve` and :func:`fold` are the pure forms
(they copy first) used by tests, tools and anything that shares states.

No Trio, no I/O: :mod:`actors.item_actor` moves messages and persists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from actors import decay
from actors.events import InteractionRecorded, ItemRemoved, ItemUpserted, StoredEvent

KIND: Final = "item"


@attrs.define(kw_only=True)
class ItemState:
    """One item as of the event with global sequence number ``seq``.

    ``exists`` is true between an upsert and a removal. Counters are kept for
    interactions on items the catalogue has not (yet) described.
    """

    id: str
    seq: int = 0
    exists: bool = False
    kind: str | None = None
    #: field -> its values, sorted and distinct.
    terms: dict[str, tuple[str, ...]] = attrs.field(factory=dict)
    numbers: dict[str, float] = attrs.field(factory=dict)
    active: bool = False
    #: All-time number of interactions per event type.
    counters: dict[str, int] = attrs.field(factory=dict)
    #: Time-decayed sum of interaction weights per event type, as forward-decay
    #: masses against ``landmark`` (see :mod:`actors.decay`).
    decayed: dict[str, float] = attrs.field(factory=dict)
    landmark: float = 0.0
    #: Time of the latest interaction (client clock, seconds since the epoch), 0 if none.
    #: Catalogue changes carry the server's clock and do not move it.
    updated: float = 0.0


def initial(item_id: str) -> ItemState:
    return ItemState(id=item_id)


def decayed_at(state: ItemState, ts: float) -> dict[str, float]:
    """The decayed interaction sums per event type as of ``ts``."""
    return {t: decay.value_at(m, state.landmark, ts) for t, m in state.decayed.items()}


def copy(state: ItemState) -> ItemState:
    """An independent copy (values inside the containers are immutable)."""
    return ItemState(
        id=state.id,
        seq=state.seq,
        exists=state.exists,
        kind=state.kind,
        terms=dict(state.terms),
        numbers=dict(state.numbers),
        active=state.active,
        counters=dict(state.counters),
        decayed=dict(state.decayed),
        landmark=state.landmark,
        updated=state.updated,
    )


# -- commands -----------------------------------------------------------------


@attrs.frozen(kw_only=True)
class UpsertItem:
    event_id: str
    item: str
    ts: float
    kind: str | None = None
    terms: Mapping[str, tuple[str, ...] | None] | None = None
    numbers: Mapping[str, float | None] | None = None
    active: bool | None = None


@attrs.frozen(kw_only=True)
class RemoveItem:
    event_id: str
    item: str
    ts: float


@attrs.frozen(kw_only=True)
class RecordInteraction:
    id: str
    type: str
    user: str
    item: str
    ts: float
    weight: float = 1.0
    props: Mapping[str, Any] = attrs.field(factory=dict)


ItemCommand = UpsertItem | RemoveItem | RecordInteraction
COMMANDS: Final = (UpsertItem, RemoveItem, RecordInteraction)


def decide(
    state: ItemState, command: ItemCommand
) -> tuple[ItemUpserted | ItemRemoved | InteractionRecorded, ...]:
    """The events a command produces against the item's current state. Pure."""
    if type(command) is RecordInteraction:
        return (
            InteractionRecorded(
                id=command.id,
                type=command.type,
                user=command.user,
                item=command.item,
                ts=command.ts,
                weight=command.weight,
                props=command.props,
                # The dict is replaced, never mutated, when terms change (see apply),
                # so sharing it with the event is safe.
                item_terms=state.terms if state.exists else {},
            ),
        )
    if isinstance(command, UpsertItem):
        return (
            ItemUpserted(
                id=command.event_id,
                item=command.item,
                ts=command.ts,
                kind=command.kind,
                terms=command.terms,
                numbers=command.numbers,
                active=command.active,
            ),
        )
    if isinstance(command, RemoveItem):
        if not state.exists:
            return ()
        return (ItemRemoved(id=command.event_id, item=command.item, ts=command.ts),)
    raise TypeError(f"not an item command: {type(command).__name__}")


# -- apply / evolve -----------------------------------------------------------


def apply(state: ItemState, stored: StoredEvent) -> None:
    """Change ``state`` in place by one event of this item's stream."""
    event = stored.event
    state.seq = stored.seq
    if type(event) is InteractionRecorded:
        if event.ts > state.updated:
            state.updated = event.ts
        counters = state.counters
        counters[event.type] = counters.get(event.type, 0) + 1
        decayed = state.decayed
        if not decayed:
            state.landmark = event.ts
        elif decay.needs_rescale(event.ts, state.landmark):
            decay.rescale(decayed, state.landmark, event.ts)
            state.landmark = event.ts
        mass = event.weight * decay.growth(event.ts, state.landmark)
        decayed[event.type] = decayed.get(event.type, 0.0) + mass
    elif type(event) is ItemRemoved:
        state.exists, state.kind, state.active, state.landmark = False, None, False, 0.0
        state.terms, state.numbers, state.counters, state.decayed = {}, {}, {}, {}
    elif type(event) is ItemUpserted:
        if event.terms:
            # A new dict: interaction events may share the old one (see decide).
            terms = dict(state.terms)
            for field, values in event.terms.items():
                if values:
                    terms[field] = tuple(sorted(set(values)))
                else:
                    terms.pop(field, None)
            state.terms = terms
        for field, number in (event.numbers or {}).items():
            if number is None:
                state.numbers.pop(field, None)
            else:
                state.numbers[field] = number
        if event.active is not None:
            state.active = event.active
        elif not state.exists:
            state.active = True
        if event.kind is not None:
            state.kind = event.kind
        state.exists = True
    else:
        raise TypeError(f"an item stream cannot hold {type(event).__name__}")


def evolve(state: ItemState, stored: StoredEvent) -> ItemState:
    """The state after one more event. Pure: ``state`` is not changed."""
    new = copy(state)
    apply(new, stored)
    return new


def fold(state: ItemState, events: Iterable[StoredEvent]) -> ItemState:
    """``evolve`` over several events in order. Pure."""
    new = copy(state)
    for stored in events:
        apply(new, stored)
    return new
