"""A :class:`~index.column.Column` reads like a dict of values whichever form it is in.

Histories of sets, unsets and bulk loads over ids both near 0 and far out make
a column switch between sparse and dense every way it can; after each step
every read (``get``, ``take`` in any order or ascending, ``len``) agrees with a
plain dict. Separate tests pin the switching rule and the memory it bounds.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from index.column import RATIO, SHRINK, Column

# Clusters of ids: a few near 0, a block further out and a few far away, so that
# values at far ids make a column sparse and filling a block makes it dense.
ids = st.integers(0, 40) | st.integers(500, 700) | st.sampled_from([5_000, 70_000, 2**31])
values = st.sampled_from([0.0, -0.0, 1.0, -2.5, 1e300]) | st.floats(-1e6, 1e6, allow_nan=False)
#: NaN is no value: setting it removes one, and a bulk load skips it.
values_or_nan = values | st.just(math.nan)


@st.composite
def blocks(draw: st.DrawFn) -> tuple[str, list[int], list[float]]:
    """A bulk load of distinct ids, or the same ids set or unset one by one."""
    start = draw(st.sampled_from([0, 20, 500, 600]))
    count = draw(st.integers(1, 150))
    step = draw(st.sampled_from([1, 1, 2, 7]))
    block = list(range(start, start + count * step, step))
    value = draw(values)
    return draw(st.sampled_from(["load", "set", "unset"])), block, [value + n for n in block]


operations = st.one_of(
    st.tuples(st.just("set"), ids.map(lambda doc: [doc]), values_or_nan.map(lambda v: [v])),
    st.tuples(st.just("unset"), ids.map(lambda doc: [doc]), st.just([math.nan])),
    st.lists(ids, unique=True, max_size=30).flatmap(
        lambda docs: st.tuples(
            st.just("load"),
            st.just(docs),
            st.lists(values_or_nan, min_size=len(docs), max_size=len(docs)),
        )
    ),
    blocks(),
)


def as_ids(docs: list[int]) -> npt.NDArray[np.uint32]:
    return np.array(docs, dtype=np.uint32)


def expected(model: dict[int, float], docs: list[int]) -> list[float]:
    return [model.get(doc, math.nan) for doc in docs]


def same(got: npt.NDArray[np.float64], want: list[float]) -> bool:
    return bool(np.array_equal(got, np.array(want, dtype=float), equal_nan=True))


def assert_reads_like(column: Column, model: dict[int, float], probe: list[int]) -> None:
    assert len(column) == len(model)
    everything = sorted({*model, *probe, 0, 1, 41, 699, 701, 2**31 - 1})
    for doc in everything:
        got = column.get(doc)
        assert (math.isnan(got) and doc not in model) or got == model[doc]
    assert same(column.take(as_ids(everything), ascending=True), expected(model, everything))
    assert same(column.take(as_ids(everything[::-1])), expected(model, everything[::-1]))
    assert same(column.take(as_ids(probe)), expected(model, probe))
    few = sorted(set(probe))
    assert same(column.take(as_ids(few), ascending=True), expected(model, few))
    # Many ids (past a sparse column's dict lookups), more or fewer than it has values.
    for many in (sorted({*range(0, 720, 7), *everything}), list(range(0, 720, 9))):
        assert same(column.take(as_ids(many), ascending=True), expected(model, many))
        assert same(column.take(as_ids(many[::-1])), expected(model, many[::-1]))
    assert same(column.take(as_ids([]), ascending=True), [])


@settings(max_examples=300, deadline=None, database=None)
@given(
    history=st.lists(st.tuples(operations, st.booleans()), max_size=30),
    probe=st.lists(ids, max_size=20),
)
def test_a_column_reads_like_a_dict_through_any_history(
    history: list[tuple[tuple[str, list[int], list[float]], bool]], probe: list[int]
) -> None:
    """Read after some steps only: reads bring a sparse column's arrays up to date, so
    changes between reads pile up in different ways."""
    column = Column()
    model: dict[int, float] = {}
    for (op, docs, values_), read in history:
        if op == "load":
            column.load(as_ids(docs), np.array(values_, dtype=float))
            model.update((d, v) for d, v in zip(docs, values_, strict=True) if not math.isnan(v))
        else:
            for doc, value in zip(docs, values_, strict=True):
                if op == "set" and not math.isnan(value):
                    column.set(doc, value)
                    model[doc] = value
                elif op == "set":
                    column.set(doc, math.nan)
                    model.pop(doc, None)
                else:
                    column.unset(doc)
                    model.pop(doc, None)
        if read:
            assert_reads_like(column, model, probe)
    assert_reads_like(column, model, probe)


def test_a_sparse_column_reads_right_after_changes_between_reads() -> None:
    column = Column()
    far = [10_000 * n for n in range(1, 11)]
    column.load(as_ids(far), np.arange(10, dtype=float))
    model = {doc: float(n) for n, doc in enumerate(far)}
    assert_reads_like(column, model, far)
    column.unset(far[3])  # a hole in the sorted arrays …
    column.set(far[3], -3.0)  # … filled again
    column.set(far[4], -4.0)  # changed in place
    column.set(5, 5.0)  # pending
    column.unset(5)  # pending, then gone
    column.set(15_000, 1.5)  # pending
    model.update({far[3]: -3.0, far[4]: -4.0, 15_000: 1.5})
    assert not column.dense
    assert_reads_like(column, model, [*far, 5, 15_000])
    for n in range(200):  # an id that comes and goes, unread: what is pending stays bounded
        column.set(25_000, float(n))
        column.unset(25_000)
    column.set(35_000, 3.5)
    model[35_000] = 3.5
    assert column.nbytes < len(model) * 200
    assert_reads_like(column, model, [25_000, 35_000])


def test_a_sparse_column_turns_dense_once_it_holds_a_value_per_ratio_ids() -> None:
    column = Column()
    top = 100 * RATIO - 1
    column.set(top, 1.0)
    for doc in range(98):
        column.set(doc, float(doc))
    assert not column.dense  # 99 values for 1,600 ids
    column.set(98, 98.0)
    assert column.dense  # 100 values: one per RATIO ids
    assert column.nbytes == 8 * (top + 1)
    assert column.get(top) == 1.0
    assert column.get(50) == 50.0


def test_a_dense_column_turns_sparse_rather_than_grow_far_for_few_values() -> None:
    column = Column()
    for doc in range(100):
        column.set(doc, float(doc))
    assert column.dense
    column.set(10**6, -1.0)
    assert not column.dense
    assert len(column) == 101
    assert column.get(10**6) == -1.0
    assert column.get(99) == 99.0
    assert column.nbytes < 101 * 200


def test_a_dense_column_turns_sparse_when_most_values_go() -> None:
    column = Column()
    column.load(as_ids(list(range(1_000))), np.arange(1_000, dtype=float))
    model = {doc: float(doc) for doc in range(1_000)}
    assert column.dense
    for doc in range(1_000):
        if doc % 100:
            column.unset(doc)
            del model[doc]
        if not column.dense:
            break
    assert not column.dense
    assert len(model) * RATIO * SHRINK < 1_000 <= (len(model) + 1) * RATIO * SHRINK
    assert_reads_like(column, model, [0, 100, 999])


@pytest.mark.parametrize("top", [10**5 - 1, 10**6, 2**32 - 2])
def test_a_value_at_a_far_id_costs_bytes_not_megabytes(top: int) -> None:
    column = Column()
    column.set(top, 3.0)
    assert column.get(top) == 3.0
    assert not column.dense
    assert column.nbytes < 1_024  # dense, it would be 8 bytes times the id


def test_a_loaded_column_is_sparse_or_dense_by_the_same_rule() -> None:
    spread = Column()
    spread.load(as_ids(list(range(0, 10**6, 10**4))), np.ones(100))
    assert not spread.dense
    assert spread.nbytes < 100 * 200
    packed = Column()
    packed.load(as_ids(list(range(0, 10**5, RATIO))), np.ones(10**5 // RATIO))
    assert packed.dense
    assert packed.nbytes <= 8 * 10**5
