"""The comparison metrics against hand-computed values, and the verdict rules one by one."""

from __future__ import annotations

import math
import random
from typing import Any

import attrs
import numpy as np
import pytest
from scipy import stats as scipy_stats

from legacy_adapter.metrics import (
    INVESTIGATE,
    NOT_ENOUGH_DATA,
    READY,
    SurfaceStats,
    Thresholds,
    jaccard_at_k,
    kendall_tau,
    noise_floor,
    overlap_at_k,
    percentile,
    rbo,
    rbo_min,
    summary,
    verdict,
)

# --- overlap@k and Jaccard@k -------------------------------------------------------------


def test_overlap_and_jaccard_by_hand() -> None:
    a, b = [1, 2, 3, 4], [2, 5, 1, 6]
    # top-4: {1,2,3,4} ∩ {2,5,1,6} = {1,2}: overlap 2/4; union {1..6}: Jaccard 2/6.
    assert overlap_at_k(a, b, 4) == 0.5
    assert jaccard_at_k(a, b, 4) == pytest.approx(1 / 3)
    # top-2: {1,2} ∩ {2,5} = {2}: overlap 1/2; union {1,2,5}: Jaccard 1/3.
    assert overlap_at_k(a, b, 2) == 0.5
    assert jaccard_at_k(a, b, 2) == pytest.approx(1 / 3)
    assert overlap_at_k(a, a, 4) == jaccard_at_k(a, a, 4) == 1.0
    assert overlap_at_k(a, [7, 8, 9], 3) == jaccard_at_k(a, [7, 8, 9], 3) == 0.0


def test_overlap_divides_by_k_even_for_short_lists() -> None:
    # Two identical 3-item lists fill only 3 of 10 slots alike: 3/10; Jaccard sees 3/3.
    assert overlap_at_k([1, 2, 3], [1, 2, 3], 10) == pytest.approx(0.3)
    assert jaccard_at_k([1, 2, 3], [1, 2, 3], 10) == 1.0


def test_empty_lists_and_repeats() -> None:
    assert overlap_at_k([], [], 5) == 0.0
    assert jaccard_at_k([], [], 5) == 1.0
    assert jaccard_at_k([], [1], 5) == 0.0
    # A repeat is dropped before taking the top k: [1, 1, 2] has top-2 {1, 2}.
    assert overlap_at_k([1, 1, 2], [2, 1], 2) == 1.0


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be"):
        overlap_at_k([1], [1], 0)
    with pytest.raises(ValueError, match="k must be"):
        jaccard_at_k([1], [1], 0)


# --- rank-biased overlap -------------------------------------------------------------------


@pytest.mark.parametrize("p", [0.5, 0.9, 0.98])
def test_rbo_of_identical_and_disjoint_lists(p: float) -> None:
    assert rbo([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], p) == pytest.approx(1.0)
    assert rbo([1, 2, 3], [4, 5, 6], p) == 0.0
    assert rbo(["a"], ["a"], p) == pytest.approx(1.0)


def test_rbo_of_a_swap_by_hand() -> None:
    # a = [1,2,3], b = [1,3,2], p = 0.9, equal lengths (k = 3):
    #   X_1 = |{1} ∩ {1}| = 1          A_1 = 1
    #   X_2 = |{1,2} ∩ {1,3}| = 1      A_2 = 1/2
    #   X_3 = |{1,2,3} ∩ {1,3,2}| = 3  A_3 = 1
    #   RBO_ext = (1-p)/p * (A_1 p + A_2 p^2 + A_3 p^3) + A_3 p^3
    #           = (1/9) * (0.9 + 0.405 + 0.729) + 0.729
    #           = (1/9) * 2.034 + 0.729 = 0.226 + 0.729 = 0.955
    assert rbo([1, 2, 3], [1, 3, 2], 0.9) == pytest.approx(0.955)
    assert rbo([1, 3, 2], [1, 2, 3], 0.9) == pytest.approx(0.955)


