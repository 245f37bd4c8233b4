"""Plackett-Luce slates: the exact per-slot probabilities against enumeration of every
ordering and against the sampler served with, and how a slate composes with the order."""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from index import Index
from ranker import pipeline
from ranker.pipeline import Candidates, RecommendRequest
from ranker.policy import MAX_STOCHASTIC_POOL, Diversity, Exploration, Stochastic, Surface
from ranker.stochastic import (
    LOG_WEIGHT_FLOOR,
    conditionals,
    log_weights,
    marginals,
    position_marginals,
    serve,
)
from tests.ranker.stage_inputs import build_index, docs_of


def enumerated(log_w: np.ndarray, slots: int) -> tuple[np.ndarray, dict[tuple[int, ...], float]]:
    """P(item at slot) and P(slate) by summing over every ordered choice of ``slots`` items."""
    w = np.exp(log_w)
    table = np.zeros((len(w), slots))
    slates = {}
    for slate in itertools.permutations(range(len(w)), slots):
        p, left = 1.0, float(w.sum())
        for i in slate:
            p *= w[i] / left
            left -= w[i]
        slates[slate] = p
        for j, i in enumerate(slate):
            table[i, j] += p
    return table, slates


log_ws = st.lists(st.floats(-6.0, 0.0), min_size=1, max_size=6).map(np.array)


@given(log_w=log_ws, data=st.data())
@settings(max_examples=60, deadline=None)
def test_marginals_equal_the_sum_over_every_ordering(
    log_w: np.ndarray, data: st.DataObject
) -> None:
    slots = data.draw(st.integers(1, len(log_w)))

    table, _ = enumerated(log_w, slots)

    np.testing.assert_allclose(marginals(log_w, slots), table, rtol=1e-9, atol=1e-15)


@given(
    log_w=st.lists(st.floats(-30.0, 0.0), min_size=1, max_size=MAX_STOCHASTIC_POOL).map(np.array),
    data=st.data(),
)
@settings(max_examples=40, deadline=None)
def test_each_slot_sums_to_one_and_each_item_to_its_chance_of_being_served(
    log_w: np.ndarray, data: st.DataObject
) -> None:
    slots = data.draw(st.integers(1, len(log_w)))

    table = marginals(log_w, slots)

    assert np.all(table >= 0)
    np.testing.assert_allclose(table.sum(axis=0), 1.0, rtol=1e-9)
    served = table.sum(axis=1)
    assert np.all(served <= 1 + 1e-9)
    if slots == len(log_w):  # every item is served somewhere: a doubly stochastic table
        np.testing.assert_allclose(served, 1.0, rtol=1e-9)


@given(log_w=log_ws, seed=st.integers(0, 2**32))
@settings(max_examples=40, deadline=None)
def test_the_conditionals_multiply_to_the_slate_probability(log_w: np.ndarray, seed: int) -> None:
    slots = len(log_w)
    _, slates = enumerated(log_w, slots)
    drawn = np.random.default_rng(seed).permutation(slots)

    assert math.prod(conditionals(log_w, drawn).tolist()) == pytest.approx(
        slates[tuple(drawn.tolist())], rel=1e-9
    )


def test_the_served_sampler_draws_each_slot_as_often_as_its_marginal_says() -> None:
    """Monte Carlo of :func:`serve` itself: 20,000 slates of 4 slots from a pool of 6."""
    score = np.array([2.0, 1.4, 1.0, 0.9, 0.2, -0.5, -1.0, -1.5])
    chosen = [0, 1, 2, 3, 4, 5, 6, 7]
    policy = Stochastic(temperature=0.7, pool=6)
    rng = np.random.default_rng(5)
    runs = 20_000
    counts = np.zeros((6, 4))
    for _ in range(runs):
        slate = serve(chosen, 4, score, policy, rng)
        counts[slate.positions, np.arange(4)] += 1
    exact = position_marginals(chosen, 4, score, policy).probability

    error = np.sqrt(exact * (1 - exact) / runs)
    assert np.all(np.abs(counts / runs - exact) <= 4.5 * error + 1e-12), counts / runs - exact


def test_a_served_slate_logs_each_slots_marginal_and_conditional() -> None:
    score = np.array([0.3, 2.0, 1.1, -0.4, 0.8, 1.5, 0.0])
    chosen = [1, 5, 2, 4, 0, 6, 3]
    policy = Stochastic(temperature=1.0, pool=5)

    slate = serve(chosen, 3, score, policy, np.random.default_rng(1))

    log_w = log_weights(score, chosen[:5], 1.0)
    table = marginals(log_w, 3)
    rows = [chosen.index(p) for p in slate.positions]
    assert slate.marginal == [table[r, j] for j, r in enumerate(rows)]
    assert slate.conditional == conditionals(log_w, np.array(rows)).tolist()
    assert set(slate.positions) <= set(chosen[:5])
    assert slate.served(slate.positions[0]) == pytest.approx(table[rows[0]].sum())
    assert slate.served(3) == 0.0  # outside the pool: never served


