"""Incremental index equals rebuilt index equals brute force, for any history of puts.

For a generated history over a pool of 1 to 30 items (puts: fresh, re-put with
the same ``terms`` object or an equal copy, with equal numbers and new counters
as ingest does; discards; bare reservations), one :class:`Index` maintained
through the whole history, an index rebuilt from the final documents (ids
reserved in first-seen order, then puts in any order), one rebuilt with
:meth:`Index.load`, and :class:`~tests.index.brute.BruteIndex` answer every
generated query alike: the same ids and total, or all a :class:`QueryError`.

Another does the same over 400 reserved ids, putting and discarding runs of
items at once, so that fields go from a few values at high ids (sparse
columns) to many (dense) and back; see :mod:`index.column`.

A last property does the same over ~6000 documents, where range filters, sorted
top-k and ``near`` take the paths kept for many candidates (more than
``DIRECT_CHECK_MAX`` for numbers; the geo threshold is lower), with some fields
that only a few percent of the items have."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from index import SearchResult, parse, parse_sort
from index.numeric import DIRECT_CHECK_MAX
from tests.index.histories import (
    COUNTS,
    EDGE_VALUES,
    IDS,
    STANDARD_COUNTERS,
    Discard,
    Op,
    Put,
    Reserve,
    Run,
    Search,
    Subject,
    assert_agrees_with_brute_force,
    assert_same_structure,
    brute_matched,
    counter_field_choices,
    histories,
    matched,
    operations,
    outcome,
    puts,
    rebuilt_and_loaded,
    searches,
)


@settings(max_examples=110, deadline=None, database=None)
@given(
    counter_fields=counter_field_choices,
    ops=histories,
    queries=st.lists(searches, min_size=1, max_size=8),
    data=st.data(),
)
def test_incremental_equals_rebuilt_equals_brute_force(
    counter_fields: tuple[str, ...], ops: list[Op], queries: list[Search], data: st.DataObject
) -> None:
    subject = Subject(counter_fields)
    for op in ops:
        subject.apply(op)
    rebuilt, loaded = rebuilt_and_loaded(subject, counter_fields, data)

    for index in (subject.index, rebuilt, loaded):
        assert_agrees_with_brute_force(index, subject.brute, queries)
    for search in queries:
        assert matched(subject.index, search.query) == brute_matched(subject.brute, search.query)


@settings(max_examples=60, deadline=None, database=None)
@given(
    counter_fields=counter_field_choices,
    before=histories,
    after=st.lists(operations(IDS[:8]), min_size=1, max_size=25),
    queries=st.lists(searches, min_size=1, max_size=6),
)
def test_an_index_loaded_in_bulk_stays_equal_to_brute_force_as_it_changes(
    counter_fields: tuple[str, ...], before: list[Op], after: list[Op], queries: list[Search]
) -> None:
    subject = Subject(counter_fields)
    for op in before:
        subject.apply(op)
    subject.index = subject.loaded(counter_fields, sorted(subject.brute.docs))
    for op in after:
        subject.apply(op)

    assert_agrees_with_brute_force(subject.index, subject.brute, queries)


@settings(max_examples=80, deadline=None, database=None)
@given(
    counter_fields=counter_field_choices,
    ops=st.lists(operations(IDS[:3]), min_size=5, max_size=40),
    queries=st.lists(searches, min_size=1, max_size=4),
)
def test_every_prefix_of_a_history_agrees_with_brute_force(
    counter_fields: tuple[str, ...], ops: list[Op], queries: list[Search]
) -> None:
    """Checked after every operation on a few items, so each put replaces a previous one."""
    subject = Subject(counter_fields)
    for op in ops:
        subject.apply(op)
        assert_agrees_with_brute_force(subject.index, subject.brute, queries)


# -- fields crossing between sparse and dense ------------------------------------------------

# With 400 ids, a field held by fewer than one item in 16 up to its highest id is
# sparse: one value at a high id is, a run of 30 or more values is dense (RATIO).
SPREAD = 400
SPREAD_IDS = [f"s{n:03d}" for n in range(SPREAD)]


@st.composite
def runs(draw: st.DrawFn) -> Run:
    start = draw(st.sampled_from([0, 5, 200, 330]) | st.integers(0, SPREAD - 1))
    count = draw(st.sampled_from([3, 12, 30, 70]) | st.integers(1, 120))
    put = draw(st.none() | puts(SPREAD_IDS[:1]))
    return Run(items=tuple(SPREAD_IDS[start : start + count]), put=put)


spread_operations = st.one_of(
    runs(),
    runs(),
    operations(SPREAD_IDS[-30:]),  # single items at high ids: a few values make a sparse field
    operations(SPREAD_IDS[:10]),
)


@settings(max_examples=80, deadline=None, database=None)
@given(
    counter_fields=counter_field_choices,
    ops=st.lists(spread_operations, max_size=14),
    queries=st.lists(searches, min_size=1, max_size=4),
    data=st.data(),
)
def test_fields_crossing_between_sparse_and_dense_agree_with_brute_force(
    counter_fields: tuple[str, ...], ops: list[Op], queries: list[Search], data: st.DataObject
) -> None:
    """Checked after every operation, as each may switch a field's columns either way."""
    subject = Subject(counter_fields)
    for item_id in SPREAD_IDS:
        subject.apply(Reserve(item=item_id))
    for op in ops:
        subject.apply(op)
        for search in queries:
            assert outcome(subject.index, search) == outcome(subject.brute, search)
    rebuilt, loaded = rebuilt_and_loaded(subject, counter_fields, data)

    for index in (subject.index, rebuilt, loaded):
        assert_agrees_with_brute_force(index, subject.brute, queries)


