"""UserActor: owns one user's live state (:class:`~actors.user.UserState`).

Accepts the user's committed interaction events and ``GetState``. It decides
nothing: interactions are facts reported by the client, stamped with the
item's terms by the ItemActor.
"""

from __future__ import annotations

from actors import user
from actors.behavior import EventSourcedBehavior
from actors.store import EventStore
from actors.user import UserState


def _partial(state: UserState) -> bool:
    return state.partial


def user_actor(store: EventStore) -> EventSourcedBehavior[UserState]:
    # A snapshot from before seen items were unbounded may have forgotten some:
    # such a user is rebuilt from their whole stream (once: the next snapshot is whole).
    return EventSourcedBehavior(
        kind=user.KIND,
        store=store,
        initial=user.initial,
        apply=user.apply,
        copy=user.copy,
        replay_if=_partial,
    )
