"""The interleaving study: its known truth is right, both methods find it, interleaving needs
fewer requests, and "no difference" rarely gives a verdict."""

from __future__ import annotations

import random

import pytest

from legacy_adapter.interleaving import LEGACY, REALTIME
from matchlight.evaluation import interleaving_study as study_module
from matchlight.evaluation.interleaving_study import consumers, hire_rate, study


@pytest.mark.parametrize("scenario", ["real time knows every style", "real time is broken"])
def test_the_exact_hire_rate_is_what_simulated_users_do(scenario: str) -> None:
    people = consumers(scenario, count=300)
    rng = random.Random(3)
    for team in (REALTIME, LEGACY):
        draws = 60_000
        hires = 0
        for _ in range(draws):
            consumer = people[rng.randrange(len(people))]
            ranking = consumer.realtime if team == REALTIME else consumer.legacy
            hires += study_module.hire(ranking, consumer.attraction, rng) >= 0
        exact = hire_rate(people, team)
        standard_error = (exact * (1 - exact) / draws) ** 0.5
        assert abs(hires / draws - exact) < 4 * standard_error


def test_both_methods_find_a_known_preference_and_interleaving_needs_fewer_requests() -> None:
    found = study("real time knows every style", runs=12, budget=50_000)
    assert found.truth == REALTIME
    assert found.hire_rates[REALTIME] > found.hire_rates[LEGACY]
    for method in (found.interleaving, found.ab):
        assert (method.right, method.wrong, method.undecided) == (12, 0, 0)
    assert found.interleaving.median_requests is not None
    assert found.ab.median_requests is not None
    assert found.interleaving.median_requests * 2 < found.ab.median_requests

    worse = study("real time is broken", runs=6, budget=50_000)
    assert worse.truth == LEGACY
    assert worse.interleaving.right == worse.ab.right == 6


def test_no_difference_rarely_gives_a_verdict_however_often_one_looks() -> None:
    found = study("no difference", runs=80, budget=2_000, seed=5)
    assert found.truth is None
    assert found.hire_rates[REALTIME] == found.hire_rates[LEGACY]
    for method in (found.interleaving, found.ab):
        assert method.right == 0
        # At most 5% in expectation: 80 runs put a true 5% above 12.5% with probability < 1%.
        assert method.wrong <= 10


def test_bad_study_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown scenario"):
        consumers("real time reads minds")
    with pytest.raises(ValueError, match="at least 1"):
        study("no difference", runs=0, budget=10)