# -- many documents: the paths for many candidates ------------------------------------------

BULK = 6_000
BULK_IDS = [f"d{n:04d}" for n in range(BULK)]
BULK_CENTRES = ((30.27, -97.74), (0.0, 179.7), (0.0, -179.7), (45.0, 10.0), (89.5, 0.0))


def bulk_documents(seed: int) -> list[dict[str, Any]]:
    """``BULK`` documents: most share a city and a kind; numbers and counters vary."""
    rng = np.random.default_rng(seed)
    values = np.array([*EDGE_VALUES, *COUNTS], dtype=float)
    docs = []
    for _ in range(BULK):
        numbers_: dict[str, float] = {}
        if rng.random() < 0.7:
            numbers_["price"] = float(
                rng.choice(values) if rng.random() < 0.5 else rng.lognormal(3.0, 2.0)
            )
        if rng.random() < 0.5:
            numbers_["rating"] = float(rng.normal(0.0, 20.0))
        if rng.random() < 0.05:
            numbers_["like"] = float(rng.choice(values))
        if rng.random() < 0.85:
            lat, lon = BULK_CENTRES[rng.integers(len(BULK_CENTRES))]
            lon = float(lon + rng.uniform(-0.6, 0.6))
            lon = lon - 360.0 if lon > 180.0 else lon + 360.0 if lon < -180.0 else lon
            if rng.random() < 0.02:
                lon = float(rng.choice([180.0, -180.0]))
            lat = min(90.0, float(lat + rng.uniform(-0.6, 0.6)))
            numbers_["loc.lat"], numbers_["loc.lon"] = lat, lon
        # Fields that few items have: kept sparse (fewer than one item in RATIO).
        if rng.random() < 0.02:
            numbers_["rare"] = float(rng.choice(values) if rng.random() < 0.5 else rng.normal())
        if rng.random() < 0.02:
            lat, lon = BULK_CENTRES[rng.integers(len(BULK_CENTRES))]
            numbers_["spot.lat"] = min(90.0, float(lat + rng.uniform(-0.6, 0.6)))
            numbers_["spot.lon"] = math.remainder(float(lon + rng.uniform(-0.6, 0.6)), 360.0)
        counters_: dict[str, int] = {}
        if rng.random() < 0.6:
            counters_["like"] = int(rng.choice(COUNTS) if rng.random() < 0.5 else rng.poisson(40))
        if rng.random() < 0.5:
            counters_["view"] = int(rng.poisson(200))
        if rng.random() < 0.1:
            counters_["share"] = int(rng.integers(0, 60))
        docs.append(
            {
                "kind": "pro" if rng.random() < 0.85 else "job",
                "terms": {
                    "city": ("a",) if rng.random() < 0.9 else ("b",),
                    "skills": tuple(sorted({str(s) for s in rng.choice(list("abcd"), 2)})),
                },
                "numbers": numbers_,
                "counters": counters_,
            }
        )
    return docs


