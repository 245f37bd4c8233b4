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
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from index import (
    EVERYTHING,
    Document,
    Index,
    Near,
    Query,
    QueryError,
    SearchResult,
    Sort,
    parse,
    parse_sort,
)
from index.numeric import DIRECT_CHECK_MAX
from tests.index.brute import BruteIndex

IDS = [f"i{n:02d}" for n in range(30)]
KINDS = ("pro", "job")
TERM_FIELDS = ("city", "skills", "level")
TERM_VALUES = ("a", "b", "c", "d")
STANDARD_COUNTERS = ("like", "view")
# "like" in numbers shadows the counter; "share" is a counter field only while counted;
# a counter "loc.lon" is a numeric field but never half of a point (only numbers make points).
NUMBER_FIELDS = ("price", "rating", "like")
COUNTER_NAMES = ("like", "view", "share", "loc.lon")
# Bucket edges, for buckets of an eighth or a sixteenth of an octave: small integers get a
# bucket each (below 16 or 32); then [48, 52) or [48, 50) and [50, 52).
EDGE_VALUES = (
    0.0,
    -0.0,
    0.5,
    1.0,
    15.0,
    16.0,
    31.0,
    32.0,
    48.0,
    49.999,
    50.0,
    52.0,
    1e6,
    -1.0,
    -50.0,
)
COUNTS = (0, 1, 2, 15, 16, 31, 32, 49, 50, 51, 52, 1_000)
# Clusters, so that `near` queries find something: a city, both sides of the
# antimeridian, and both poles.
CENTRES = ((30.27, -97.74), (0.0, 179.9), (0.0, -179.9), (89.9, 0.0), (-89.9, 45.0))
EXACT_POINTS = ((0.0, 180.0), (0.0, -180.0), (90.0, 0.0), (-90.0, 0.0), (30.27, -97.74))

numbers_values = st.sampled_from(EDGE_VALUES) | st.floats(-1e7, 1e7, allow_nan=False)
counts = st.sampled_from(COUNTS) | st.integers(0, 10**6)
limits = st.sampled_from([0, 1, 2, 5, 10, 1_000])


@st.composite
def points(draw: st.DrawFn) -> tuple[float, float]:
    if draw(st.booleans()):
        return draw(st.sampled_from(EXACT_POINTS))
    lat, lon = draw(st.sampled_from(CENTRES))
    lat = min(90.0, max(-90.0, lat + draw(st.floats(-0.3, 0.3))))
    lon += draw(st.floats(-0.3, 0.3))
    return lat, lon - 360.0 if lon > 180.0 else lon + 360.0 if lon < -180.0 else lon


@st.composite
def numbers(draw: st.DrawFn) -> dict[str, float]:
    out = draw(st.dictionaries(st.sampled_from(NUMBER_FIELDS), numbers_values, max_size=3))
    where = draw(st.sampled_from(["none", "point", "point", "lat only", "off the map"]))
    if where == "point":
        out["loc.lat"], out["loc.lon"] = draw(points())
    elif where == "lat only":
        out["loc.lat"] = draw(points())[0]
    elif where == "off the map":
        out["loc.lat"], out["loc.lon"] = draw(st.sampled_from([(91.0, 0.0), (0.0, -180.5)]))
    return out


term_values = st.lists(st.sampled_from(TERM_VALUES + KINDS), max_size=3).map(tuple)
terms = st.dictionaries(st.sampled_from((*TERM_FIELDS, "kind")), term_values, max_size=3)
counters = st.dictionaries(st.sampled_from(COUNTER_NAMES), counts, max_size=3)


@attrs.frozen(kw_only=True)
class Put:
    item: str
    kind: str | None
    #: "fresh": ``terms``; "same": the object of the item's previous put; "equal": a copy of it.
    terms_from: str
    terms: dict[str, tuple[str, ...]]
    #: "fresh": ``numbers``; "equal": a copy of the item's previous numbers (only counters and
    #: terms may change: the ingest path).
    numbers_from: str = "fresh"
    numbers: dict[str, float]
    counters: dict[str, int]


@attrs.frozen(kw_only=True)
class Recount:
    """An interaction changed the item's counters: its last document again, counters aside.

    With ``grow``, ``counters`` adds to or replaces the previous ones (the ingest
    path); otherwise it replaces them all, so counters may disappear.
    """

    item: str
    counters: dict[str, int]
    grow: bool


@attrs.frozen(kw_only=True)
class Discard:
    item: str


@attrs.frozen(kw_only=True)
class Reserve:
    """The item was seen (say, an interaction) but never made searchable."""

    item: str


@attrs.frozen(kw_only=True)
class Run:
    """The same put (``None``: a discard) for each of a run of consecutive items."""

    items: tuple[str, ...]
    put: Put | None


Op = Put | Recount | Discard | Reserve | Run


