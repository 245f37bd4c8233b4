"""Event store contract: a snapshot plus the tail after it recovers the state a full replay
folds, directly and through the actor behaviours; ``load_entity`` returns both."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import actors
from actors import (
    ITEM,
    USER,
    Snapshot,
    StoredEvent,
)
from actors import item as item_domain
from actors import user as user_domain
from actors.codec import decode_state, encode_state
from tests.contract.events import mixed_log, recovery_log, seqs


@pytest.mark.parametrize(
    ("kind", "entity_id", "fold", "initial"),
    [
        (ITEM, "i1", item_domain.fold, item_domain.initial),
        (USER, "u1", user_domain.fold, user_domain.initial),
    ],
)
def test_snapshot_plus_tail_equals_full_replay(
    store: actors.EventStore,
    kind: str,
    entity_id: str,
    fold: Callable[[Any, list[StoredEvent]], Any],
    initial: Callable[[str], Any],
) -> None:
    events = recovery_log()
    for start in range(0, len(events), 5):
        store.append(events[start : start + 5])
    stream = store.read_stream(kind, entity_id)
    full = fold(initial(entity_id), stream)
    assert full.seq == stream[-1].seq

    # Every cut point, including "before anything" and "after everything".
    for cut in [0, *seqs(stream)]:
        prefix = store.read_stream(kind, entity_id, until=cut)
        state = fold(initial(entity_id), prefix)
        snap = Snapshot(kind=kind, entity_id=entity_id, seq=cut, data=encode_state(state))
        store.commit([], [snap])
        loaded = store.load_snapshot(kind, entity_id)
        assert loaded is not None
        assert loaded.seq == cut
        restored = decode_state(loaded.data)
        assert restored == state

        recovered = fold(restored, store.read_stream(kind, entity_id, after=loaded.seq))

        assert recovered == full, f"cut at seq {cut}"


def test_recovering_through_the_actor_behaviours_equals_full_replay(
    store: actors.EventStore,
) -> None:
    events = recovery_log()
    store.append(events[:20])
    items = actors.item_actor.item_actor(store)
    users = actors.user_actor.user_actor(store)
    store.commit(
        [], [items.snapshot(items.recover("i1")[0]), users.snapshot(users.recover("u1")[0])]
    )
    store.append(events[20:])

    item_state, item_replayed = items.recover("i1")
    user_state, user_replayed = users.recover("u1")

    item_stream = store.read_stream(ITEM, "i1")
    user_stream = store.read_stream(USER, "u1")
    assert item_state == item_domain.fold(item_domain.initial("i1"), item_stream)
    assert user_state == user_domain.fold(user_domain.initial("u1"), user_stream)
    assert item_replayed == sum(1 for s in item_stream if s.seq > 20)
    assert user_replayed == sum(1 for s in user_stream if s.seq > 20)


def test_load_entity_without_snapshot_is_the_whole_stream(store: actors.EventStore) -> None:
    store.append(mixed_log())

    assert store.load_entity(ITEM, "i1") == (None, store.read_stream(ITEM, "i1"))
    assert store.load_entity(USER, "u2") == (None, store.read_stream(USER, "u2"))


def test_load_entity_is_the_latest_snapshot_and_the_events_after_it(
    store: actors.EventStore,
) -> None:
    store.append(mixed_log())
    snap = Snapshot(kind=ITEM, entity_id="i1", seq=6, data=b"as of 6")
    store.commit([], [snap])

    loaded, tail = store.load_entity(ITEM, "i1")

    assert loaded == snap
    assert seqs(tail) == [7, 8, 9]
    assert tail == store.read_stream(ITEM, "i1", after=6)


def test_load_entity_of_unknown_entity_is_empty(store: actors.EventStore) -> None:
    store.append(mixed_log())

    assert store.load_entity(USER, "nobody") == (None, [])


def test_load_entity_with_snapshot_at_the_head_has_no_tail(store: actors.EventStore) -> None:
    store.append(mixed_log())
    store.commit([], [Snapshot(kind=USER, entity_id="u1", seq=9, data=b"")])

    loaded, tail = store.load_entity(USER, "u1")

    assert loaded is not None
    assert loaded.seq == 9
    assert tail == []


def test_load_entity_until_stops_the_tail_there(store: actors.EventStore) -> None:
    store.append(mixed_log())
    store.commit([], [Snapshot(kind=ITEM, entity_id="i1", seq=6, data=b"as of 6")])

    _, up_to_8 = store.load_entity(ITEM, "i1", until=8)
    loaded, before_snapshot = store.load_entity(ITEM, "i1", until=4)

    assert up_to_8 == store.read_stream(ITEM, "i1", after=6, until=8)
    assert loaded is not None
    assert loaded.seq == 6  # the snapshot may cover more than `until`
    assert before_snapshot == []
