"""ItemActor: owns one catalogue item's state (:class:`~actors.item.ItemState`).

Accepts the item stream's committed events (upserts, removals,
interactions), ``GetState``, and the commands ``UpsertItem``, ``RemoveItem``
and ``RecordInteraction``, answered with the events ``decide`` makes of them
(an interaction event is stamped with the item's current terms). The actor
system stores those events and delivers them back once committed.

After applying committed events it updates the item's entry in the search
index and the ranker's item signals (:func:`actors.item_index.index_item`),
so an acknowledged write is already searchable and rankable.
"""

from __future__ import annotations

from functools import partial

from actors import item
from actors.behavior import EventSourcedBehavior
from actors.item import ItemState
from actors.item_index import ItemSignals, index_item
from actors.store import EventStore
from index import Index


def item_actor(
    store: EventStore, index: Index | None = None, signals: ItemSignals | None = None
) -> EventSourcedBehavior[ItemState]:
    """The item behaviour over ``store``, keeping ``index`` (and ``signals``) current if given."""
    return EventSourcedBehavior(
        kind=item.KIND,
        store=store,
        initial=item.initial,
        apply=item.apply,
        copy=item.copy,
        decide=item.decide,
        commands=item.COMMANDS,
        on_applied=None if index is None else partial(index_item, index, signals=signals),
    )
