"""Forward-decayed sums: values halve every half-life, rescaling keeps them, and the order
of contributions does not matter."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from actors import decay, item
from tests.actors.helpers import HALF_LIFE, interaction, item_after


def test_value_halves_every_half_life() -> None:
    assert decay.value_at(8.0, 100.0, 100.0) == 8.0
    assert decay.value_at(8.0, 100.0, 100.0 + HALF_LIFE) == 4.0
    assert decay.value_at(8.0, 100.0, 100.0 + 3 * HALF_LIFE) == 1.0
    assert decay.value_at(8.0, 100.0, 110.0, half_life=10.0) == 4.0


def test_growth_doubles_every_half_life_past_the_landmark() -> None:
    assert decay.growth(100.0, 100.0) == 1.0
    assert decay.growth(100.0 + HALF_LIFE, 100.0) == 2.0
    assert decay.growth(100.0 - HALF_LIFE, 100.0) == 0.5


def test_weight_turned_into_mass_is_worth_the_weight_at_its_time() -> None:
    for ts in (0.0, 12_345.0, 40 * HALF_LIFE):
        mass = 3.0 * decay.growth(ts, 0.0)
        assert decay.value_at(mass, 0.0, ts) == pytest.approx(3.0)


def test_rescale_keeps_values() -> None:
    masses = {"a": 3.0 * decay.growth(70 * HALF_LIFE, 0.0), "b": 1.0}
    before = {k: decay.value_at(m, 0.0, 80 * HALF_LIFE) for k, m in masses.items()}

    decay.rescale(masses, 0.0, 70 * HALF_LIFE)

    after = {k: decay.value_at(m, 70 * HALF_LIFE, 80 * HALF_LIFE) for k, m in masses.items()}
    assert after == pytest.approx(before, rel=1e-12)
    assert masses["a"] == pytest.approx(3.0)


def test_rescale_is_needed_only_far_past_the_landmark() -> None:
    assert not decay.needs_rescale(decay.RESCALE_AFTER * HALF_LIFE, 0.0)
    assert decay.needs_rescale(decay.RESCALE_AFTER * HALF_LIFE + 1.0, 0.0)
    assert not decay.needs_rescale(-1e12, 0.0)


contributions = st.lists(
    st.tuples(
        st.floats(min_value=-10.0, max_value=10.0),
        # Up to 200 half-lives: crosses the rescale threshold in some orders.
        st.floats(min_value=0.0, max_value=200 * HALF_LIFE),
        st.sampled_from(["like", "view"]),
    ),
    min_size=1,
    max_size=10,
)


def decayed_sums(order: list[tuple[float, float, str]], at: float) -> dict[str, float]:
    events = [
        interaction(f"e{n}", type=type_, ts=ts, weight=w) for n, (w, ts, type_) in enumerate(order)
    ]
    return item.decayed_at(item_after(*events), at)


@given(contributions, st.randoms(use_true_random=False))
def test_order_of_contributions_does_not_matter(
    items: list[tuple[float, float, str]], rng: random.Random
) -> None:
    shuffled = list(items)
    rng.shuffle(shuffled)
    at = max(ts for _, ts, _ in items)

    a, b = decayed_sums(items, at), decayed_sums(shuffled, at)

    assert a.keys() == b.keys()
    scale = sum(abs(w) for w, _, _ in items)
    for key in a:
        assert a[key] == pytest.approx(b[key], rel=1e-9, abs=1e-12 * scale)


@given(contributions)
def test_decayed_sum_matches_the_direct_formula(items: list[tuple[float, float, str]]) -> None:
    at = max(ts for _, ts, _ in items)

    got = decayed_sums(items, at)

    scale = sum(abs(w) for w, _, _ in items)
    for type_ in got:
        direct = sum(w * 2.0 ** (-(at - ts) / HALF_LIFE) for w, ts, t in items if t == type_)
        assert got[type_] == pytest.approx(direct, rel=1e-9, abs=1e-12 * scale)


def test_every_permutation_of_three_contributions_agrees() -> None:
    items = [(1.0, 0.0, "like"), (2.0, HALF_LIFE, "like"), (4.0, 3 * HALF_LIFE, "like")]
    results = {
        round(decayed_sums(list(order), 3 * HALF_LIFE)["like"], 12)
        for order in itertools.permutations(items)
    }

    assert results == {round(4.0 + 2.0 / 4 + 1.0 / 8, 12)}