def test_rbo_of_uneven_lists_by_hand() -> None:
    # S = [1,2] (s = 2), L = [1,3,2] (l = 3), p = 0.9; past s, S's prefix is all of S:
    #   X_1 = 1, X_2 = |{1,2} ∩ {1,3}| = 1, X_3 = |{1,2} ∩ {1,3,2}| = 2;  X_s = 1, X_l = 2
    #   sum_{d=1..3} X_d/d p^d        = 0.9 + 0.405 + (2/3) 0.729 = 1.791
    #   sum_{d=3..3} X_s (d-s)/(s d) p^d = 1 * 1/6 * 0.729       = 0.1215
    #   ((X_l - X_s)/l + X_s/s) p^l   = (1/3 + 1/2) * 0.729      = 0.6075
    #   RBO_ext = (1/9) (1.791 + 0.1215) + 0.6075 = 0.2125 + 0.6075 = 0.82
    assert rbo([1, 2], [1, 3, 2], 0.9) == pytest.approx(0.82)
    assert rbo([1, 3, 2], [1, 2], 0.9) == pytest.approx(0.82)


def test_rbo_of_uneven_lists_that_disagree_at_the_top_by_hand() -> None:
    # S = [5,1] (s = 2), L = [1,2,3,4] (l = 4), p = 0.9:
    #   X_1 = |{5} ∩ {1}| = 0, X_2 = |{5,1} ∩ {1,2}| = 1, X_3 = 1, X_4 = 1;  X_s = X_l = 1
    #   sum X_d/d p^d             = 0 + 0.405 + 0.243 + 0.164025 = 0.812025
    #   sum_{d=3,4} X_s (d-s)/(s d) p^d = (1/6) 0.729 + (2/8) 0.6561 = 0.1215 + 0.164025
    #                             = 0.285525
    #   ((X_l - X_s)/l + X_s/s) p^l = (0 + 1/2) * 0.6561 = 0.32805
    #   RBO_ext = (1/9) (0.812025 + 0.285525) + 0.32805 = 0.12195 + 0.32805 = 0.45
    assert rbo([5, 1], [1, 2, 3, 4], 0.9) == pytest.approx(0.45)


def test_a_list_that_is_a_prefix_of_the_other_scores_one() -> None:
    # S = [a], L = [a,b,c]: X_d = 1 for all d; X_s = X_l = 1, s = 1, l = 3:
    #   sum X_d/d p^d = 0.9 + 0.405 + 0.243 = 1.548
    #   sum_{d=2,3} X_s (d-1)/d p^d = (1/2) 0.81 + (2/3) 0.729 = 0.405 + 0.486 = 0.891
    #   tail = (0/3 + 1/1) * 0.729 = 0.729
    #   RBO_ext = (1.548 + 0.891) / 9 + 0.729 = 0.271 + 0.729 = 1
    assert rbo(["a"], ["a", "b", "c"], 0.9) == pytest.approx(1.0)


def test_rbo_empty_list_conventions_and_repeats() -> None:
    assert rbo([], []) == 1.0
    assert rbo([], [1, 2]) == rbo([1, 2], []) == 0.0
    assert rbo([1, 1, 2, 3], [1, 3, 2]) == pytest.approx(rbo([1, 2, 3], [1, 3, 2]))


@pytest.mark.parametrize("p", [0.0, 1.0, -0.1, 1.5])
def test_rbo_p_must_lie_strictly_between_0_and_1(p: float) -> None:
    with pytest.raises(ValueError, match="p must"):
        rbo([1], [1], p)
    with pytest.raises(ValueError, match="p must"):
        rbo_min([1], [1], p)


def test_rbo_min_by_hand() -> None:
    # [1,2,3] vs [1,3,2], p = 0.9: X = (1, 1, 3), X_l = 3, -ln(1 - p) = ln 10 = 2.302585
    #   sum (X_d - X_l) p^d / d = (1-3) 0.9 + (1-3) 0.81/2 + 0 = -1.8 - 0.81 = -2.61
    #   RBO_min = (1/9) (-2.61 + 3 * 2.302585) = (1/9) * 4.297755 = 0.477528
    assert rbo_min([1, 2, 3], [1, 3, 2], 0.9) == pytest.approx(0.477528, abs=1e-6)
    # One shared item and nothing else known: (1/9) ln 10 = 0.255843.
    assert rbo_min(["a"], ["a"], 0.9) == pytest.approx(math.log(10) / 9)
    assert rbo_min([1, 2], [3, 4]) == 0.0


