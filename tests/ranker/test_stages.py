"""Scoring and retrieval as pure functions: deterministic inputs in, exact outputs checked.

Standardisation, the blended score and its parts, retrieval and the boost
and bury rules; two-sided matching is in ``test_two_sided.py``, selection
and exploration in ``test_selection.py``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from pyroaring import BitMap

from actors import ItemSignals
from index import EVERYTHING, Index, Term
from ranker import stages
from ranker.policy import CLIP_Z, Blend
from tests.ranker.stage_inputs import build_index, docs_of

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