def test_the_same_seed_draws_the_same_slate() -> None:
    score = np.linspace(1.0, -1.0, 12)
    chosen = list(range(12))
    policy = Stochastic(temperature=2.0, pool=12)

    first = serve(chosen, 10, score, policy, np.random.default_rng([7, 1, 2]))
    again = serve(chosen, 10, score, policy, np.random.default_rng([7, 1, 2]))
    other = serve(chosen, 10, score, policy, np.random.default_rng([7, 1, 3]))

    assert first.positions == again.positions
    assert first.positions != other.positions


def test_the_fixed_order_puts_each_of_the_first_k_at_its_slot_for_sure() -> None:
    table = position_marginals([4, 2, 7, 1], 3, np.zeros(8), None)

    assert table.positions == (4, 2, 7)
    np.testing.assert_array_equal(table.probability, np.eye(3))
    assert table.of(7).tolist() == [0.0, 0.0, 1.0]
    assert table.of(1).tolist() == [0.0, 0.0, 0.0]


def test_slots_beyond_the_pool_take_the_next_candidates_in_order() -> None:
    score = np.array([3.0, 2.0, 1.0, 0.5, 0.0, -1.0])
    policy = Stochastic(temperature=1.0, pool=3)

    table = position_marginals([0, 1, 2, 3, 4, 5], 5, score, policy)
    slate = serve([0, 1, 2, 3, 4, 5], 5, score, policy, np.random.default_rng(0))

    assert table.probability.shape == (5, 5)
    np.testing.assert_allclose(table.probability[:3, :3].sum(axis=0), 1.0)
    np.testing.assert_array_equal(table.probability[3:, 3:], np.eye(2))
    assert slate.positions[3:] == [3, 4]
    assert slate.marginal[3:] == slate.conditional[3:] == [1.0, 1.0]


def test_fewer_candidates_than_slots_serve_them_all() -> None:
    policy = Stochastic(temperature=1.0, pool=6)

    slate = serve([2, 0, 1], 5, np.array([0.0, 1.0, 2.0]), policy, np.random.default_rng(0))

    assert sorted(slate.positions) == [0, 1, 2]
    assert slate.marginals.probability.shape == (3, 3)


def test_equal_scores_draw_uniformly_and_far_behind_ones_keep_a_floor() -> None:
    assert log_weights(np.ones(5), [0, 1, 2], 1.0).tolist() == [0.0, 0.0, 0.0]
    np.testing.assert_allclose(marginals(np.zeros(4), 4), np.full((4, 4), 0.25))

    # Scores far apart at a low temperature: weights that would underflow keep the floor,
    # and the arithmetic stays finite (a remainder of tiny weights is summed, not subtracted).
    score = np.array([100.0, 0.0, -100.0, 1.0] + [0.0] * 20)
    log_w = log_weights(score, [0, 1, 2, 3], 0.01)
    assert log_w.min() == LOG_WEIGHT_FLOOR
    table = marginals(log_w, 4)
    assert np.all(np.isfinite(table))
    np.testing.assert_allclose(table.sum(axis=0), 1.0)
    assert table[0, 0] == pytest.approx(1.0)
    assert np.all(conditionals(log_w, np.array([0, 3, 1, 2])) > 0)


def test_a_pool_larger_than_the_bound_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 14 items"):
        marginals(np.zeros(MAX_STOCHASTIC_POOL + 1), 3)


# -- in the pipeline: the probabilities a replay finds are the ones logged --------------


def world(n: int = 16) -> tuple[Index, Candidates]:
    """``n`` candidates in 4 categories, scored in descending id order with ties broken."""
    index = build_index([(f"i{d}", None, {"category": [f"c{d % 4}"]}) for d in range(n)])
    score = np.linspace(2.0, -1.0, n) + np.random.default_rng(3).normal(0.0, 0.1, n)
    return index, Candidates(docs=docs_of(*range(n)), matched=n, score=score)


def surface(**settings: Any) -> Surface:
    return Surface(name="feed", diversity=Diversity(field="category", max_per_value=2), **settings)


def test_a_replay_of_the_logged_policy_finds_the_logged_probabilities() -> None:
    index, candidates = world()
    policy = surface(stochastic=Stochastic(temperature=0.8, pool=7, seed=2))
    request = RecommendRequest(user="u1", surface="feed")

    for seq in range(20):
        served = pipeline.rerank(index, policy, request, 5, candidates, None, seq)
        replayed = pipeline.slot_marginals(index, policy, 5, candidates, None)
        assert served.slate is not None
        assert served.slate.positions == served.explored.positions
        for slot, p in enumerate(served.slate.positions):
            assert replayed.of(p)[slot] == served.slate.marginal[slot]
        categories = [f"c{p % 4}" for p in served.slate.positions]  # doc d is item i{d}
        assert max(categories.count(c) for c in categories) <= 2  # diversity's cap holds


def test_a_fixed_order_candidate_is_certain_of_its_first_k_and_an_exploring_one_refused() -> None:
    index, candidates = world()
    fixed = pipeline.slot_marginals(index, surface(), 4, candidates, None)
    served = pipeline.rerank(index, surface(), RecommendRequest(user="u"), 4, candidates, None, 0)

    assert list(fixed.positions) == served.explored.positions
    np.testing.assert_array_equal(fixed.probability, np.eye(4))
    assert served.slate is None
    with pytest.raises(ValueError, match="explores"):
        pipeline.slot_marginals(
            index, surface(exploration=Exploration(share=0.5)), 4, candidates, None
        )