def _rbo_by_definition(a: list[int], b: list[int], p: float, depth: int = 3000) -> float:
    """``(1-p) sum_d p^(d-1) A_d``, truncated, with each list continued by fresh items."""
    a = a + [-1 - i for i in range(depth)]  # never shared
    b = b + [-100_000 - i for i in range(depth)]
    seen_a: set[int] = set()
    seen_b: set[int] = set()
    total = 0.0
    for d in range(1, depth + 1):
        seen_a.add(a[d - 1])
        seen_b.add(b[d - 1])
        total += (1 - p) * p ** (d - 1) * len(seen_a & seen_b) / d
    return total


def test_rbo_min_is_the_definition_with_nothing_shared_beyond_the_lists() -> None:
    rng = random.Random(3)
    for _ in range(30):
        a = rng.sample(range(30), rng.randint(1, 12))
        b = rng.sample(range(30), rng.randint(1, 12))
        assert rbo_min(a, b, 0.9) == pytest.approx(_rbo_by_definition(a, b, 0.9), abs=1e-9)
        assert rbo_min(a, b, 0.9) <= rbo(a, b, 0.9) + 1e-12
        assert rbo(a, b, 0.9) == pytest.approx(rbo(b, a, 0.9))
        assert 0.0 <= rbo(a, b, 0.9) <= 1.0


# --- Kendall's tau ---------------------------------------------------------------------------


def test_kendall_tau_by_hand() -> None:
    # [a,b,c,d] vs [a,c,b,d]: of 6 pairs only (b,c) is discordant: (5 - 1) / 6.
    assert kendall_tau(list("abcd"), list("acbd")) == pytest.approx(4 / 6)
    assert kendall_tau([1, 2, 3], [1, 2, 3]) == 1.0
    assert kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0


def test_kendall_tau_uses_only_shared_items() -> None:
    # Shared 1, 2, 3; a orders them 1,2,3, b orders them 3,1,2:
    # (1,2) concordant, (1,3) and (2,3) discordant: (1 - 2) / 3.
    assert kendall_tau([1, 2, 3, 9], [3, 8, 1, 2]) == pytest.approx(-1 / 3)


def test_kendall_tau_is_undefined_below_two_shared_items() -> None:
    assert kendall_tau([1, 2], [3, 4]) is None
    assert kendall_tau([1, 2], [2, 3]) is None
    assert kendall_tau([], []) is None


def test_kendall_tau_agrees_with_scipy_on_permutations() -> None:
    rng = random.Random(5)
    for n in range(2, 15):
        a = list(range(n))
        b = rng.sample(a, n)
        expected = scipy_stats.kendalltau(a, [b.index(x) for x in a]).statistic
        assert kendall_tau(a, b) == pytest.approx(expected)


# --- percentiles and summaries ---------------------------------------------------------------


def test_percentile_matches_numpy() -> None:
    rng = random.Random(7)
    for n in (1, 2, 3, 10, 101):
        values = [rng.expovariate(0.1) for _ in range(n)]
        for q in (0, 1, 10, 25, 50, 75, 90, 99, 99.9, 100):
            assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_by_hand_and_errors() -> None:
    # [1,2,3,4]: p50 at position 1.5 → 2.5; p90 at 2.7 → 3 + 0.7 = 3.7.
    assert percentile([4, 1, 3, 2], 50) == 2.5
    assert percentile([4, 1, 3, 2], 90) == pytest.approx(3.7)
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="q must"):
        percentile([1.0], 101)


def test_summary() -> None:
    stats = summary([1.0, 2.0, 3.0, 4.0])
    assert stats["count"] == 4
    assert stats["mean"] == 2.5
    assert (stats["min"], stats["p50"], stats["max"]) == (1.0, 2.5, 4.0)
    assert stats["p99"] == pytest.approx(3.97)
    empty = summary([])
    assert empty["count"] == 0
    assert all(value is None for key, value in empty.items() if key != "count")


def test_noise_floor_is_the_rbo_distribution_of_the_pairs() -> None:
    pairs = [([1, 2, 3], [1, 2, 3])] * 3 + [([1, 2, 3], [1, 3, 2])] * 2
    floor = noise_floor(pairs)
    # RBO values 1, 1, 1, 0.955, 0.955: median 1; p10 at position 0.4 → 0.955.
    assert floor["count"] == 5
    assert floor["median"] == pytest.approx(1.0)
    assert floor["p10"] == pytest.approx(0.955)
    assert noise_floor([])["median"] is None


