"""The event-sourced behaviour shared by user and item actors, without an event loop."""

from __future__ import annotations

from actors import InteractionRecorded, ItemUpserted, MemoryEventStore, StoredEvent, item, user
from actors.item_actor import item_actor
from actors.item_index import new_index
from actors.messages import ApplyEvents, GetState
from actors.user_actor import user_actor
from index import parse


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


def test_activation_by_committed_events_reads_only_what_came_before_them() -> None:
    """Recovery for an ApplyEvents stops before its events; applying them completes the state."""
    store = MemoryEventStore()
    store.append([like(n) for n in range(1, 6)])  # seq 1..5 for u1
    behavior = user_actor(store)
    delivered = ApplyEvents(store.read_stream("user", "u1", after=3))  # seq 4, 5

    state, replayed = behavior.recover("u1", delivered)
    assert (state.seq, replayed) == (3, 3)

    state, _, applied = behavior.receive(state, delivered)
    assert applied == 2
    assert state == behavior.recover("u1")[0]


def test_activation_after_a_snapshot_newer_than_the_delivery_skips_covered_events() -> None:
    store = MemoryEventStore()
    store.append([like(n) for n in range(1, 6)])
    behavior = user_actor(store)
    full, _ = behavior.recover("u1")
    store.commit([], [behavior.snapshot(full)])  # covers seq 5
    late = ApplyEvents(store.read_stream("user", "u1", after=2))  # seq 3..5, delivered late

    state, replayed = behavior.recover("u1", late)
    state, _, applied = behavior.receive(state, late)

    assert replayed == 0
    assert applied == 0
    assert state == full


def test_the_item_index_hears_of_every_applied_delivery_and_of_replayed_recoveries() -> None:
    """An item actor recovered from the log (say after a supervised failure) re-indexes the item."""
    store = MemoryEventStore()
    store.append([ItemUpserted(id="up", item="i1", ts=1.0, kind="pro", active=True)])
    store.append([like(n) for n in range(2, 5)])  # seq 2..4 on item i1
    index = new_index()
    behavior = item_actor(store, index)

    state, replayed = behavior.recover("i1")

    assert replayed == 4
    assert index.search(parse({"range": ["like", 3, 3]}), limit=5).ids == ["i1"]

    behavior.receive(state, ApplyEvents([StoredEvent(5, like(5))]))
    assert index.search(parse({"range": ["like", 4, None]}), limit=5).ids == ["i1"]

    # A delivery the state already covers changes nothing and tells the index nothing.
    index.discard("i1")
    behavior.receive(state, ApplyEvents([StoredEvent(5, like(5))]))
    assert "i1" not in index
