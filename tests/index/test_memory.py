"""The index's memory is bounded by what it stores, not by fields times the catalogue.

One item with thousands of distinct numbers at the highest of 100,000 ids once
cost 8 bytes per id per field (~4.8 GB here) and got the server OOM-killed, at
every restart too. Measured with ``tracemalloc``, which traces numpy's arrays.
Each test first puts a single field at the far id and fails there, after less
than a megabyte, if a field still costs memory per id.
"""

from __future__ import annotations

import contextlib
import tracemalloc
from collections.abc import Iterator

import numpy as np

from index import EVERYTHING, Document, Index, Near, Range, Sort

RESERVED = 100_000
LAST = f"i{RESERVED - 1}"
PLAIN = 4_000
POINTS = 500  # f{n}.lat and f{n}.lon: 1,000 more numeric fields and 500 geo fields
#: One numeric field at the highest id: a dense array would take 800 KB.
ONE_FIELD_BUDGET = 64 * 1024
#: All of them (4,000 + 1,000 numeric, 500 geo): dense arrays would take 4.8 GB.
MANY_FIELDS_BUDGET = 32 * 1024 * 1024


def many_numbers() -> dict[str, float]:
    numbers = {f"n{n}": float(n) for n in range(PLAIN)}
    for n in range(POINTS):
        numbers[f"f{n}.lat"], numbers[f"f{n}.lon"] = 30.0 + n / 1000.0, -97.0
    return numbers


def reserved_index() -> Index:
    index = Index(counter_fields=("like",))
    for n in range(RESERVED):
        index.reserve(f"i{n}")
    return index


@contextlib.contextmanager
def tracing() -> Iterator[None]:
    tracemalloc.start()
    try:
        yield
    finally:
        tracemalloc.stop()


def current() -> int:
    """Traced memory now; resets the peak."""
    tracemalloc.reset_peak()
    return tracemalloc.get_traced_memory()[0]


def growth(baseline: int) -> int:
    """The peak of traced memory since :func:`current` returned ``baseline``, above it."""
    return tracemalloc.get_traced_memory()[1] - baseline


def test_many_numeric_and_geo_fields_on_one_far_item_take_megabytes_not_gigabytes() -> None:
    index = reserved_index()
    index.put(LAST, terms={}, numbers={}, counters={})  # per-id arrays of the index itself
    numbers = many_numbers()
    with tracing():
        baseline = current()
        index.put(LAST, terms={}, numbers={"probe": 1.0}, counters={})
        assert growth(baseline) < ONE_FIELD_BUDGET

        baseline = current()
        index.put(LAST, terms={}, numbers=numbers, counters={"like": 3})
        assert growth(baseline) < MANY_FIELDS_BUDGET

    stats = index.statistics()
    assert (stats.numeric_fields, stats.geo_fields) == (PLAIN + 2 * POINTS + 1, POINTS)
    assert index.search(Range("n7", 7.0, 7.0), limit=10).ids == [LAST]
    assert index.search(Near("f3", 30.003, -97.0, 1.0), limit=10).ids == [LAST]
    assert index.search(EVERYTHING, limit=1, sort=Sort("n9", descending=True)).ids == [LAST]


def test_rebuilding_an_index_with_many_fields_on_one_far_item_takes_megabytes() -> None:
    """The startup rebuild (:meth:`Index.load`) of the same item."""
    probe = reserved_index()
    with tracing():
        baseline = current()
        probe.load([Document(LAST, None, {}, {"probe": 1.0, "p.lat": 1.0, "p.lon": 2.0}, {})])
        assert growth(baseline) < 3 * ONE_FIELD_BUDGET
    del probe

    index = reserved_index()
    document = Document(LAST, None, {}, many_numbers(), {"like": 3})
    with tracing():
        baseline = current()
        index.load([document], owned=True)
        assert growth(baseline) < MANY_FIELDS_BUDGET

    assert index.statistics().geo_fields == POINTS
    assert index.search(Near("f499", 30.499, -97.0, 1.0), limit=10).ids == [LAST]
    docs = np.array([RESERVED - 1, 0], dtype=np.uint32)
    assert index.values("n12", docs).tolist()[0] == 12.0
    assert index.values("like", docs).tolist() == [3.0, 0.0]