# --- verdict ---------------------------------------------------------------------------------

GOOD = SurfaceStats(
    comparisons=1000,
    realtime_errors=5,
    served=1000,
    fallbacks=10,
    realtime_p99_ms=20.0,
    rbo_median=0.6,
    noise_median=0.9,
    noise_samples=200,
)


def with_(**changes: Any) -> SurfaceStats:
    return attrs.evolve(GOOD, **changes)


def test_a_healthy_surface_is_ready_for_canary() -> None:
    outcome, reasons = verdict(GOOD, Thresholds())
    assert outcome == READY
    assert len(reasons) == 4  # error rate, fallback rate, p99, RBO vs noise: all passed
    assert any("0.50%" in r for r in reasons)  # the error rate, 5 of 1000


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"realtime_errors": 11}, "real-time error rate 1.10% above 1.00%"),
        ({"fallbacks": 21}, "fallback rate 2.10% above 2.00%"),
        ({"realtime_p99_ms": 50.5}, "real-time p99 50.5 ms above 50 ms"),
        ({"rbo_median": 0.44}, "beyond normal variation"),  # 0.44 < 0.5 * 0.9 = 0.45
    ],
)
def test_each_broken_rule_means_investigate(changes: dict[str, object], expected: str) -> None:
    outcome, reasons = verdict(with_(**changes), Thresholds())
    assert outcome == INVESTIGATE
    assert len(reasons) == 1
    assert expected in reasons[0]


def test_rules_at_their_threshold_pass() -> None:
    stats = with_(realtime_errors=10, fallbacks=20, realtime_p99_ms=50.0, rbo_median=0.45)
    assert verdict(stats, Thresholds())[0] == READY


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"comparisons": 99, "realtime_errors": 0}, "only 99 comparisons (at least 100)"),
        ({"noise_samples": 19}, "only 19 A/A samples"),
        ({"noise_median": None, "noise_samples": 0}, "only 0 A/A samples"),
        ({"rbo_median": None}, "no comparison where both paths answered"),
        ({"realtime_p99_ms": None}, "no real-time latency measured"),
    ],
)
def test_each_shortfall_means_not_enough_data(changes: dict[str, object], expected: str) -> None:
    outcome, reasons = verdict(with_(**changes), Thresholds())
    assert outcome == NOT_ENOUGH_DATA
    assert reasons == [r for r in reasons if expected in r]


def test_a_broken_rule_beats_a_shortfall_and_lists_both() -> None:
    outcome, reasons = verdict(with_(comparisons=10, realtime_errors=3), Thresholds())
    assert outcome == INVESTIGATE
    assert "error rate 30.00%" in reasons[0]
    assert "only 10 comparisons" in reasons[-1]


def test_without_a_required_noise_floor_the_rbo_rule_is_skipped() -> None:
    stats = with_(noise_median=None, noise_samples=0, rbo_median=0.01)
    outcome, reasons = verdict(stats, Thresholds(min_noise_samples=0))
    assert outcome == READY
    assert reasons[-1] == "no A/A noise floor: the RBO rule was not applied"


def test_a_zero_noise_floor_passes_the_rbo_rule() -> None:
    assert verdict(with_(rbo_median=0.0, noise_median=0.0), Thresholds())[0] == READY


def test_the_thresholds_are_configurable() -> None:
    bad = with_(realtime_errors=50, fallbacks=50, realtime_p99_ms=80.0, rbo_median=0.1)
    outcome, reasons = verdict(bad, Thresholds())
    assert (outcome, len(reasons)) == (INVESTIGATE, 4)
    lenient = Thresholds(
        max_error_rate=0.1, max_fallback_rate=0.1, max_p99_ms=100.0, min_rbo_vs_noise=0.1
    )
    assert verdict(bad, lenient)[0] == READY
    assert verdict(with_(comparisons=10), Thresholds(min_requests=10))[0] == INVESTIGATE  # 5/10


@pytest.mark.parametrize(
    "changes",
    [
        {"max_error_rate": 1.5},
        {"max_fallback_rate": -0.1},
        {"max_p99_ms": -1.0},
        {"min_requests": -1},
    ],
)
def test_thresholds_reject_impossible_values(changes: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must"):
        Thresholds(**changes)  # type: ignore[arg-type]
