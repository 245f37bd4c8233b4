"""A range sorted by its own field takes a shortcut (``NumericField.range_top``); it must
answer exactly what the general path and the brute force do.

The shortcut counts from bucket sizes and sorts only the buckets the top comes
from, so the cases that matter are: counter fields whose default (0) falls
inside or outside the range, numbers shadowing counters, edge buckets cut by
``lo``/``hi``, ties, discarded items, and more matches than the direct-sort
threshold.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from index import AllOf, Index, Range, Sort
from tests.index.brute import BruteIndex

COUNTERS = ("like",)
VALUES = st.sampled_from([0, 1, 2, 15, 16, 17, 48, 49, 50, 52, 1000, 1024, -3.5, 0.25])
bounds = st.none() | VALUES


@st.composite
def catalogue(draw: st.DrawFn) -> list[tuple[str, dict[str, float], dict[str, int], bool]]:
    size = draw(st.sampled_from([5, 40, 300, 5_000]))
    seed_values = draw(st.lists(VALUES, min_size=1, max_size=8))
    items = []
    for n in range(size):
        value = seed_values[n % len(seed_values)]
        numbers: dict[str, float] = {}
        counters: dict[str, int] = {}
        if n % 3 == 0:
            numbers["price"] = float(value)
        if n % 4 != 1:
            counters["like"] = abs(int(value))
        if n % 11 == 0:
            numbers["like"] = float(value)  # a number shadows the counter
        items.append((f"i{n}", numbers, counters, n % 13 == 5))
    return items


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    items=catalogue(),
    field=st.sampled_from(["like", "price"]),
    lo=bounds,
    hi=bounds,
    descending=st.booleans(),
    limit=st.sampled_from([0, 1, 7, 100, 10_000]),
)
def test_a_range_sorted_by_its_own_field_answers_like_the_general_path_and_brute_force(
    items: list[tuple[str, dict[str, float], dict[str, int], bool]],
    field: str,
    lo: float | None,
    hi: float | None,
    descending: bool,
    limit: int,
) -> None:
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    index = Index(counter_fields=COUNTERS)
    brute = BruteIndex(counter_fields=COUNTERS)
    for item_id, numbers, counters, discarded in items:
        for target in (index, brute):
            target.put(item_id, kind="pro", terms={}, numbers=numbers, counters=counters)
            if discarded:
                target.discard(item_id)
    query, sort = Range(field, lo, hi), Sort(field, descending)

    shortcut = index.search(query, limit=limit, sort=sort)
    general = index.search(AllOf((query,)), limit=limit, sort=sort)  # not a bare Range

    assert shortcut == general
    assert shortcut == brute.search(query, limit=limit, sort=sort)


def test_items_at_the_default_and_items_without_a_value_share_their_place_in_the_order() -> None:
    """Explicit zeros and never-counted items (0 by default) sort together, by first appearance."""
    index = Index(counter_fields=COUNTERS)
    brute = BruteIndex(counter_fields=COUNTERS)
    for n in range(12):
        counters = {"like": [0, 3][n % 2]} if n % 3 else {}
        for target in (index, brute):
            target.put(f"i{n}", kind="pro", terms={}, numbers={}, counters=counters)
    for descending in (True, False):
        for query in (Range("like", None, 2), Range("like", 0, None), Range("like", None, None)):
            sort = Sort("like", descending)
            expected = brute.search(query, limit=50, sort=sort)
            assert index.search(query, limit=50, sort=sort) == expected
            assert index.search(AllOf((query,)), limit=50, sort=sort) == expected
