"""Examples of sorted searches: ties first-seen first, missing values last, counters at 0."""

from __future__ import annotations

import numpy as np

from index import EVERYTHING, Index, SearchResult, Sort
from index.numeric import DIRECT_CHECK_MAX
from tests.index.helpers import COUNTERS, ids, put


def sorting_index() -> Index:
    index = Index(counter_fields=COUNTERS)
    put(index, "a", numbers={"price": 5.0}, counters={"like": 3})
    put(index, "b", numbers={"price": 10.0})
    put(index, "c", counters={"like": 3})  # no price
    put(index, "d", numbers={"price": 5.0}, counters={"like": 9})
    put(index, "e", numbers={"price": 10.0}, counters={"like": 1})
    put(index, "f", numbers={"price": -0.0})
    put(index, "g", numbers={"price": 0.0})
    return index


def test_sort_descending_breaks_ties_first_seen_first_and_puts_missing_values_last() -> None:
    index = sorting_index()
    assert ids(index, {"all": []}, sort=Sort("price")) == ["b", "e", "a", "d", "f", "g", "c"]
    assert index.search(EVERYTHING, limit=3, sort=Sort("price")) == SearchResult(
        ids=["b", "e", "a"], total=7
    )


def test_sort_ascending_breaks_ties_first_seen_first_and_puts_missing_values_last() -> None:
    index = sorting_index()
    assert ids(index, {"all": []}, sort=Sort("price", descending=False)) == [
        "f",
        "g",
        "a",
        "d",
        "b",
        "e",
        "c",
    ]


def test_sort_by_a_counter_ranks_uncounted_items_at_0() -> None:
    index = sorting_index()
    assert ids(index, {"all": []}, sort=Sort("like")) == ["d", "a", "c", "e", "b", "f", "g"]
    assert ids(index, {"all": []}, sort=Sort("like", descending=False)) == [
        "b",
        "f",
        "g",
        "e",
        "a",
        "c",
        "d",
    ]


def test_sort_orders_only_the_matches() -> None:
    index = sorting_index()
    cheap = {"range": ["price", None, 5]}
    assert ids(index, cheap, sort=Sort("like")) == ["d", "a", "f", "g"]


def test_sort_over_many_matches_agrees_with_a_full_sort() -> None:
    """More matches than ``DIRECT_CHECK_MAX``: ``order`` walks the buckets."""
    index = Index(counter_fields=COUNTERS)
    rng = np.random.default_rng(7)
    expected = []
    for n in range(DIRECT_CHECK_MAX + 500):
        likes = int(rng.integers(0, 60))
        price = float(rng.choice([-1.0, -0.0, 0.0, 15.0, 16.0, 49.5, 50.0, 1e6]))
        if n % 3 == 0:
            put(index, f"i{n}", numbers={"price": price})
            expected.append((0, price, n))
        else:
            put(index, f"i{n}", numbers={"price": price}, counters={"like": likes})
            expected.append((likes, price, n))
    by_like = [f"i{n}" for _, _, n in sorted(expected, key=lambda row: (-row[0], row[2]))]
    by_price = [f"i{n}" for _, _, n in sorted(expected, key=lambda row: (row[1], row[2]))]

    assert index.search(EVERYTHING, limit=25, sort=Sort("like")).ids == by_like[:25]
    assert index.search(EVERYTHING, limit=len(expected), sort=Sort("like")).ids == by_like
    ascending = Sort("price", descending=False)
    assert index.search(EVERYTHING, limit=len(expected), sort=ascending).ids == by_price
