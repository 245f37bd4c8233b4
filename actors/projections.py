"""The server's projections of the log, kept by the domain functions alone (no actors).

:class:`Projections` folds events, in log order, into what a serving process
keeps: item and user states, the item index and signals, and the
co-occurrence. It applies each event as the actors and the actor system do
(:func:`actors.item.apply` and :func:`actors.item_index.index_item`,
:func:`actors.user.apply`, :func:`actors.cooccurrence.observe_events`, item ids
reserved in the order of each item's first event), so folding a log up to a
``seq`` gives the state a server had when it had applied that far. What reads
a log offline uses it: ``matchlight train`` learning the blend
(:mod:`ranker.blend_fit`) and ``matchlight explain`` rebuilding a decision
(:mod:`ranker.replay`). No Trio, no I/O.
"""

from __future__ import annotations

import attrs

from actors import item, user
from actors.cooccurrence import CoOccurrence, observe_events
from actors.events import InteractionRecorded, StoredEvent
from actors.item import ItemState
from actors.item_index import ItemSignals, index_item, new_index
from actors.user import UserState
from index import Index


@attrs.define
class Projections:
    """Item and user states, the item index and signals and the co-occurrence of a log."""

    index: Index = attrs.field(factory=new_index)
    signals: ItemSignals = attrs.field(factory=ItemSignals)
    cooccurrence: CoOccurrence = attrs.field(factory=CoOccurrence)
    items: dict[str, ItemState] = attrs.field(factory=dict)
    users: dict[str, UserState] = attrs.field(factory=dict)

    def apply(self, stored: StoredEvent) -> None:
        """Fold in the log's next event."""
        event = stored.event
        state = self.items.get(event.item)
        if state is None:
            state = self.items[event.item] = item.initial(event.item)
        item.apply(state, stored)
        index_item(self.index, state, self.signals)
        if type(event) is InteractionRecorded:
            person = self.users.get(event.user)
            if person is None:
                person = self.users[event.user] = user.initial(event.user)
            user.apply(person, stored)
            observe_events(self.cooccurrence, self.index, [event])

    def user(self, user_id: str) -> UserState:
        """A user's state (an empty one for a user never seen): do not change it."""
        return self.users.get(user_id) or user.initial(user_id)

    def item(self, item_id: str) -> ItemState:
        """An item's state (``exists`` false for one never seen): do not change it."""
        return self.items.get(item_id) or item.initial(item_id)