# Queries whose candidates are (nearly) every document, so each takes the bulk path.
BULK_SEARCHES = [
    ({"range": ["like", 50, None]}, ["like", "desc"]),
    ({"range": ["like", None, 10]}, ["like", "asc"]),
    ({"range": ["like", None, None]}, "view"),
    ({"range": ["price", None, 52]}, ["price", "asc"]),
    ({"range": ["price", None, None]}, ["rating", "desc"]),
    ({"range": ["rating", -0.0, 16]}, ["price", "desc"]),
    ({"range": ["share", None, 0]}, ["share", "desc"]),
    ({"range": ["rating", 1e9, None]}, None),  # no bucket in range, no default
    ({"all": [{"term": ["city", "a"]}, {"range": ["price", 15, 1e6]}]}, ["like", "desc"]),
    ({"all": [{"term": ["kind", "pro"]}, {"not": {"range": ["view", 200, None]}}]}, None),
    ({"near": ["loc", 30.27, -97.74, 40.0]}, ["price", "asc"]),
    ({"near": ["loc", 0.0, 180.0, 60.0]}, None),
    ({"near": ["loc", 0.0, -179.95, 25.0]}, ["rating", "asc"]),
    ({"near": ["loc", 45.2, 10.1, 3000.0]}, None),
    ({"near": ["loc", 10.0, 0.0, 10_000.0]}, None),  # wider than a hemisphere: every point checked
    ({"near": ["loc", 89.0, 0.0, 500.0]}, None),  # around the pole
    ({"near": ["loc", 89.95, 0.0, 2.0]}, None),  # near the pole: points at every longitude
    ({"near": ["loc", 89.5, 120.0, 20.0]}, ["price", "desc"]),
    ({"all": [{"term": ["city", "a"]}, {"near": ["loc", 45.0, 10.0, 55.0]}]}, ["like", "asc"]),
    # Centred in a grid cell, so whole cells lie inside: they must still be cut to city a.
    ({"all": [{"term": ["city", "a"]}, {"near": ["loc", 45.25, 10.25, 60.0]}]}, None),
    ({"all": []}, ["like", "desc"]),
    ({"all": []}, ["price", "asc"]),
    ({"not": {"term": ["skills", "a"]}}, ["share", "asc"]),
    # Sparse fields: few values among many candidates, and the other way round.
    ({"all": []}, ["rare", "desc"]),
    ({"range": ["rare", None, 16]}, ["rare", "asc"]),
    ({"all": [{"term": ["city", "a"]}, {"range": ["rare", 0.5, None]}]}, ["price", "desc"]),
    ({"range": ["price", 1, None]}, ["rare", "asc"]),
    ({"near": ["spot", 30.27, -97.74, 80.0]}, ["rare", "desc"]),
    ({"all": [{"term": ["kind", "pro"]}, {"near": ["spot", 0.0, 180.0, 60.0]}]}, None),
    ({"near": ["spot", 10.0, 0.0, 10_000.0]}, ["like", "desc"]),
]


# No shrinking: each example builds thousands of documents, and shrinking one takes minutes.
@settings(
    max_examples=3,
    deadline=None,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    seed=st.integers(0, 2**32 - 1),
    updates=st.lists(
        operations([*BULK_IDS[:40], "new-1", "new-2"]),
        min_size=5,
        max_size=30,
    ),
    queries=st.lists(searches, max_size=6),
)
def test_many_documents_agree_with_brute_force(
    seed: int, updates: list[Op], queries: list[Search]
) -> None:
    counter_fields = STANDARD_COUNTERS
    subject = Subject(counter_fields)
    for item_id, document in zip(BULK_IDS, bulk_documents(seed), strict=True):
        subject.apply(Put(item=item_id, terms_from="fresh", **document))
    # Move a block of items between buckets (49 -> 50 likes, 15 -> 16, 0 -> -0.0 …).
    for n, item_id in enumerate(BULK_IDS[100:400]):
        doc = subject.brute.docs[item_id]
        counters_ = {**doc.counters, "like": COUNTS[n % len(COUNTS)]}
        numbers_ = {**doc.numbers, "price": EDGE_VALUES[n % len(EDGE_VALUES)]}
        subject.apply(
            Put(
                item=item_id,
                kind=doc.kind,
                terms_from="same",
                terms=doc.terms,
                numbers=numbers_,
                counters=counters_,
            )
        )
    for item_id in BULK_IDS[400:600]:
        subject.apply(Discard(item=item_id))
    for op in updates:
        subject.apply(op)
    rebuilt = subject.rebuilt(counter_fields, sorted(subject.brute.docs))
    loaded = subject.loaded(counter_fields, sorted(subject.brute.docs))
    indexes = (subject.index, rebuilt, loaded)

    assert len(subject.index) > DIRECT_CHECK_MAX
    for index in indexes:
        assert_same_structure(index, subject.brute)
    sorted_totals = []
    for raw, raw_sort in BULK_SEARCHES:
        query, sort = parse(raw), None if raw_sort is None else parse_sort(raw_sort)
        everything = subject.brute.search(query, limit=BULK, sort=sort)
        if sort is not None:
            sorted_totals.append(everything.total)
        for limit in (0, 10, BULK):
            search = Search(query=query, sort=sort, limit=limit)
            expected = SearchResult(ids=everything.ids[:limit], total=everything.total)
            for index in indexes:
                assert outcome(index, search) == expected
    for search in queries:
        answer = outcome(subject.brute, search)
        for index in indexes:
            assert outcome(index, search) == answer
    # The bulk paths were taken: sorts over more matches than a direct check takes.
    assert max(sorted_totals) > DIRECT_CHECK_MAX
