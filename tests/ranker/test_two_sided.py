"""Two-sided matching as pure functions: willingness, interest, a job's fit, job-led retrieval."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import pytest
from pyroaring import BitMap

from index import Index, Term
from ranker import stages, two_sided
from ranker.policy import Reciprocal
from tests.ranker.stage_inputs import build_index, docs_of

# -- willingness, interest, harmonic mean ------------------------------------------------

JOB = ["city=austin", "category=plumbing"]


def logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_a_supplier_without_history_gets_the_prior() -> None:
    out = two_sided.willingness([{}, {"colour=red": 5.0}], JOB, Reciprocal(prior=0.3))

    np.testing.assert_allclose(out, [0.3, 0.3])


def test_willingness_is_the_logistic_of_prior_log_odds_plus_mean_evidence() -> None:
    policy = Reciprocal(prior=0.3, strength=2.0)

    out = two_sided.willingness([{"city=austin": 1.0}], JOB, policy)

    expected = logistic(math.log(0.3 / 0.7) + 2.0 * (1.0 + 0.0) / 2)
    assert out[0] == pytest.approx(expected)


def test_accepting_raises_willingness_and_declining_lowers_it() -> None:
    accepted, none, declined = two_sided.willingness(
        [{"city=austin": 1.0, "category=plumbing": 0.5}, {}, {"category=plumbing": -1.0}],
        JOB,
        Reciprocal(prior=0.5),
    )

    assert none == pytest.approx(0.5)
    assert accepted > none > declined


def test_willingness_moves_further_from_the_prior_as_strength_grows() -> None:
    history = [{"city=austin": 1.0}, {"city=austin": -1.0}]
    by_strength = [
        two_sided.willingness(history, JOB, Reciprocal(prior=0.4, strength=s)) for s in (0.0, 1, 3)
    ]

    keen = [w[0] for w in by_strength]
    reluctant = [w[1] for w in by_strength]
    assert keen[0] == pytest.approx(0.4)
    assert keen[0] < keen[1] < keen[2] < 1.0
    assert reluctant[0] == pytest.approx(0.4)
    assert reluctant[0] > reluctant[1] > reluctant[2] > 0.0


def test_interest_is_the_score_percentile_among_candidates() -> None:
    out = two_sided.interest(np.array([0.2, 0.9, 0.5, -3.0]))

    np.testing.assert_allclose(out, [0.5, 1.0, 0.75, 0.25])
    assert len(two_sided.interest(np.empty(0))) == 0


def test_harmonic_mean_of_hand_computed_pairs() -> None:
    a = np.array([1.0, 0.5, 0.0, 0.2, 0.0, 0.6])
    b = np.array([1.0, 0.5, 0.7, 0.8, 0.0, 0.3])

    out = two_sided.harmonic_mean(a, b)

    np.testing.assert_allclose(out, [1.0, 0.5, 0.0, 0.32, 0.0, 0.4])


# -- the job's own terms: fit, interest led by it, job-led retrieval ----------------------

PAINTING_JOB = {"category": ("painting",), "city": ("austin",)}


def pros(*described: tuple[str, str]) -> Index:
    """A painting job in Austin (internal id 0), then ``pro-N`` (id N + 1) per (category, city)."""
    items: list[tuple[str, str | None, Mapping[str, Sequence[str]]]] = [
        ("job", "job", PAINTING_JOB)
    ]
    for n, (category, city) in enumerate(described):
        items.append((f"pro-{n}", "pro", {"category": (category,), "city": (city,)}))
    return build_index(items)


def test_job_fit_weighs_each_field_by_how_rare_a_match_is_among_the_candidates() -> None:
    index = pros(
        ("painting", "austin"),
        ("plumbing", "austin"),
        ("plumbing", "denver"),
        ("gardening", "miami"),
    )

    fit = two_sided.job_fit(index, docs_of(1, 2, 3, 4), PAINTING_JOB)

    # category matched by 1 of 4 weighs log 4, city by 2 of 4 weighs log 2.
    np.testing.assert_allclose(fit, [1.0, 1.0 / 3.0, 0.0, 0.0])


def test_job_fit_ignores_fields_every_candidate_or_none_matches() -> None:
    index = pros(("painting", "austin"), ("plumbing", "austin"), ("roofing", "austin"))
    job = {**PAINTING_JOB, "urgency": ("high",)}  # no pro carries an urgency

    fit = two_sided.job_fit(index, docs_of(1, 2, 3), job)

    np.testing.assert_allclose(fit, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(two_sided.job_fit(index, docs_of(2, 3), job), [1.0, 1.0])
    np.testing.assert_array_equal(two_sided.job_fit(index, docs_of(1, 2), {}), [1.0, 1.0])
    assert len(two_sided.job_fit(index, docs_of(), job)) == 0


def test_a_full_fit_ranks_above_no_fit_whatever_interest_and_willingness() -> None:
    interest = np.array([1.0, 0.1, 0.5])
    willing = np.array([0.95, 0.1, 0.5])
    fit = np.array([0.0, 1.0, 0.5])

    out = two_sided.reciprocal(interest, willing, fit, 1.0)

    np.testing.assert_allclose(out, two_sided.harmonic_mean(interest, willing) + fit)
    assert out[1] > out[0]


def test_the_reciprocal_score_without_fit_is_the_harmonic_mean() -> None:
    interest, willing = np.array([1.0, 0.2]), np.array([0.5, 0.8])
    mean = two_sided.harmonic_mean(interest, willing)

    np.testing.assert_array_equal(two_sided.reciprocal(interest, willing), mean)
    np.testing.assert_array_equal(two_sided.reciprocal(interest, willing, np.ones(2), 0.0), mean)


def test_job_led_puts_full_fits_first_and_weighs_a_partial_fit_against_the_score() -> None:
    docs = docs_of(0, 1, 2, 3, 4)
    score = np.array([3.0, 2.0, 1.0, 0.0, 1.0])  # percentiles 1, 0.8, 0.6, 0.2, 0.4
    fit = np.array([0.0, 0.0, 1.0, 1.0, 0.5])

    assert two_sided.job_led(docs, score, fit, 1.0).tolist() == [2, 3, 0, 4, 1]
    assert two_sided.job_led(docs, score, None, 1.0).tolist() == [0, 1, 2, 4, 3]
    assert two_sided.job_led(docs, score, fit, 0.0).tolist() == [0, 1, 2, 4, 3]


def test_job_led_with_an_equal_fit_keeps_the_score_order_and_its_ties() -> None:
    docs = docs_of(0, 1, 2, 3, 4)
    score = np.array([0.0, 2.0, 0.0, 2.0, 1.0])

    led = two_sided.job_led(docs, score, np.full(5, 0.7), 1.0)

    assert led.tolist() == stages.ranked(docs, score).tolist() == [1, 3, 4, 0, 2]


def test_job_query_keeps_the_pros_carrying_the_jobs_terms() -> None:
    index = pros(
        ("painting", "austin"),
        ("painting", "austin"),
        ("painting", "denver"),
        ("plumbing", "austin"),
    )
    every_pro = Term("kind", "pro")

    query = two_sided.job_query(index, every_pro, PAINTING_JOB, exclude=BitMap(), at_least=2)

    assert index.external(index.match(query)) == ["pro-0", "pro-1"]


def test_job_query_leaves_out_a_field_that_would_keep_too_few() -> None:
    index = pros(("painting", "denver"), ("plumbing", "austin"), ("roofing", "austin"))
    every_pro = Term("kind", "pro")

    # One painter: too few for 2, so only the city narrows.
    query = two_sided.job_query(index, every_pro, PAINTING_JOB, exclude=BitMap(), at_least=2)
    assert index.external(index.match(query)) == ["pro-1", "pro-2"]
    # Pros already seen do not count.
    seen = BitMap([2])
    assert (
        two_sided.job_query(index, every_pro, PAINTING_JOB, exclude=seen, at_least=2) == every_pro
    )


def test_a_pro_carrying_any_of_a_jobs_values_for_a_field_matches_it() -> None:
    index = pros(("painting", "austin"), ("drywall", "austin"), ("plumbing", "austin"))
    job = {"category": ("drywall", "painting")}
    every_pro = Term("kind", "pro")

    query = two_sided.job_query(index, every_pro, job, exclude=BitMap(), at_least=2)

    assert index.external(index.match(query)) == ["pro-0", "pro-1"]
    np.testing.assert_allclose(two_sided.job_fit(index, docs_of(1, 2, 3), job), [1.0, 1.0, 0.0])


def test_job_query_falls_back_to_the_query_when_no_pro_carries_the_jobs_terms() -> None:
    index = pros(("plumbing", "denver"), ("roofing", "miami"))
    every_pro = Term("kind", "pro")

    query = two_sided.job_query(index, every_pro, PAINTING_JOB, exclude=BitMap(), at_least=1)

    assert query == every_pro
