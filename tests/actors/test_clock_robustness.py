"""Decayed state stays finite and local however events are stamped.

A client that sends milliseconds, or a clock that runs years ahead, must not
move any *other* item's popularity, and no timestamp may make a stored value or
a factor overflow (an ``OverflowError`` would fail every request that reads it).
"""

from __future__ import annotations

import math

import numpy as np
from hypothesis import example, given, settings
from hypothesis import strategies as st

from actors import decay, item, user
from actors.events import InteractionRecorded, StoredEvent
from actors.item_index import ItemSignals

HALF_LIFE = decay.DEFAULT_HALF_LIFE_S
NOW = 1_700_000_000.0

# From before the epoch to a millisecond timestamp of today and beyond.
wild_times = st.floats(min_value=-1e13, max_value=1e13, allow_nan=False)
weights = st.floats(min_value=0.0, max_value=1e6, allow_nan=False)
masses = st.floats(min_value=0.0, max_value=1e30, allow_nan=False)


def like(n: int, ts: float, weight: float = 1.0, item_id: str = "i") -> StoredEvent:
    return StoredEvent(
        n,
        InteractionRecorded(
            id=f"e{n}",
            type="like",
            user="u",
            item=item_id,
            ts=ts,
            weight=weight,
            item_terms={"genre": ("jazz",), "city": (f"c{n % 3}",)},
        ),
    )


@settings(max_examples=200, deadline=None)
@given(
    entries=st.lists(
        st.tuples(st.integers(0, 9), masses, wild_times, wild_times), min_size=1, max_size=30
    ),
    now=wild_times,
)
def test_an_items_popularity_depends_on_its_own_entries_only(
    entries: list[tuple[int, float, float, float]], now: float
) -> None:
    together = ItemSignals()
    alone = {doc: ItemSignals() for doc, *_ in entries}
    for doc, mass, landmark, updated in entries:
        together.set(doc, mass, landmark, updated)
        alone[doc].set(doc, mass, landmark, updated)
    docs = np.arange(10, dtype=np.uint32)
    shared = together.popularity(docs, now)
    assert np.all(np.isfinite(shared))
    for doc, signals in alone.items():
        assert shared[doc] == signals.popularity(docs[doc : doc + 1], now)[0]


def test_a_like_stamped_in_milliseconds_leaves_other_items_popularity_as_it_was() -> None:
    signals = ItemSignals()
    signals.set(0, mass=40.0, landmark=NOW - 86400, updated=NOW - 3600)
    signals.set(1, mass=10.0, landmark=NOW - 3600, updated=NOW - 60)
    docs = np.array([0, 1], dtype=np.uint32)
    before = signals.popularity(docs, NOW)

    signals.set(2, mass=1.0, landmark=NOW * 1000, updated=NOW * 1000)

    np.testing.assert_array_equal(signals.popularity(docs, NOW), before)
    assert before[0] > before[1] > 0.0
    assert np.isfinite(signals.popularity(np.array([2], dtype=np.uint32), NOW)).all()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(wild_times, weights), min_size=1, max_size=40), wild_times)
def test_item_masses_stay_finite_for_any_timestamps(
    stamps: list[tuple[float, float]], at: float
) -> None:
    state = item.initial("i")
    for n, (ts, weight) in enumerate(stamps, start=1):
        item.apply(state, like(n, ts, weight))
    assert all(math.isfinite(m) for m in state.decayed.values())
    assert all(math.isfinite(v) for v in item.decayed_at(state, at).values())
    assert all(math.isfinite(v) for v in item.decayed_at(state, state.updated).values())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(wild_times, weights), min_size=1, max_size=40), wild_times)
# A heavy like read nineteen years before it: its value once overflowed to inf.
@example(stamps=[(0.0, 1.0), (9163560.0, 990347.0)], at=-598105491.0)
def test_user_affinity_stays_finite_for_any_timestamps(
    stamps: list[tuple[float, float]], at: float
) -> None:
    state = user.initial("u")
    for n, (ts, weight) in enumerate(stamps, start=1):
        user.apply(state, like(n, ts, weight, item_id=f"i{n}"))
    assert all(math.isfinite(m) for m in state.affinity.values())
    assert all(math.isfinite(v) for v in user.affinity_at(state, at).values())


def test_a_value_read_long_before_its_landmark_does_not_overflow() -> None:
    # A state written with a millisecond stamp, read at today's time.
    assert math.isfinite(decay.value_at(1.0, NOW * 1000, NOW))
    assert decay.value_at(1.0, NOW, NOW * 1000) == 0.0  # far past: worth nothing
    assert math.isfinite(decay.growth(NOW * 1000, NOW))


def test_history_and_present_keep_their_relative_weights() -> None:
    """A far-past backfill followed by today's events: old ones decay, nothing breaks."""
    state = item.initial("i")
    item.apply(state, like(1, NOW - 20 * 365 * 86400))  # twenty years ago
    item.apply(state, like(2, NOW))
    item.apply(state, like(3, NOW - HALF_LIFE))
    assert math.isclose(item.decayed_at(state, NOW)["like"], 1.0 + 0.5, rel_tol=1e-12)