def puts(items: Sequence[str]) -> st.SearchStrategy[Put]:
    return st.builds(
        Put,
        item=st.sampled_from(items),
        kind=st.none() | st.sampled_from(KINDS),
        terms_from=st.sampled_from(["fresh", "same", "equal"]),
        terms=terms,
        numbers_from=st.sampled_from(["fresh", "equal"]),
        numbers=numbers(),
        counters=counters,
    )


def operations(items: Sequence[str]) -> st.SearchStrategy[Op]:
    return st.one_of(
        puts(items),
        puts(items),
        st.builds(Recount, item=st.sampled_from(items), counters=counters, grow=st.booleans()),
        st.builds(Discard, item=st.sampled_from(items)),
        st.builds(Reserve, item=st.sampled_from(items)),
    )


@st.composite
def ranges(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from((*NUMBER_FIELDS, "view", "share", "loc.lat", "weight")))
    bound = st.none() | numbers_values | st.sampled_from(COUNTS)
    lo, hi = draw(bound), draw(bound)
    if lo is not None and hi is not None and lo > hi:
        lo, hi = hi, lo
    return {"range": [field, lo, hi]}


@st.composite
def nears(draw: st.DrawFn) -> dict[str, Any]:
    lat, lon = draw(points())
    km = draw(st.sampled_from([0.0, 0.5, 5.0, 20.0, 50.0, 500.0, 20_000.0]) | st.floats(0, 100))
    return {"near": [draw(st.sampled_from(["loc", "home"])), lat, lon, km]}


leaves = st.one_of(
    st.tuples(
        st.sampled_from((*TERM_FIELDS, "kind", "colour")),
        st.sampled_from(TERM_VALUES + KINDS),
    ).map(lambda pair: {"term": list(pair)}),
    ranges(),
    nears(),
)
raw_queries = st.recursive(
    leaves,
    lambda children: st.one_of(
        st.lists(children, max_size=3).map(lambda qs: {"all": qs}),
        st.lists(children, max_size=3).map(lambda qs: {"any": qs}),
        children.map(lambda q: {"not": q}),
    ),
    max_leaves=8,
)
raw_sorts = st.none() | st.sampled_from(
    (*NUMBER_FIELDS, "view", "share", "loc.lon", "weight")
).flatmap(lambda field: st.sampled_from([field, [field, "asc"], [field, "desc"]]))


@attrs.frozen(kw_only=True)
class Search:
    query: Query
    sort: Sort | None
    limit: int


searches = st.builds(
    Search,
    query=raw_queries.map(parse),
    sort=raw_sorts.map(lambda raw: None if raw is None else parse_sort(raw)),
    limit=limits,
)


class Subject:
    """An :class:`Index` and the brute force, kept in step by the same operations."""

    def __init__(self, counter_fields: Sequence[str]) -> None:
        self.index = Index(counter_fields=counter_fields)
        self.brute = BruteIndex(counter_fields=counter_fields)
        #: Each item's last ``terms`` object passed to ``put``.
        self.last_terms: dict[str, Mapping[str, Sequence[str]]] = {}
        #: Each item's last ``put`` arguments.
        self.last_put: dict[str, dict[str, Any]] = {}

    def apply(self, op: Op) -> None:
        if isinstance(op, Run):
            for item in op.items:
                self.apply(
                    Discard(item=item) if op.put is None else attrs.evolve(op.put, item=item)
                )
        elif isinstance(op, Reserve):
            self.index.reserve(op.item)
            self.brute.reserve(op.item)
        elif isinstance(op, Discard):
            self.index.discard(op.item)
            self.brute.discard(op.item)
        elif isinstance(op, Recount):
            last = self.last_put.get(op.item)
            if last is None:
                return
            counters_ = {**last["counters"], **op.counters} if op.grow else op.counters
            self._put(op.item, {**last, "numbers": dict(last["numbers"]), "counters": counters_})
        else:
            previous = self.last_terms.get(op.item)
            if op.terms_from == "same" and previous is not None:
                item_terms = previous
            elif op.terms_from == "equal" and previous is not None:
                item_terms = {field: tuple(values) for field, values in previous.items()}
            else:
                item_terms = op.terms
            last = self.last_put.get(op.item)
            document = {
                "kind": op.kind,
                "terms": item_terms,
                "numbers": (
                    dict(last["numbers"])
                    if op.numbers_from == "equal" and last is not None
                    else op.numbers
                ),
                "counters": op.counters,
            }
            self._put(op.item, document)

    def _put(self, item_id: str, document: dict[str, Any]) -> None:
        self.last_terms[item_id] = document["terms"]
        self.last_put[item_id] = document
        self.index.put(item_id, **document)
        self.brute.put(item_id, **document)

    def _reserved(self, counter_fields: Sequence[str]) -> Index:
        index = Index(counter_fields=counter_fields)
        for item_id in sorted(self.brute.positions, key=self.brute.positions.__getitem__):
            index.reserve(item_id)
        return index

    def rebuilt(self, counter_fields: Sequence[str], put_order: Sequence[str]) -> Index:
        """An index of the final documents: every id reserved first-seen first, then put."""
        index = self._reserved(counter_fields)
        for item_id in put_order:
            doc = self.brute.docs[item_id]
            index.put(
                item_id,
                kind=doc.kind,
                terms={field: tuple(values) for field, values in doc.terms.items()},
                numbers=dict(doc.numbers),
                counters=dict(doc.counters),
            )
        return index

    def loaded(self, counter_fields: Sequence[str], load_order: Sequence[str]) -> Index:
        """An index of the final documents: every id reserved first-seen first, then loaded.

        Each item's ``terms`` is the object its last put passed, so a later put of
        the same object tests that ``load`` kept it.
        """
        index = self._reserved(counter_fields)
        documents = []
        for item_id in load_order:
            doc = self.brute.docs[item_id]
            item_terms = self.last_terms.get(item_id, doc.terms)
            documents.append(
                Document(
                    id=item_id,
                    kind=doc.kind,
                    terms=item_terms,
                    numbers=dict(doc.numbers),
                    counters=dict(doc.counters),
                )
            )
        index.load(documents)
        return index


