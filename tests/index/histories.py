"""Generated histories of index operations, and a :class:`Subject` that applies them alike
to an :class:`index.Index` and to :class:`~tests.index.brute.BruteIndex`.

The operations are those the ingest path performs: puts (fresh, re-put with the
same ``terms`` object or an equal copy, with equal numbers and new counters),
recounts, discards, bare reservations, and runs of one of these over consecutive
items. ``searches`` draws queries, sorts and limits over the same fields, so
that some name fields no item has. The property tests in
``tests/index/test_properties.py`` hold the index to the brute force with these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
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


def assert_agrees_with_brute_force(
    index: Index, brute: BruteIndex, searches: Sequence[Search]
) -> None:
    """The index has the brute force's fields, postings and values, and answers each search
    alike."""
    assert_same_structure(index, brute)
    assert_same_values(index, brute)
    for search in searches:
        assert outcome(index, search) == outcome(brute, search)


def rebuilt_and_loaded(
    subject: Subject, counter_fields: Sequence[str], data: st.DataObject
) -> tuple[Index, Index]:
    """The subject's final documents put again and loaded again, each in a drawn order."""
    final = sorted(subject.brute.docs)
    rebuilt = subject.rebuilt(counter_fields, data.draw(st.permutations(final), label="puts"))
    loaded = subject.loaded(counter_fields, data.draw(st.permutations(final), label="loads"))
    return rebuilt, loaded


counter_field_choices = st.sampled_from([(), STANDARD_COUNTERS])
# Over a pool of 1 to 30 items: few items means many re-puts, many items many postings.
histories = st.integers(1, len(IDS)).flatmap(lambda n: st.lists(operations(IDS[:n]), max_size=40))
