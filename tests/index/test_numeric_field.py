"""The NumericField under range filters and sorts: bucket keys, set/unset, select/keep,
order; and the column values the index reads for any ids."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from index import Index
from index.numeric import NumericField, bucket_key
from tests.index.helpers import COUNTERS, put

SAMPLE_FLOATS = sorted(
    [
        -1.7e308,
        -1e6,
        -52.0,
        -51.9,
        -50.0,
        -48.0,
        -16.0,
        -15.0,
        -1.0,
        -0.5,
        -5e-324,
        -0.0,
        0.0,
        5e-324,
        2.2e-308,
        0.25,
        0.28125,
        0.5,
        1.0,
        15.0,
        16.0,
        47.99,
        48.0,
        50.0,
        51.99,
        52.0,
        1000.0,
        1024.0,
        1e6,
        1.7e308,
    ]
)


def test_bucket_keys_are_ordered_like_a_sample_of_values() -> None:
    keys = [bucket_key(value) for value in SAMPLE_FLOATS]
    assert keys == sorted(keys)


@settings(max_examples=300, database=None)
@given(
    a=st.floats(allow_nan=False, allow_infinity=False),
    b=st.floats(allow_nan=False, allow_infinity=False),
)
def test_bucket_keys_are_ordered_like_any_values(a: float, b: float) -> None:
    low, high = min(a, b), max(a, b)
    assert bucket_key(low) <= bucket_key(high)


def test_minus_zero_and_zero_share_a_bucket() -> None:
    assert bucket_key(-0.0) == bucket_key(0.0)


def test_integers_below_16_get_a_bucket_each() -> None:
    assert len({bucket_key(float(n)) for n in range(16)}) == 16


@pytest.mark.parametrize("value", [48.0, 50.0, 1000.0, 0.25, 1e-300, -49.0, -1e6])
def test_a_bucket_spans_at_most_an_eighth_of_an_octave(value: float) -> None:
    assert bucket_key(value) != bucket_key(value * 1.125)
    assert bucket_key(value) == bucket_key(math.nextafter(value, math.copysign(math.inf, value)))


def test_a_numeric_field_sets_moves_and_unsets_values() -> None:
    field = NumericField("price")
    field.set(3, 49.0)
    field.set(3, 50.0)  # the same bucket
    field.set(3, 16.0)  # another bucket
    field.set(5000, -1.0)  # beyond the initial array
    assert field.get(3) == 16.0
    assert field.get(5000) == -1.0
    assert field.get(4) is None
    assert field.get(10**6) is None
    assert len(field) == 2
    field.unset(3)
    field.unset(3)
    assert field.get(3) is None
    assert list(field.select(None, None, BitMap(range(6000)))) == [5000]


def test_a_numeric_field_selects_and_keeps_values_in_range() -> None:
    field = NumericField("like", default=0.0)
    values = {0: 49.0, 1: 50.0, 2: 52.0, 3: -0.0, 4: 15.0, 5: 16.0, 6: -3.0}
    for doc, value in values.items():
        field.set(doc, value)
    universe = BitMap(range(10))  # 7, 8 and 9 have the default
    cases = [((50.0, None), [1, 2]), ((None, 0.0), [3, 6, 7, 8, 9]), ((15.0, 49.0), [0, 4, 5])]
    for (lo, hi), expected in cases:
        assert list(field.select(lo, hi, universe)) == expected
        assert list(field.keep(universe, lo, hi)) == expected
    assert list(field.select(None, None, BitMap([1, 8]))) == [1, 8]


def test_a_numeric_field_without_default_matches_only_items_with_values() -> None:
    field = NumericField("price")
    field.set(2, 0.0)
    universe = BitMap(range(5))
    assert list(field.select(None, 0.0, universe)) == [2]
    assert list(field.keep(universe, None, None)) == [2]


def test_a_numeric_field_orders_by_value_then_id_with_valueless_last() -> None:
    field = NumericField("price")
    for doc, value in {5: 2.0, 1: 2.0, 3: 7.0, 4: -0.0, 2: 0.0}.items():
        field.set(doc, value)
    matches = BitMap(range(8))
    assert field.order(matches, 100, descending=True) == [3, 1, 5, 2, 4, 0, 6, 7]
    assert field.order(matches, 100, descending=False) == [2, 4, 1, 5, 3, 0, 6, 7]
    assert field.order(matches, 2, descending=False) == [2, 4]
    assert field.order(matches, 0, descending=False) == []


def test_a_counted_numeric_field_orders_valueless_items_at_the_default() -> None:
    field = NumericField("like", default=0.0)
    field.set(1, 3.0)
    field.set(2, -1.0)
    assert field.order(BitMap(range(4)), 10, descending=True) == [1, 0, 3, 2]


@pytest.mark.parametrize("padding", [0, 3_000])
def test_values_reads_any_ids_in_any_order_with_the_default_where_missing(padding: int) -> None:
    """With padding, the items sit at high ids that few have values for: sparse columns."""
    index = Index(counter_fields=COUNTERS)
    for n in range(padding):
        index.reserve(f"pad{n}")
    put(index, "a", numbers={"price": 5.0, "rare": -1.0}, counters={"like": 2})
    put(index, "b", numbers={"price": 7.0}, counters={"share": 4})
    index.reserve("c")  # seen, never searchable
    a, b, c = (index.reserve(item) for item in "abc")
    docs = np.array([c, b, a, 0, b, c + 10**6], dtype=np.uint32)
    nan = math.nan
    expected = {
        "price": [nan, 7.0, 5.0, nan, 7.0, nan],
        "rare": [nan, nan, -1.0, nan, nan, nan],
        "like": [0.0, 0.0, 2.0, 0.0, 0.0, 0.0],
        "share": [0.0, 4.0, 0.0, 0.0, 4.0, 0.0],  # counted by b: a counter field
        "view": [0.0] * 6,  # a standard counter no item has
        "nothing": [nan] * 6,
    }
    if padding == 0:
        expected["price"][3], expected["rare"][3], expected["like"][3] = 5.0, -1.0, 2.0  # "a"
    for field, values in expected.items():
        assert np.array_equal(index.values(field, docs), values, equal_nan=True), field
    assert index.values("price", np.array([], dtype=np.uint32)).tolist() == []
