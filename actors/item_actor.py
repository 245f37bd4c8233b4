"""ItemActor: owns one catalogue item's state (:class:`~actors.item.ItemState`).

Accepts the item stream's committed events (upserts, removals,
interactions), ``GetState``, and the commands ``UpsertItem``, ``RemoveItem``
and ``RecordInteraction``, answered with the events ``decide`` makes of them
(an interaction event is stamped with the item's current terms). The actor
system stores those events and delivers them back once committed.
"""

from __future__ import annotations

from actors import item
from actors.behavior import EventSourcedBehavior
from actors.item import ItemState
from actors.store import EventStore


def item_actor(store: EventStore) -> EventSourcedBehavior[ItemState]:
    return EventSourcedBehavior(
        kind=item.KIND,
        store=store,
        initial=item.initial,
        apply=item.apply,
        copy=item.copy,
        decide=item.decide,
        commands=item.COMMANDS,
    )
