"""The replay's real-time baselines and its cohort table."""

from __future__ import annotations

import math
import random
from collections import defaultdict
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from matchlight.evaluation.baselines import HALF_LIFE_S, ItemKnn, RealtimePopularity
from matchlight.evaluation.report import cohort_table, cohort_table_html, format_cohorts

DAY = 86_400.0


def _like(user: str, item: str, ts: float, kind: str = "like") -> dict[str, Any]:
    return {"type": kind, "user": user, "item": item, "ts": ts}


def test_popularity_decays_with_a_seven_day_half_life() -> None:
    pop = RealtimePopularity()
    for who in ("a", "b", "c"):
        pop.observe(_like(who, "old", 0.0))  # 3 likes, two half-lives ago: worth 0.75
    pop.observe(_like("d", "fresh", 2 * HALF_LIFE_S))  # worth 1
    pop.observe(_like("e", "viewed", 2 * HALF_LIFE_S, "view"))  # not positive: not counted
    assert pop.recommend(set(), 10) == ["fresh", "old"]
    assert pop.recommend({"fresh"}, 10) == ["old"]
    pop.observe(_like("f", "old", 2 * HALF_LIFE_S))  # 1.75 now
    assert pop.recommend(set(), 1) == ["old"]


def test_popularity_never_overflows_however_late_the_stream() -> None:
    pop = RealtimePopularity()
    for i in range(50):
        pop.observe(_like(f"u{i}", f"i{i % 3}", 1e13 + i * DAY))  # 2^(t/half-life) is inf
    assert all(math.isfinite(v) for v in pop.scores())
    # i0 and i1 have 17 likes each, i1's a day later each time; i2 has 16.
    assert pop.recommend(set(), 3) == ["i1", "i0", "i2"]


def _brute_knn(events: list[dict[str, Any]], who: str, seen: set[str], k: int) -> list[str]:
    """The rule as written, with dicts: pairs with every earlier like; last 20 likes score."""
    cooc: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    likes: dict[str, list[str]] = defaultdict(list)
    for e in events:
        if e["type"] == "like":
            for y in likes[e["user"]]:
                cooc[e["item"]][y] += 1
                cooc[y][e["item"]] += 1
            likes[e["user"]].append(e["item"])
    scores: dict[str, float] = defaultdict(float)
    for y in likes[who][-20:]:
        for c, w in cooc[y].items():
            scores[c] += w
    return [c for c, w in sorted(scores.items(), key=lambda p: -p[1]) if c not in seen and w > 0][
        :k
    ]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 14), st.sampled_from(["like", "like", "view"])),
        min_size=1,
        max_size=120,
    ),
    st.integers(0, 6),
)
def test_item_knn_scores_equal_the_pairwise_co_occurrence_rule(
    stream: list[tuple[int, int, str]], asker: int
) -> None:
    """Lᵀ(L r) gives the scores of the rule "add 1 per pair with every earlier like"."""
    pop = RealtimePopularity()
    knn = ItemKnn(pop)
    events = [_like(f"u{u}", f"i{i}", float(n), kind) for n, (u, i, kind) in enumerate(stream)]
    for e in events:
        pop.observe(e)
        knn.observe(e)
    who = f"u{asker}"
    seen = {e["item"] for e in events if e["user"] == who}
    got = knn.recommend(who, seen, 10)
    want = _brute_knn(events, who, seen, 10)
    # Same items with positive co-occurrence, in score order (ties may differ in order).
    assert set(got[: len(want)]) == set(want)
    assert not set(got) & seen
    assert len(got) == len(set(got))


def test_item_knn_fills_with_real_time_popularity_when_few_items_score() -> None:
    pop = RealtimePopularity()
    knn = ItemKnn(pop)
    events = [
        _like("a", "x", 1.0),
        _like("a", "y", 2.0),
        _like("b", "x", 3.0),
        *(_like(f"p{i}", "hit", 4.0 + i) for i in range(3)),
        _like("c", "z", 10.0),
    ]
    for e in events:
        pop.observe(e)
        knn.observe(e)
    assert knn.recommend("b", {"x"}, 3) == ["y", "hit", "z"]
    assert knn.recommend("nobody", set(), 2) == ["hit", "x"]  # no likes: popularity


def _results(hits: dict[str, float]) -> dict[str, Any]:
    def entry(h: float) -> dict[str, Any]:
        row = {"hit_rate@10": h, "ndcg@10": h / 2, "requests": 100}
        return {
            **row,
            "by_activity": {b: dict(row) for b in ("<10", "10-50", ">50")},
            "by_cohort": {c: dict(row) for c in ("known", "new")},
        }

    return {name: entry(h) for name, h in hits.items()}


def test_the_cohort_table_rates_every_system_against_the_better_real_time_baseline() -> None:
    results = _results(
        {
            "realtime": 0.12,
            "batch": 0.05,
            "popularity": 0.04,
            "realtime_popularity": 0.03,
            "item_knn": 0.1,
        }
    )
    table = cohort_table(results, 10)
    assert [row["row"] for row in table] == ["all", "<10", "10-50", ">50", "known", "new"]
    first = table[0]
    assert first["best_baseline"] == "item_knn"
    assert first["systems"]["realtime"]["ratio_to_best_baseline"] == 1.2
    assert first["systems"]["batch"]["ratio_to_best_baseline"] == 0.5
    text = format_cohorts(table, 10)
    assert "0.120 (1.20x)" in text
    assert "new since the cut" in text
    page = cohort_table_html(results)
    assert page.startswith("<table class='replay-cohorts'>")
    assert page.rstrip().endswith("</table>")
    assert "<td class='best above'>0.120 (1.20x)</td>" in page
    assert page.count("<tr>") == 1 + 6


def test_a_zero_baseline_gives_no_ratio() -> None:
    results = _results({"realtime": 0.1, "realtime_popularity": 0.0, "item_knn": 0.0})
    assert cohort_table(results, 10)[0]["systems"]["realtime"]["ratio_to_best_baseline"] is None
    assert "0.100" in cohort_table_html(results)


def test_random_streams_never_list_a_seen_item() -> None:
    rng = random.Random(3)
    pop = RealtimePopularity()
    knn = ItemKnn(pop)
    seen: dict[str, set[str]] = defaultdict(set)
    for n in range(2000):
        e = _like(f"u{rng.randrange(30)}", f"i{rng.randrange(60)}", float(n))
        mine = seen[e["user"]]
        assert not set(knn.recommend(e["user"], mine, 10)) & mine
        assert not set(pop.recommend(mine, 10)) & mine
        pop.observe(e)
        knn.observe(e)
        mine.add(e["item"])