def outcome(index: Index | BruteIndex, search: Search) -> SearchResult | str:
    try:
        return index.search(search.query, limit=search.limit, sort=search.sort)
    except QueryError:
        return "QueryError"


def matched(index: Index, query: Query) -> list[str] | str:
    try:
        return index.external(index.match(query))
    except QueryError:
        return "QueryError"


def brute_matched(brute: BruteIndex, query: Query) -> list[str] | str:
    try:
        return brute.match(query)
    except QueryError:
        return "QueryError"


def assert_same_values(index: Index, brute: BruteIndex) -> None:
    """Every numeric field sorts everything alike both ways; every geo field has the same points."""
    everything = len(brute.positions) + 1
    for field in brute.numeric_fields:
        for descending in (False, True):
            sort = Sort(field, descending)
            assert index.search(EVERYTHING, limit=everything, sort=sort) == brute.search(
                EVERYTHING, limit=everything, sort=sort
            )
    for field in brute.geo_fields:
        whole_earth = Near(field, 0.0, 0.0, 20_100.0)  # more than half the circumference
        assert index.search(whole_earth, limit=everything) == brute.search(
            whole_earth, limit=everything
        )


def assert_same_structure(index: Index, brute: BruteIndex) -> None:
    stats = index.statistics()
    assert stats.items == len(index) == len(brute.docs)
    assert stats.ids == len(brute.positions)
    assert stats.term_fields == len(brute.term_fields)
    assert stats.numeric_fields == len(brute.numeric_fields)
    assert stats.geo_fields == len(brute.geo_fields)
    assert index.postings() == brute.postings
    assert stats.postings == sum(len(values) for values in brute.postings.values())
    for item_id, position in brute.positions.items():
        assert index.doc_of(item_id) == position
        assert (item_id in index) == (item_id in brute.docs)


counter_field_choices = st.sampled_from([(), STANDARD_COUNTERS])
# Over a pool of 1 to 30 items: few items means many re-puts, many items many postings.
histories = st.integers(1, len(IDS)).flatmap(lambda n: st.lists(operations(IDS[:n]), max_size=40))


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
    final = sorted(subject.brute.docs)
    rebuilt = subject.rebuilt(counter_fields, data.draw(st.permutations(final), label="puts"))
    loaded = subject.loaded(counter_fields, data.draw(st.permutations(final), label="loads"))

    for index in (subject.index, rebuilt, loaded):
        assert_same_structure(index, subject.brute)
        assert_same_values(index, subject.brute)
    for search in queries:
        expected = outcome(subject.brute, search)
        assert outcome(subject.index, search) == expected
        assert outcome(rebuilt, search) == expected
        assert outcome(loaded, search) == expected
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

    assert_same_structure(subject.index, subject.brute)
    assert_same_values(subject.index, subject.brute)
    for search in queries:
        assert outcome(subject.index, search) == outcome(subject.brute, search)


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
        assert_same_structure(subject.index, subject.brute)
        assert_same_values(subject.index, subject.brute)
        for search in queries:
            assert outcome(subject.index, search) == outcome(subject.brute, search)


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
    final = sorted(subject.brute.docs)
    rebuilt = subject.rebuilt(counter_fields, data.draw(st.permutations(final), label="puts"))
    loaded = subject.loaded(counter_fields, data.draw(st.permutations(final), label="loads"))

    for index in (subject.index, rebuilt, loaded):
        assert_same_structure(index, subject.brute)
        assert_same_values(index, subject.brute)
        for search in queries:
            assert outcome(index, search) == outcome(subject.brute, search)


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
        expected = outcome(subject.brute, search)
        for index in indexes:
            assert outcome(index, search) == expected
    # The bulk paths were taken: sorts over more matches than a direct check takes.
    assert max(sorted_totals) > DIRECT_CHECK_MAX
