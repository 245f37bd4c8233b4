"""Replay equals the fold of ``evolve``, before and after a restart, with or without snapshots.

For any generated log (interactions, partial upserts, removals; out-of-order
times; resent ids) written to a real LMDB store in random batches: folding
``evolve`` one stored event at a time over an entity's stream equals ``fold``
over the stream at once, and equals what the actor recovers after the store is
closed and reopened, whether or not snapshots were saved at random points.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import attrs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    ITEM,
    USER,
    Event,
    InteractionRecorded,
    ItemRemoved,
    ItemUpserted,
    LmdbEventStore,
    StoredEvent,
    item,
    streams_of,
    user,
)
from actors.item_actor import item_actor
from actors.messages import ApplyEvents
from actors.user_actor import user_actor

TYPES = ["view", "click", "like", "save", "hire", "dismiss", "accept", "decline", "custom"]
USERS = [f"u{n}" for n in range(4)]
ITEMS = [f"i{n}" for n in range(4)]
FIELDS = ["city", "skills", "level"]
VALUES = ["a", "b", "c", "d"]
NUMBERS = ["price", "rate"]

# A year of seconds around a fixed epoch, in any order.
times = st.floats(min_value=1.6e9, max_value=1.6e9 + 365 * 24 * 3600.0)
weights = st.floats(min_value=-5.0, max_value=5.0) | st.just(1.0)
term_values = st.lists(st.sampled_from(VALUES), max_size=3).map(tuple)
item_terms = st.dictionaries(st.sampled_from(FIELDS), term_values.filter(bool), max_size=3)


@st.composite
def interaction(draw: st.DrawFn) -> InteractionRecorded:
    return InteractionRecorded(
        id="",
        type=draw(st.sampled_from(TYPES)),
        user=draw(st.sampled_from(USERS)),
        item=draw(st.sampled_from(ITEMS)),
        ts=draw(times),
        weight=draw(weights),
        item_terms=draw(item_terms),
    )


@st.composite
def upsert(draw: st.DrawFn) -> ItemUpserted:
    return ItemUpserted(
        id="",
        item=draw(st.sampled_from(ITEMS)),
        ts=draw(times),
        kind=draw(st.none() | st.sampled_from(["pro", "job"])),
        terms=draw(
            st.none()
            | st.dictionaries(st.sampled_from(FIELDS), st.none() | term_values, max_size=3)
        ),
        numbers=draw(
            st.none()
            | st.dictionaries(
                st.sampled_from(NUMBERS),
                st.none() | st.floats(min_value=-1e6, max_value=1e6),
                max_size=2,
            )
        ),
        active=draw(st.none() | st.booleans()),
    )


@st.composite
def removal(draw: st.DrawFn) -> ItemRemoved:
    return ItemRemoved(id="", item=draw(st.sampled_from(ITEMS)), ts=draw(times))


@st.composite
def event_log(draw: st.DrawFn) -> list[Event]:
    """Events with ids e0, e1, …; some resend an earlier id (a client retry)."""
    kinds = st.one_of(interaction(), interaction(), upsert(), removal())
    raw = draw(st.lists(kinds, min_size=1, max_size=40))
    out: list[Event] = []
    for n, event in enumerate(raw):
        if out and draw(st.integers(0, 9)) == 0:
            # A retry of an earlier event, possibly with a different payload: ignored.
            retried = out[draw(st.integers(0, len(out) - 1))]
            out.append(attrs.evolve(retried, ts=draw(times)))
        out.append(attrs.evolve(event, id=f"e{n}"))
    return out


@st.composite
def batches(draw: st.DrawFn, events: list[Event]) -> list[list[Event]]:
    out: list[list[Event]] = []
    start = 0
    while start < len(events):
        size = draw(st.integers(1, 8))
        out.append(events[start : start + size])
        start += size
    return out


def evolve_all(initial: Any, evolve: Any, stream: list[StoredEvent]) -> Any:
    state = initial
    for stored in stream:
        state = evolve(state, stored)
    return state


def entities(events: list[Event]) -> set[tuple[str, str]]:
    return {key for event in events for key in streams_of(event)}


DOMAINS: dict[str, tuple[Any, Any, Any, Any]] = {
    ITEM: (item.initial, item.evolve, item.fold, item_actor),
    USER: (user.initial, user.evolve, user.fold, user_actor),
}


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(data=st.data(), log=event_log())
def test_replay_equals_fold_of_evolve_before_and_after_restart(
    data: st.DataObject, log: list[Event]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "db"
        store = LmdbEventStore(path, map_size=1 << 20)
        try:
            for batch in data.draw(batches(log), label="batches"):
                store.append(batch)

            # The log holds each id once, first occurrence wins, seqs 1..n.
            first: dict[str, Event] = {}
            for event in log:
                first.setdefault(event.id, event)
            stored_log = store.read_all(limit=len(log) + 1)
            assert [s.event for s in stored_log] == list(first.values())
            assert [s.seq for s in stored_log] == list(range(1, len(first) + 1))

            expected: dict[tuple[str, str], Any] = {}
            for kind, entity_id in sorted(entities(log)):
                initial, evolve, fold, _ = DOMAINS[kind]
                stream = store.read_stream(kind, entity_id)
                assert stream == [s for s in stored_log if (kind, entity_id) in streams_of(s.event)]
                one_by_one = evolve_all(initial(entity_id), evolve, stream)
                assert one_by_one == fold(initial(entity_id), stream)
                assert one_by_one.seq == stream[-1].seq
                expected[kind, entity_id] = one_by_one

            # Snapshots at random points of random entities' streams, some stale.
            snapshot_plan = data.draw(
                st.lists(
                    st.tuples(st.sampled_from(sorted(expected)), st.integers(0, 40)), max_size=6
                ),
                label="snapshots",
            )
            for (kind, entity_id), cut in snapshot_plan:
                initial, _, fold, behavior_of = DOMAINS[kind]
                stream = store.read_stream(kind, entity_id)
                state = fold(initial(entity_id), stream[: cut % (len(stream) + 1)])
                store.commit([], [behavior_of(store).snapshot(state)])
        finally:
            store.close()

        reopened = LmdbEventStore(path, map_size=1 << 20)
        try:
            assert reopened.last_seq() == len(first)
            for (kind, entity_id), state in expected.items():
                behavior = DOMAINS[kind][3](reopened)
                recovered, replayed = behavior.recover(entity_id)
                assert recovered == state, (kind, entity_id)
                if kind == USER:
                    # Eviction order of the bounded maps must survive too.
                    assert list(recovered.seen.items()) == list(state.seen.items())
                snapshot, tail = reopened.load_entity(kind, entity_id)
                after = snapshot.seq if snapshot else 0
                assert tail == reopened.read_stream(kind, entity_id, after=after)
                assert replayed == len(tail)
                # Redelivering the stream to the recovered actor changes nothing.
                for stored in reopened.read_stream(kind, entity_id):
                    recovered, _, applied = behavior.receive(recovered, ApplyEvents([stored]))
                    assert applied == 0
                stream = reopened.read_stream(kind, entity_id)
                recovered, _, applied = behavior.receive(recovered, ApplyEvents(stream))
                assert applied == 0
                assert recovered == state
            # An entity with no events recovers to its initial state.
            assert item_actor(reopened).recover("never") == (item.initial("never"), 0)
            assert user_actor(reopened).recover("never") == (user.initial("never"), 0)
        finally:
            reopened.close()


@st.composite
def heavy_user_log(draw: st.DrawFn) -> list[Event]:
    """Enough interactions of one user to hit the recent, seen and affinity bounds."""
    count = draw(st.integers(user.RECENT_MAX, 3 * user.RECENT_MAX))
    return [
        InteractionRecorded(
            id=f"h{n}",
            type=draw(st.sampled_from(TYPES)),
            user="heavy",
            item=f"i{draw(st.integers(0, 60))}",
            ts=draw(times),
            weight=draw(weights),
            item_terms={
                "tag": tuple(
                    f"t{draw(st.integers(0, 400))}" for _ in range(draw(st.integers(1, 4)))
                )
            },
        )
        for n in range(count)
    ]


@settings(max_examples=10, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data(), log=heavy_user_log())
def test_bounded_user_state_recovers_from_any_snapshot_point(
    data: st.DataObject, log: list[Event]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "db"
        store = LmdbEventStore(path, map_size=1 << 20)
        try:
            for batch in data.draw(batches(log), label="batches"):
                store.append(batch)
            stream = store.read_stream(USER, "heavy")
            expected = evolve_all(user.initial("heavy"), user.evolve, stream)
            assert len(expected.recent) == user.RECENT_MAX
            cut = data.draw(st.integers(0, len(stream)), label="cut")
            state = user.fold(user.initial("heavy"), stream[:cut])
            store.commit([], [user_actor(store).snapshot(state)])
        finally:
            store.close()

        reopened = LmdbEventStore(path, map_size=1 << 20)
        try:
            recovered, replayed = user_actor(reopened).recover("heavy")
        finally:
            reopened.close()

    assert recovered == expected
    assert replayed == len(stream) - cut
    assert list(recovered.seen.items()) == list(expected.seen.items())
    assert recovered.recent == expected.recent
