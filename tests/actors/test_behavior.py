"""The event-sourced behaviour shared by user and item actors, without an event loop."""

from __future__ import annotations

from actors import InteractionRecorded, MemoryEventStore, StoredEvent, item, user
from actors.item_actor import item_actor
from actors.messages import ApplyEvents, GetState
from actors.user_actor import user_actor


def like(n: int, user_id: str = "u1", item_id: str = "i1") -> InteractionRecorded:
    return InteractionRecorded(
        id=f"e{n}", type="like", user=user_id, item=item_id, ts=float(n), item_terms={}
    )


def test_apply_events_applies_only_events_newer_than_the_state_and_counts_them() -> None:
    behavior = user_actor(MemoryEventStore())
    state = user.initial("u1")
    first = [StoredEvent(seq, like(seq)) for seq in (1, 2, 3)]
    state, _, applied = behavior.receive(state, ApplyEvents(first))
    assert applied == 3

    overlapping = [StoredEvent(seq, like(seq)) for seq in (2, 3, 4, 5)]
    state, reply, applied = behavior.receive(state, ApplyEvents(overlapping))

    assert reply is None
    assert applied == 2
    assert state.seq == 5
    assert state.counters == {"like": 5}


def test_get_state_answers_a_copy_that_later_events_do_not_change() -> None:
    behavior = item_actor(MemoryEventStore())
    state = item.initial("i1")
    state, _, _ = behavior.receive(state, ApplyEvents([StoredEvent(1, like(1))]))

    _, snapshot, _ = behavior.receive(state, GetState())
    state, _, _ = behavior.receive(state, ApplyEvents([StoredEvent(2, like(2))]))

    assert snapshot.counters == {"like": 1}
    assert state.counters == {"like": 2}
