"""The ranking stages as pure functions: deterministic inputs in, exact outputs checked."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pytest
from pyroaring import BitMap

from actors import ItemSignals
from actors.item_index import new_index
from index import EVERYTHING, Index, Term
from ranker import stages
from ranker.policy import CLIP_Z, Blend, Diversity, Exploration, Reciprocal


def build_index(items: Sequence[tuple[str, str | None, dict[str, tuple[str, ...]]]]) -> Index:
    """An item index holding ``(id, kind, terms)`` in order: internal ids 0, 1, 2, …"""
    index = new_index()
    for item_id, kind, terms in items:
        index.put(item_id, kind=kind, terms=terms, numbers={}, counters={})
    return index


def docs_of(*docs: int) -> stages.Docs:
    return np.array(docs, dtype=np.uint32)


# -- standardise ------------------------------------------------------------------------


def test_standardise_centres_and_scales_to_unit_deviation() -> None:
    out = stages.standardise(np.array([1.0, 2.0, 3.0]))

    spread = math.sqrt(2.0 / 3.0)
    np.testing.assert_allclose(out, [-1.0 / spread, 0.0, 1.0 / spread])
    assert out.mean() == pytest.approx(0.0)
    assert out.std() == pytest.approx(1.0)


def test_standardise_gives_zeros_when_all_candidates_are_equal() -> None:
    np.testing.assert_array_equal(stages.standardise(np.full(4, 7.5)), np.zeros(4))


def test_standardise_clips_an_outlier_so_it_cannot_drown_the_other_parts() -> None:
    values = np.array([0.0] * 99 + [1000.0])  # one item far more popular than the rest

    out = stages.standardise(values)

    assert CLIP_Z < out[-1] < CLIP_Z + 0.01  # its z-score is 9.95
    assert out[0] == pytest.approx(-0.1005, abs=1e-3)  # the unclipped z-score of the rest


def test_standardise_keeps_the_order_beyond_the_clip() -> None:
    values = np.array([0.0] * 98 + [500.0, 1000.0])

    out = stages.standardise(values)

    assert out[-1] > out[-2] > CLIP_Z


def test_a_taste_outranks_the_single_runaway_best_seller() -> None:
    docs = np.arange(100, dtype=np.uint32)
    popularity = np.full(100, 5.0)
    popularity[0] = 1e6  # unclipped, its popularity would score about 9.9 deviations
    popularity[1] = 50.0
    affinity = np.zeros(100)
    affinity[1:11] = 1.0  # a tenth of the candidates carry the user's favourite term

    scored = stages.score(
        docs,
        Blend(model=0.0, popularity=1.0, affinity=1.0),
        model_scores=None,
        popularity=popularity,
        last_interaction=np.zeros(100),
        affinity=affinity,
        now=0.0,
    )

    assert int(np.argmax(scored.score)) == 1


def test_standardise_without_a_clip_gives_plain_z_scores() -> None:
    values = np.array([0.0] * 99 + [1000.0])

    out = stages.standardise(values, math.inf)

    np.testing.assert_allclose(out, (values - values.mean()) / values.std())


def test_a_learned_blend_keeps_the_order_at_the_top_of_a_sparse_part() -> None:
    # Co-occurrence scores 2 of 100 candidates, the first twice as much: both z-scores
    # are far past the clip (8.9 and 4.4). The model prefers the second, by half a deviation.
    rng = np.random.default_rng(3)
    docs = np.arange(100, dtype=np.uint32)
    cooccurrence = np.zeros(100)
    cooccurrence[:2] = [1.0, 0.5]
    model = rng.normal(size=100)
    model[0], model[1] = model.mean(), model.mean() + 0.5 * model.std()

    def best(blend: Blend) -> int:
        scored = stages.score(
            docs,
            blend,
            model_scores=model,
            popularity=np.zeros(100),
            last_interaction=np.zeros(100),
            affinity=np.zeros(100),
            now=0.0,
            cooccurrence=cooccurrence,
        )
        return int(np.argmax(scored.score))

    assert best(Blend(model=1.0, cooccurrence=1.0, clip_z=math.inf)) == 0
    assert best(Blend(model=1.0, cooccurrence=1.0)) == 1  # clipped: the two nearly tie


def test_standardise_of_no_candidates_is_empty() -> None:
    assert len(stages.standardise(np.empty(0))) == 0


# -- score ------------------------------------------------------------------------------


def test_score_weights_each_standardised_part_and_sums_them() -> None:
    docs = docs_of(0, 1, 2)
    model = np.array([0.5, -1.0, 2.0])
    popularity = np.array([0.0, 10.0, 100.0])
    affinity = np.array([1.0, 0.0, 0.0])

    scored = stages.score(
        docs,
        Blend(model=2.0, popularity=0.5, recency=0.0, affinity=1.0),
        model_scores=model,
        popularity=popularity,
        last_interaction=np.zeros(3),
        affinity=affinity,
        now=1000.0,
    )

    assert set(scored.parts) == {"model", "popularity", "affinity"}
    np.testing.assert_allclose(scored.parts["model"], 2.0 * stages.standardise(model))
    np.testing.assert_allclose(
        scored.parts["popularity"], 0.5 * stages.standardise(np.log1p(popularity))
    )
    np.testing.assert_allclose(scored.parts["affinity"], stages.standardise(affinity))
    np.testing.assert_allclose(scored.score, sum(scored.parts.values()))
    np.testing.assert_array_equal(scored.docs, docs)


def test_a_zero_weight_leaves_its_part_out() -> None:
    scored = stages.score(
        docs_of(0, 1),
        Blend(model=1.0, popularity=0.0, recency=0.0, affinity=0.0),
        model_scores=np.array([1.0, 2.0]),
        popularity=np.array([5.0, 1.0]),
        last_interaction=np.array([10.0, 20.0]),
        affinity=np.array([3.0, 0.0]),
        now=30.0,
    )

    assert set(scored.parts) == {"model"}
    np.testing.assert_allclose(scored.score, [-1.0, 1.0])


def test_the_model_part_counts_only_when_model_scores_are_given() -> None:
    scored = stages.score(
        docs_of(0, 1),
        Blend(model=5.0, popularity=1.0),
        model_scores=None,
        popularity=np.array([1.0, 3.0]),
        last_interaction=np.zeros(2),
        affinity=np.zeros(2),
        now=0.0,
    )

    assert set(scored.parts) == {"popularity"}
    np.testing.assert_allclose(scored.score, [-1.0, 1.0])


def test_recency_favours_the_latest_interaction_and_ignores_items_without_one() -> None:
    now = 10 * stages.RECENCY_HALF_LIFE_S
    last = np.array([now, now - stages.RECENCY_HALF_LIFE_S, 0.0])

    scored = stages.score(
        docs_of(0, 1, 2),
        Blend(model=0.0, recency=1.0),
        model_scores=None,
        popularity=np.zeros(3),
        last_interaction=last,
        affinity=np.zeros(3),
        now=now,
    )

    # Raw recency: 1 (just now), 0.5 (one half-life ago), 0 (never).
    np.testing.assert_allclose(scored.parts["recency"], stages.standardise(np.array([1, 0.5, 0])))
    assert scored.score[0] > scored.score[1] > scored.score[2]


# -- affinity_part ----------------------------------------------------------------------

AFFINITY_ITEMS = [
    ("a", "pro", {"city": ("austin",), "category": ("plumbing",)}),
    ("b", "pro", {"city": ("boston",)}),
    ("c", "pro", {"city": ("austin",), "category": ("painting",)}),
]


def test_affinity_part_sums_the_users_affinity_over_each_candidates_terms() -> None:
    index = build_index(AFFINITY_ITEMS)
    affinity = [("city", "austin", 0.5), ("category", "plumbing", 0.25), ("kind", "pro", 0.125)]

    out = stages.affinity_part(index, docs_of(0, 1, 2), affinity)

    np.testing.assert_allclose(out, [0.875, 0.125, 0.625])


def test_affinity_part_counts_only_the_given_candidates() -> None:
    index = build_index(AFFINITY_ITEMS)

    out = stages.affinity_part(index, docs_of(1, 2), [("city", "austin", 0.5)])

    np.testing.assert_allclose(out, [0.0, 0.5])


def test_affinity_part_is_zero_without_affinity_or_for_unknown_terms() -> None:
    index = build_index(AFFINITY_ITEMS)
    docs = docs_of(0, 1, 2)

    np.testing.assert_array_equal(stages.affinity_part(index, docs, []), np.zeros(3))
    np.testing.assert_array_equal(
        stages.affinity_part(index, docs, [("colour", "red", 1.0), ("city", "paris", 1.0)]),
        np.zeros(3),
    )


def test_negative_affinity_lowers_the_part() -> None:
    index = build_index(AFFINITY_ITEMS)

    out = stages.affinity_part(index, docs_of(0, 1, 2), [("city", "boston", -1.0)])

    np.testing.assert_allclose(out, [0.0, -1.0, 0.0])


# -- retrieve ---------------------------------------------------------------------------

N_RETRIEVE = 20


def retrieval_world() -> tuple[Index, ItemSignals]:
    """20 items ``i00``… (doc n has category ``c{n % 4}``), popularity falling with the id;
    nobody engaged with the last four yet (they are cold)."""
    index = build_index(
        [(f"i{n:02}", "pro", {"category": (f"c{n % 4}",)}) for n in range(N_RETRIEVE)]
    )
    signals = ItemSignals()
    for doc in range(N_RETRIEVE - 4):
        signals.set(doc, mass=100.0 - doc, landmark=0.0, updated=1.0)
    return index, signals


def test_retrieve_returns_every_match_but_the_excluded_when_they_fit() -> None:
    index, signals = retrieval_world()

    docs, total = stages.retrieve(
        index, signals, Term("category", "c1"), limit=10, exclude=BitMap([5])
    )

    assert docs.tolist() == [1, 9, 13, 17]
    assert total == 4
    assert docs.dtype == np.uint32


def test_retrieve_takes_the_newest_cold_share_and_the_most_popular_when_over_the_limit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index, signals = retrieval_world()
    monkeypatch.setattr(stages, "NEWEST_SHARE", 0.25)

    docs, total = stages.retrieve(index, signals, EVERYTHING, limit=8, exclude=BitMap([5, 19]))

    assert total == N_RETRIEVE - 2 > stages.SCORE_WHOLE * 8
    # int(8 * 0.25) = 2 newest cold matches (17, 18), then the 6 most popular of the rest.
    assert docs.tolist() == [0, 1, 2, 3, 4, 6, 17, 18]


def test_retrieve_takes_no_engaged_item_as_newest(monkeypatch: pytest.MonkeyPatch) -> None:
    index, signals = retrieval_world()
    monkeypatch.setattr(stages, "NEWEST_SHARE", 0.25)
    for doc in range(N_RETRIEVE - 4, N_RETRIEVE):  # every item engaged: none is cold
        signals.set(doc, mass=1.0, landmark=0.0, updated=1.0)

    docs, _ = stages.retrieve(index, signals, EVERYTHING, limit=8, exclude=BitMap([5, 19]))

    assert docs.tolist() == [0, 1, 2, 3, 4, 6, 7, 8]  # the most popular only


def test_retrieve_takes_the_most_related_share_first() -> None:
    index, signals = retrieval_world()
    # Related scores (sorted by id): the least popular matches are the most related.
    related = (docs_of(2, 9, 12, 15, 19), np.array([0.1, 0.5, 0.9, 0.7, 5.0]))

    docs, _ = stages.retrieve(
        index, signals, EVERYTHING, limit=8, exclude=BitMap([5, 19]), related=related
    )

    # int(8 * RELATED_SHARE) = 2 most related matches (12, 15; 19 is excluded), then popular.
    assert int(8 * stages.RELATED_SHARE) == 2
    assert {12, 15} <= set(docs.tolist())
    assert 9 not in docs.tolist()
    assert len(docs) == 8


def test_retrieve_scores_a_small_match_set_whole() -> None:
    index, signals = retrieval_world()

    docs, total = stages.retrieve(index, signals, EVERYTHING, limit=10, exclude=BitMap([5]))

    assert total == N_RETRIEVE - 1 <= stages.SCORE_WHOLE * 10
    assert docs.tolist() == [d for d in range(N_RETRIEVE) if d != 5]


def test_retrieve_takes_a_share_through_the_users_favourite_terms(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    index, signals = retrieval_world()
    monkeypatch.setattr(stages, "NEWEST_SHARE", 0.25)
    monkeypatch.setattr(stages, "PERSONAL_SHARE", 0.25)

    docs, total = stages.retrieve(
        index,
        signals,
        EVERYTHING,
        limit=8,
        exclude=BitMap([5, 19]),
        favourite_terms=[("category", "c3")],
    )

    assert total == N_RETRIEVE - 2
    # Newest 17, 18; the 2 most popular of category c3 (3, 7); then the most popular: 0, 1, 2, 4.
    assert docs.tolist() == [0, 1, 2, 3, 4, 7, 17, 18]


@pytest.mark.parametrize("limit", [1, 2, 3, 4, 7, 8, 15, 17, 18, 19, 40])
def test_retrieve_respects_the_limit_and_never_returns_excluded_items(limit: int) -> None:
    index, signals = retrieval_world()
    exclude = BitMap([0, 5, 11, 19])

    docs, total = stages.retrieve(
        index,
        signals,
        EVERYTHING,
        limit=limit,
        exclude=exclude,
        favourite_terms=[("category", "c2")],
    )

    assert total == N_RETRIEVE - len(exclude)
    assert len(docs) == (total if total <= stages.SCORE_WHOLE * limit else limit)
    assert not set(docs.tolist()) & set(exclude)
    assert docs.tolist() == sorted(set(docs.tolist()))
    assert set(docs.tolist()) <= set(range(N_RETRIEVE))


def test_retrieve_counts_no_match_as_zero() -> None:
    index, signals = retrieval_world()

    docs, total = stages.retrieve(
        index, signals, Term("category", "none"), limit=5, exclude=BitMap()
    )

    assert total == 0
    assert len(docs) == 0


# -- apply_rules ------------------------------------------------------------------------


def test_boost_adds_and_bury_subtracts_and_the_effects_name_the_rule() -> None:
    index = build_index(AFFINITY_ITEMS)
    score = np.zeros(3)

    effects = stages.apply_rules(
        index,
        docs_of(0, 1, 2),
        score,
        [
            ("austin", "boost", Term("city", "austin"), 0.5),
            ("plumbers", "bury", Term("category", "plumbing"), 2.0),
        ],
    )

    np.testing.assert_allclose(score, [-1.5, 0.0, 0.5])
    assert effects == {
        0: ["boost austin +0.5", "bury plumbers -2"],
        2: ["boost austin +0.5"],
    }


def test_rules_touch_only_the_candidates() -> None:
    index = build_index(AFFINITY_ITEMS)
    score = np.array([1.0, 1.0])

    effects = stages.apply_rules(
        index, docs_of(1, 2), score, [("austin", "boost", Term("city", "austin"), 3.0)]
    )

    np.testing.assert_allclose(score, [1.0, 4.0])
    assert effects == {1: ["boost austin +3"]}


def test_rules_that_match_nothing_change_nothing() -> None:
    index = build_index(AFFINITY_ITEMS)
    score = np.array([1.0, 2.0, 3.0])

    effects = stages.apply_rules(
        index, docs_of(0, 1, 2), score, [("x", "boost", Term("city", "paris"), 1.0)]
    )

    assert effects == {}
    np.testing.assert_array_equal(score, [1.0, 2.0, 3.0])


# -- willingness, interest, harmonic mean ------------------------------------------------

JOB = ["city=austin", "category=plumbing"]


def logistic(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_a_supplier_without_history_gets_the_prior() -> None:
    out = stages.willingness([{}, {"colour=red": 5.0}], JOB, Reciprocal(prior=0.3))

    np.testing.assert_allclose(out, [0.3, 0.3])


def test_willingness_is_the_logistic_of_prior_log_odds_plus_mean_evidence() -> None:
    policy = Reciprocal(prior=0.3, strength=2.0)

    out = stages.willingness([{"city=austin": 1.0}], JOB, policy)

    expected = logistic(math.log(0.3 / 0.7) + 2.0 * (1.0 + 0.0) / 2)
    assert out[0] == pytest.approx(expected)


def test_accepting_raises_willingness_and_declining_lowers_it() -> None:
    accepted, none, declined = stages.willingness(
        [{"city=austin": 1.0, "category=plumbing": 0.5}, {}, {"category=plumbing": -1.0}],
        JOB,
        Reciprocal(prior=0.5),
    )

    assert none == pytest.approx(0.5)
    assert accepted > none > declined


def test_willingness_moves_further_from_the_prior_as_strength_grows() -> None:
    history = [{"city=austin": 1.0}, {"city=austin": -1.0}]
    by_strength = [
        stages.willingness(history, JOB, Reciprocal(prior=0.4, strength=s)) for s in (0.0, 1, 3)
    ]

    keen = [w[0] for w in by_strength]
    reluctant = [w[1] for w in by_strength]
    assert keen[0] == pytest.approx(0.4)
    assert keen[0] < keen[1] < keen[2] < 1.0
    assert reluctant[0] == pytest.approx(0.4)
    assert reluctant[0] > reluctant[1] > reluctant[2] > 0.0


def test_interest_is_the_score_percentile_among_candidates() -> None:
    out = stages.interest(np.array([0.2, 0.9, 0.5, -3.0]))

    np.testing.assert_allclose(out, [0.5, 1.0, 0.75, 0.25])
    assert len(stages.interest(np.empty(0))) == 0


def test_harmonic_mean_of_hand_computed_pairs() -> None:
    a = np.array([1.0, 0.5, 0.0, 0.2, 0.0, 0.6])
    b = np.array([1.0, 0.5, 0.7, 0.8, 0.0, 0.3])

    out = stages.harmonic_mean(a, b)

    np.testing.assert_allclose(out, [1.0, 0.5, 0.0, 0.32, 0.0, 0.4])


# -- the job's own terms: fit, interest led by it, job-led retrieval ----------------------

PAINTING_JOB = {"category": ("painting",), "city": ("austin",)}


def pros(*described: tuple[str, str]) -> Index:
    """A painting job in Austin (internal id 0), then ``pro-N`` (id N + 1) per (category, city)."""
    items: list[tuple[str, str | None, dict[str, tuple[str, ...]]]] = [("job", "job", PAINTING_JOB)]
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

    fit = stages.job_fit(index, docs_of(1, 2, 3, 4), PAINTING_JOB)

    # category matched by 1 of 4 weighs log 4, city by 2 of 4 weighs log 2.
    np.testing.assert_allclose(fit, [1.0, 1.0 / 3.0, 0.0, 0.0])


def test_job_fit_ignores_fields_every_candidate_or_none_matches() -> None:
    index = pros(("painting", "austin"), ("plumbing", "austin"), ("roofing", "austin"))
    job = {**PAINTING_JOB, "urgency": ("high",)}  # no pro carries an urgency

    fit = stages.job_fit(index, docs_of(1, 2, 3), job)

    np.testing.assert_allclose(fit, [1.0, 0.0, 0.0])
    np.testing.assert_array_equal(stages.job_fit(index, docs_of(2, 3), job), [1.0, 1.0])
    np.testing.assert_array_equal(stages.job_fit(index, docs_of(1, 2), {}), [1.0, 1.0])
    assert len(stages.job_fit(index, docs_of(), job)) == 0


def test_a_full_fit_ranks_above_no_fit_whatever_interest_and_willingness() -> None:
    interest = np.array([1.0, 0.1, 0.5])
    willing = np.array([0.95, 0.1, 0.5])
    fit = np.array([0.0, 1.0, 0.5])

    out = stages.reciprocal(interest, willing, fit, 1.0)

    np.testing.assert_allclose(out, stages.harmonic_mean(interest, willing) + fit)
    assert out[1] > out[0]


def test_the_reciprocal_score_without_fit_is_the_harmonic_mean() -> None:
    interest, willing = np.array([1.0, 0.2]), np.array([0.5, 0.8])
    mean = stages.harmonic_mean(interest, willing)

    np.testing.assert_array_equal(stages.reciprocal(interest, willing), mean)
    np.testing.assert_array_equal(stages.reciprocal(interest, willing, np.ones(2), 0.0), mean)


def test_job_led_puts_full_fits_first_and_weighs_a_partial_fit_against_the_score() -> None:
    docs = docs_of(0, 1, 2, 3, 4)
    score = np.array([3.0, 2.0, 1.0, 0.0, 1.0])  # percentiles 1, 0.8, 0.6, 0.2, 0.4
    fit = np.array([0.0, 0.0, 1.0, 1.0, 0.5])

    assert stages.job_led(docs, score, fit, 1.0).tolist() == [2, 3, 0, 4, 1]
    assert stages.job_led(docs, score, None, 1.0).tolist() == [0, 1, 2, 4, 3]
    assert stages.job_led(docs, score, fit, 0.0).tolist() == [0, 1, 2, 4, 3]


def test_job_led_with_an_equal_fit_keeps_the_score_order_and_its_ties() -> None:
    docs = docs_of(0, 1, 2, 3, 4)
    score = np.array([0.0, 2.0, 0.0, 2.0, 1.0])

    led = stages.job_led(docs, score, np.full(5, 0.7), 1.0)

    assert led.tolist() == stages.ranked(docs, score).tolist() == [1, 3, 4, 0, 2]


def test_job_query_keeps_the_pros_carrying_the_jobs_terms() -> None:
    index = pros(
        ("painting", "austin"),
        ("painting", "austin"),
        ("painting", "denver"),
        ("plumbing", "austin"),
    )
    every_pro = Term("kind", "pro")

    query = stages.job_query(index, every_pro, PAINTING_JOB, exclude=BitMap(), at_least=2)

    assert index.external(index.match(query)) == ["pro-0", "pro-1"]


def test_job_query_leaves_out_a_field_that_would_keep_too_few() -> None:
    index = pros(("painting", "denver"), ("plumbing", "austin"), ("roofing", "austin"))
    every_pro = Term("kind", "pro")

    # One painter: too few for 2, so only the city narrows.
    query = stages.job_query(index, every_pro, PAINTING_JOB, exclude=BitMap(), at_least=2)
    assert index.external(index.match(query)) == ["pro-1", "pro-2"]
    # Pros already seen do not count.
    seen = BitMap([2])
    assert stages.job_query(index, every_pro, PAINTING_JOB, exclude=seen, at_least=2) == every_pro


def test_a_pro_carrying_any_of_a_jobs_values_for_a_field_matches_it() -> None:
    index = pros(("painting", "austin"), ("drywall", "austin"), ("plumbing", "austin"))
    job = {"category": ("drywall", "painting")}
    every_pro = Term("kind", "pro")

    query = stages.job_query(index, every_pro, job, exclude=BitMap(), at_least=2)

    assert index.external(index.match(query)) == ["pro-0", "pro-1"]
    np.testing.assert_allclose(stages.job_fit(index, docs_of(1, 2, 3), job), [1.0, 1.0, 0.0])


def test_job_query_falls_back_to_the_query_when_no_pro_carries_the_jobs_terms() -> None:
    index = pros(("plumbing", "denver"), ("roofing", "miami"))
    every_pro = Term("kind", "pro")

    query = stages.job_query(index, every_pro, PAINTING_JOB, exclude=BitMap(), at_least=1)

    assert query == every_pro


# -- ranked and select ------------------------------------------------------------------


def test_ranked_orders_by_score_best_first() -> None:
    order = stages.ranked(docs_of(3, 5, 7, 9), np.array([1.0, 2.0, 0.5, 3.0]))

    assert order.tolist() == [3, 1, 0, 2]


def test_ranked_breaks_ties_by_internal_id() -> None:
    """Candidates come sorted by internal id, so the lower id of a tie goes first."""
    order = stages.ranked(docs_of(1, 5, 7, 9, 12), np.array([1.0, 2.0, 1.0, 2.0, 1.0]))

    assert order.tolist() == [1, 3, 0, 2, 4]


def category_of(values: Sequence[Sequence[str]]):  # type: ignore[no-untyped-def]
    return lambda p: values[p]


def test_select_without_a_cap_takes_the_first_k_in_order() -> None:
    order = np.array([2, 0, 1, 3], dtype=np.intp)

    chosen, notes = stages.select(
        order, 3, Diversity(), category_of([["a"]] * 4), score=np.zeros(4)
    )

    assert chosen == [2, 0, 1]
    assert notes == {}


def test_select_caps_items_per_field_value_and_notes_the_skips() -> None:
    values = [["a"], ["a"], ["a"], ["b"], ["a"], ["c"], ["b"]]
    order = np.arange(len(values), dtype=np.intp)

    chosen, notes = stages.select(
        order,
        4,
        Diversity(field="category", max_per_value=2),
        category_of(values),
        score=np.zeros(len(values)),
    )

    assert chosen == [0, 1, 3, 5]
    assert notes == {
        2: "diversity: already 2 with category=a",
        4: "diversity: already 2 with category=a",
    }


def test_select_counts_every_value_of_a_multi_valued_field() -> None:
    values = [["a", "b"], ["b"], ["c"], ["a"]]
    order = np.arange(len(values), dtype=np.intp)

    chosen, notes = stages.select(
        order,
        4,
        Diversity(field="category", max_per_value=1),
        category_of(values),
        score=np.zeros(len(values)),
    )

    assert chosen == [0, 2]
    assert set(notes) == {1, 3}


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("cap", [1, 2, 3])
def test_select_never_exceeds_the_cap_per_value(seed: int, cap: int) -> None:
    rng = np.random.default_rng(seed)
    n = 60
    values = [
        sorted({f"v{x}" for x in rng.integers(0, 6, size=rng.integers(1, 3))}) for _ in range(n)
    ]
    order = rng.permutation(n).astype(np.intp)

    chosen, notes = stages.select(
        order,
        10,
        Diversity(field="category", max_per_value=cap),
        category_of(values),
        score=np.zeros(n),
    )

    counts: dict[str, int] = {}
    for p in chosen:
        for v in values[p]:
            counts[v] = counts.get(v, 0) + 1
    assert max(counts.values()) <= cap
    assert len(chosen) == len(set(chosen)) <= 10
    # Chosen in score order; every skip before the last pick is explained.
    ranks = {int(p): r for r, p in enumerate(order)}
    assert [ranks[p] for p in chosen] == sorted(ranks[p] for p in chosen)
    skipped = [int(p) for p in order[: ranks[chosen[-1]]] if int(p) not in chosen]
    assert set(skipped) <= set(notes)
    assert not set(notes) & set(chosen)


def test_mmr_prefers_a_dissimilar_second_item_over_a_near_duplicate() -> None:
    score = np.array([1.0, 0.99, 0.9, 0.0])
    embeddings = np.array([[1, 0], [0.999, 0.01], [0, 1], [-1, 0]], dtype=np.float32)
    order = stages.ranked(docs_of(0, 1, 2, 3), score)
    no_cap = category_of([["x"]] * 4)

    plain, _ = stages.select(order, 2, Diversity(), no_cap, score=score, embeddings=embeddings)
    diverse, _ = stages.select(
        order, 2, Diversity(mmr=0.5), no_cap, score=score, embeddings=embeddings
    )

    assert plain == [0, 1]
    assert diverse == [0, 2]


def test_mmr_without_embeddings_falls_back_to_score_order() -> None:
    score = np.array([1.0, 0.99, 0.9])
    order = stages.ranked(docs_of(0, 1, 2), score)

    chosen, _ = stages.select(
        order, 2, Diversity(mmr=0.9), category_of([["x"]] * 3), score=score, embeddings=None
    )

    assert chosen == [0, 1]


def test_mmr_still_respects_the_cap() -> None:
    score = np.array([1.0, 0.9, 0.8, 0.1])
    embeddings = np.array([[1, 0], [0, 1], [1, 1], [-1, 0]], dtype=np.float32)
    values = [["a"], ["a"], ["b"], ["c"]]
    order = stages.ranked(docs_of(0, 1, 2, 3), score)

    chosen, notes = stages.select(
        order,
        3,
        Diversity(field="category", max_per_value=1, mmr=0.2),
        category_of(values),
        score=score,
        embeddings=embeddings,
    )

    assert sorted(chosen) == [0, 2, 3]
    assert notes[1] == "diversity: already 1 with category=a"


# -- explore ----------------------------------------------------------------------------

N_EXPLORE = 40


def explore_inputs() -> tuple[np.ndarray, list[int], np.ndarray, np.ndarray]:
    order = np.random.default_rng(99).permutation(N_EXPLORE).astype(np.intp)
    exploit = [int(p) for p in order[:10]]
    return order, exploit, np.zeros(N_EXPLORE), np.zeros(N_EXPLORE)


def test_explore_with_no_share_serves_the_exploit_list() -> None:
    order, exploit, successes, trials = explore_inputs()

    out = stages.explore(
        order, exploit, 10, Exploration(share=0.0), successes, trials, np.random.default_rng(1)
    )

    assert out.positions == exploit
    assert out.propensity == dict.fromkeys(exploit, 1.0)
    assert out.draws == {}


@pytest.mark.parametrize(("share", "slots"), [(0.1, 1), (0.3, 3), (0.44, 4), (0.46, 5), (1.0, 10)])
def test_explore_gives_round_share_k_slots_to_items_outside_the_exploit_list(
    share: float, slots: int
) -> None:
    order, exploit, successes, trials = explore_inputs()

    out = stages.explore(
        order, exploit, 10, Exploration(share=share), successes, trials, np.random.default_rng(3)
    )

    assert len(out.positions) == 10
    assert len(set(out.positions)) == 10
    explored = [p for p in out.positions if p not in exploit]
    assert len(explored) == slots == round(share * 10)
    assert set(out.draws) == set(explored)
    # The kept exploit items are the best ones, still in their order.
    kept = [p for p in out.positions if p in exploit]
    assert kept == exploit[: 10 - slots]
    for p in kept:
        assert out.propensity[p] == 1.0
    for p in explored:
        assert 0.0 < out.propensity[p] <= 1.0
        assert 0.0 <= out.draws[p] <= 1.0
    assert set(out.propensity) == set(out.positions)


def test_explored_items_come_from_the_next_best_pool() -> None:
    order, exploit, successes, trials = explore_inputs()
    pool = {int(p) for p in order[10:15]}

    for seed in range(10):
        out = stages.explore(
            order,
            exploit,
            10,
            Exploration(share=0.2, pool=5),
            successes,
            trials,
            np.random.default_rng(seed),
        )
        assert set(out.draws) <= pool


def test_explore_is_reproducible_with_the_same_seed_and_varies_with_others() -> None:
    order, exploit, successes, trials = explore_inputs()
    policy = Exploration(share=0.3)

    def run(seed: int) -> stages.Explored:
        return stages.explore(
            order, exploit, 10, policy, successes, trials, np.random.default_rng(seed)
        )

    first = run(7)
    again = run(7)
    assert (first.positions, first.propensity, first.draws) == (
        again.positions,
        again.propensity,
        again.draws,
    )
    assert any(run(seed).positions != first.positions for seed in range(8, 20))


def test_explore_favours_items_whose_counters_promise_more() -> None:
    order, exploit, _, _ = explore_inputs()
    successes = np.zeros(N_EXPLORE)
    trials = np.full(N_EXPLORE, 1000.0)
    star = int(order[25])
    successes[star] = 1000.0

    out = stages.explore(
        order, exploit, 10, Exploration(share=0.1), successes, trials, np.random.default_rng(5)
    )

    assert list(out.draws) == [star]
    # It wins every one of the propensity draws as well.
    assert out.propensity[star] == 1.0


def test_explore_with_fewer_candidates_than_slots_explores_what_there_is() -> None:
    order = np.arange(12, dtype=np.intp)
    exploit = list(range(10))

    out = stages.explore(
        order,
        exploit,
        10,
        Exploration(share=0.5),
        np.zeros(12),
        np.zeros(12),
        np.random.default_rng(0),
    )

    assert sorted(out.draws) == [10, 11]
    assert len(out.positions) == 10
    assert [p for p in out.positions if p < 10] == list(range(8))
