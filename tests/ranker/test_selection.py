"""Selection and exploration as pure functions: ranking, diversity caps, MMR, Thompson sampling."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from ranker import stages
from ranker.policy import Diversity, Exploration
from tests.ranker.stage_inputs import docs_of

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
