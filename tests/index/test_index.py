"""Examples of what the index answers: filters, counter defaults, sorts, errors, geo; and
the NumericField and GeoField underneath."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from index import (
    EVERYTHING,
    Document,
    Index,
    IndexStatistics,
    QueryError,
    SearchResult,
    Sort,
    distance_km,
    parse,
)
from index.geo import EARTH_RADIUS_KM, GeoField
from index.numeric import DIRECT_CHECK_MAX, NumericField, bucket_key

# Padding with DIRECT_CHECK_MAX items gives more candidates than any direct-check threshold
# (numbers' and geo's, which is lower), so queries take the bucket and grid paths.

COUNTERS = ("like", "view")


def put(
    index: Index,
    item_id: str,
    *,
    kind: str | None = None,
    terms: Mapping[str, Sequence[str]] | None = None,
    numbers: Mapping[str, float] | None = None,
    counters: Mapping[str, int] | None = None,
) -> None:
    index.put(item_id, kind=kind, terms=terms or {}, numbers=numbers or {}, counters=counters or {})


def at(lat: float, lon: float, **numbers: float) -> dict[str, float]:
    return {"loc.lat": lat, "loc.lon": lon, **numbers}


def ids(index: Index, raw: Any, *, sort: Sort | None = None, limit: int = 100) -> list[str]:
    return index.search(parse(raw), limit=limit, sort=sort).ids


# -- filters ------------------------------------------------------------------------------


def test_gardening_pros_in_austin_with_at_least_50_likes() -> None:
    index = Index(counter_fields=COUNTERS)
    garden_austin = {"category": ("gardening",), "city": ("austin",)}
    put(index, "pro-1", kind="pro", terms=garden_austin, counters={"like": 50})
    put(index, "pro-2", kind="pro", terms=garden_austin, counters={"like": 49})
    put(
        index,
        "pro-3",
        kind="pro",
        terms={"category": ("plumbing", "gardening"), "city": ("austin",)},
        counters={"like": 120, "view": 3},
    )
    put(
        index,
        "pro-4",
        kind="pro",
        terms={**garden_austin, "city": ("denver",)},
        counters={"like": 300},
    )
    put(index, "job-1", kind="job", terms=garden_austin, counters={"like": 80})
    put(
        index,
        "pro-5",
        kind="pro",
        terms={**garden_austin, "category": ("plumbing",)},
        counters={"like": 90},
    )
    put(index, "pro-6", kind="pro", terms=garden_austin)  # never liked
    query = parse(
        {
            "all": [
                {"term": ["kind", "pro"]},
                {"term": ["category", "gardening"]},
                {"term": ["city", "austin"]},
                {"range": ["like", 50, None]},
            ]
        }
    )

    assert index.search(query, limit=10) == SearchResult(ids=["pro-1", "pro-3"], total=2)
    assert index.search(query, limit=10, sort=Sort("like")) == SearchResult(
        ids=["pro-3", "pro-1"], total=2
    )
    assert index.search(query, limit=1) == SearchResult(ids=["pro-1"], total=2)


def test_an_item_starts_matching_when_its_like_counter_goes_from_49_to_50() -> None:
    index = Index(counter_fields=COUNTERS)
    terms = {"city": ("austin",)}
    put(index, "a", terms=terms, counters={"like": 49})
    put(index, "b", terms=terms, counters={"like": 70})
    popular = {"range": ["like", 50, None]}
    assert ids(index, popular) == ["b"]

    put(index, "a", terms=terms, counters={"like": 50})
    assert ids(index, popular) == ["a", "b"]

    put(index, "a", terms=terms, counters={"like": 49})
    assert ids(index, popular) == ["b"]


def test_a_number_of_the_same_name_shadows_a_counter() -> None:
    index = Index(counter_fields=COUNTERS)
    put(index, "a", numbers={"like": 7.0}, counters={"like": 60})
    put(index, "b", counters={"like": 60})
    assert ids(index, {"range": ["like", 50, None]}) == ["b"]
    assert ids(index, {"range": ["like", 7, 7]}) == ["a"]


def test_a_counter_bump_leaves_a_number_of_the_same_name_in_place() -> None:
    """The ingest path: the same numbers, counters changed."""
    index = Index(counter_fields=COUNTERS)
    numbers = {"like": 7.0}
    put(index, "a", numbers=numbers, counters={"like": 60})
    put(index, "a", numbers=dict(numbers), counters={"like": 61, "view": 2})
    assert ids(index, {"range": ["like", 7, 7]}) == ["a"]
    assert ids(index, {"range": ["view", 2, 2]}) == ["a"]


def test_a_counter_that_disappears_takes_its_value_with_it() -> None:
    index = Index(counter_fields=COUNTERS)
    numbers = {"price": 3.0}
    put(index, "a", numbers=numbers, counters={"like": 5, "share": 2})
    put(index, "a", numbers=dict(numbers), counters={"share": 2})
    assert ids(index, {"range": ["like", 0, 0]}) == ["a"]
    put(index, "a", numbers=dict(numbers), counters={})
    with pytest.raises(QueryError, match="unknown numeric field 'share'"):
        index.search(parse({"range": ["share", None, None]}), limit=10)
    assert index.statistics().numeric_fields == 3  # like, view, price


def test_a_discarded_item_never_matches_and_keeps_its_slot() -> None:
    index = Index(counter_fields=COUNTERS)
    for item_id in ("a", "b", "c"):
        put(index, item_id, kind="pro", terms={"city": ("austin",)}, numbers={"price": 5.0})
    index.discard("b")

    assert "b" not in index
    assert len(index) == 2
    assert index.doc_of("b") == 1
    assert ids(index, {"all": []}) == ["a", "c"]
    assert ids(index, {"term": ["city", "austin"]}) == ["a", "c"]
    assert ids(index, {"range": ["price", None, None]}) == ["a", "c"]
    assert ids(index, {"not": {"term": ["city", "denver"]}}) == ["a", "c"]
    assert ids(index, {"range": ["like", None, None]}) == ["a", "c"]

    put(index, "d", kind="pro")
    put(index, "b", kind="pro")
    assert index.doc_of("b") == 1
    assert ids(index, {"term": ["kind", "pro"]}) == ["a", "b", "c", "d"]


def test_an_items_term_version_moves_when_its_terms_or_kind_change_and_only_then() -> None:
    index = Index(counter_fields=COUNTERS)
    a_terms = {"city": ["austin"]}
    put(index, "a", kind="pro", terms=a_terms)
    put(index, "b", kind="pro", terms={"city": ["boston"]})
    docs = np.array([index.doc_of("a"), index.doc_of("b"), 5000], dtype=np.uint32)
    start = index.term_versions(docs)

    # The ingest path: the same terms mapping, a counter bump. Not a term change.
    put(index, "a", kind="pro", terms=a_terms, counters={"like": 3})
    assert list(index.term_versions(docs)) == list(start)

    put(index, "a", kind="pro", terms={"city": ["denver"]})
    put(index, "b", kind="crew", terms={"city": ["boston"]})
    moved = index.term_versions(docs)
    assert moved[0] != start[0]
    assert moved[1] != start[1]
    assert moved[2] == 0  # an id never seen


def test_discarding_an_unknown_or_already_discarded_item_does_nothing() -> None:
    index = Index()
    index.discard("never-seen")
    assert index.doc_of("never-seen") is None
    put(index, "a", kind="pro")
    index.discard("a")
    index.discard("a")
    assert index.statistics() == IndexStatistics(
        items=0, ids=1, term_fields=0, postings=0, numeric_fields=0, geo_fields=0
    )


def test_reserved_ids_take_their_slot_before_the_item_is_searchable() -> None:
    index = Index()
    assert index.reserve("later") == 0
    put(index, "first", kind="pro")
    assert index.reserve("later") == 0
    assert "later" not in index
    put(index, "later", kind="pro")
    assert ids(index, {"term": ["kind", "pro"]}) == ["later", "first"]


def test_a_counter_defaults_to_0_but_a_missing_number_matches_no_range() -> None:
    index = Index(counter_fields=COUNTERS)
    put(index, "liked", numbers={"price": 50.0}, counters={"like": 12})
    put(index, "never-liked", numbers={"price": 5.0})
    put(index, "no-price", counters={"like": 3})

    assert ids(index, {"range": ["like", None, 10]}) == ["never-liked", "no-price"]
    assert ids(index, {"range": ["like", 0, 0]}) == ["never-liked"]
    assert ids(index, {"range": ["view", None, None]}) == ["liked", "never-liked", "no-price"]
    assert ids(index, {"range": ["price", None, 10]}) == ["never-liked"]
    assert ids(index, {"range": ["price", None, None]}) == ["liked", "never-liked"]
    assert ids(index, {"not": {"range": ["price", None, 10]}}) == ["liked", "no-price"]


def test_a_counter_not_named_at_construction_defaults_to_0_while_some_item_counts_it() -> None:
    index = Index(counter_fields=COUNTERS)
    put(index, "sharer", counters={"share": 3})
    put(index, "quiet", kind="pro")
    assert ids(index, {"range": ["share", None, 0]}) == ["quiet"]

    put(index, "sharer", numbers={"share": 3.0}, counters={"share": 3})  # now a number
    assert ids(index, {"range": ["share", None, 10]}) == ["sharer"]

    index.discard("sharer")
    with pytest.raises(QueryError, match="unknown numeric field 'share'"):
        index.search(parse({"range": ["share", None, 0]}), limit=10)


def test_the_kind_and_terms_under_kind_are_both_kind_terms() -> None:
    index = Index()
    put(index, "a", kind="pro", terms={"kind": ("featured",)})
    put(index, "b", terms={"kind": ("pro",)})
    put(index, "c", kind="pro", terms={"kind": ("pro",)})
    assert ids(index, {"term": ["kind", "pro"]}) == ["a", "b", "c"]
    assert ids(index, {"term": ["kind", "featured"]}) == ["a"]
    assert index.postings() == {"kind": {"pro": ["a", "b", "c"], "featured": ["a"]}}

    index.discard("c")
    assert index.postings() == {"kind": {"pro": ["a", "b"], "featured": ["a"]}}


def test_re_putting_the_same_terms_object_with_a_new_kind_moves_the_kind() -> None:
    index = Index()
    terms = {"city": ("austin",)}
    put(index, "a", kind="pro", terms=terms)
    put(index, "a", kind="job", terms=terms)
    assert index.postings() == {"city": {"austin": ["a"]}, "kind": {"job": ["a"]}}
    put(index, "a", kind="job", terms={"city": ("denver",)})
    assert index.postings() == {"city": {"denver": ["a"]}, "kind": {"job": ["a"]}}


def test_put_copies_numbers_and_counters() -> None:
    index = Index(counter_fields=COUNTERS)
    numbers, counters = {"price": 5.0}, {"like": 1}
    put(index, "a", numbers=numbers, counters=counters)
    numbers["price"], counters["like"] = 500.0, 100
    assert ids(index, {"range": ["price", 100, None]}) == []
    assert ids(index, {"range": ["like", 100, None]}) == []

    put(index, "a", numbers=numbers, counters=counters)  # the same dicts, changed since
    assert ids(index, {"range": ["price", 100, None]}) == ["a"]
    assert ids(index, {"range": ["like", 100, None]}) == ["a"]


def test_limit_0_returns_no_ids_but_the_total() -> None:
    index = Index()
    for item_id in ("a", "b", "c"):
        put(index, item_id, numbers={"price": 1.0})
    assert index.search(EVERYTHING, limit=0) == SearchResult(ids=[], total=3)
    assert index.search(EVERYTHING, limit=0, sort=Sort("price")) == SearchResult(ids=[], total=3)
    assert index.search(EVERYTHING, limit=99) == SearchResult(ids=["a", "b", "c"], total=3)


def test_any_of_nothing_matches_nothing_and_all_of_nothing_everything() -> None:
    index = Index()
    put(index, "a", kind="pro")
    put(index, "b", kind="job")
    assert ids(index, {"any": []}) == []
    assert ids(index, {"all": []}) == ["a", "b"]
    assert ids(index, {"not": {"all": []}}) == []
    assert ids(index, {"all": [{"not": {"term": ["kind", "pro"]}}, {"any": [{"all": []}]}]}) == [
        "b"
    ]


# -- sorting ------------------------------------------------------------------------------


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


# -- errors ---------------------------------------------------------------------------------


def described_index() -> Index:
    index = Index(counter_fields=("like",))
    put(
        index,
        "a",
        kind="pro",
        terms={"city": ("austin",)},
        numbers=at(30.27, -97.74, price=5.0),
    )
    return index


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"term": ["colour", "red"]}, "unknown term field 'colour' (known: city, kind)"),
        ({"term": ["price", "5"]}, "unknown term field 'price' (known: city, kind)"),
        (
            {"range": ["weight", 1, 2]},
            "unknown numeric field 'weight' (known: like, loc.lat, loc.lon, price)",
        ),
        ({"range": ["city", 1, 2]}, "unknown numeric field 'city'"),
        ({"near": ["home", 0, 0, 5]}, "unknown geo field 'home' (known: loc)"),
        ({"near": ["loc.lat", 0, 0, 5]}, "unknown geo field 'loc.lat' (known: loc)"),
        (
            {"all": [{"term": ["city", "austin"]}, {"not": {"range": ["weight", 1, 2]}}]},
            "unknown numeric field 'weight'",
        ),
        # A field is checked even where evaluation would never reach it.
        ({"all": [{"any": []}, {"term": ["colour", "red"]}]}, "unknown term field 'colour'"),
    ],
)
def test_a_query_naming_an_unknown_field_is_an_error_listing_the_known_ones(
    raw: Any, message: str
) -> None:
    index = described_index()
    with pytest.raises(QueryError, match=re.escape(message)):
        index.search(parse(raw), limit=10)
    with pytest.raises(QueryError, match=re.escape(message)):
        index.match(parse(raw))


def test_sorting_by_an_unknown_field_is_an_error_listing_the_numeric_fields() -> None:
    index = described_index()
    message = "cannot sort by 'city': not a numeric field (known: like, loc.lat, loc.lon, price)"
    with pytest.raises(QueryError, match=re.escape(message)):
        index.search(EVERYTHING, limit=10, sort=Sort("city"))


def test_an_empty_index_knows_only_its_counter_fields() -> None:
    index = Index(counter_fields=("like",))
    with pytest.raises(
        QueryError, match=re.escape("unknown term field 'kind' (the index has none)")
    ):
        index.search(parse({"term": ["kind", "pro"]}), limit=10)
    with pytest.raises(QueryError, match=re.escape("unknown geo field 'loc' (the index has none)")):
        index.search(parse({"near": ["loc", 0, 0, 1]}), limit=10)
    assert index.search(parse({"range": ["like", None, 0]}), limit=10) == SearchResult(
        ids=[], total=0
    )


def test_the_list_of_known_fields_stops_at_20() -> None:
    index = Index()
    put(index, "a", terms={f"f{n:02d}": ("x",) for n in range(25)})
    shown = ", ".join(f"f{n:02d}" for n in range(20))
    with pytest.raises(QueryError, match=re.escape(f"(known: {shown}, …)")):
        index.search(parse({"term": ["nope", "x"]}), limit=10)


def test_a_field_is_forgotten_when_no_searchable_item_has_it() -> None:
    index = described_index()
    put(index, "a", kind="pro", terms={"city": ()})
    for raw in (
        {"term": ["city", "austin"]},
        {"range": ["price", None, None]},
        {"near": ["loc", 30.27, -97.74, 5]},
    ):
        with pytest.raises(QueryError, match="unknown"):
            index.search(parse(raw), limit=10)
    assert ids(index, {"range": ["like", 0, 0]}) == ["a"]  # named at construction


# -- bulk load ------------------------------------------------------------------------------


def test_load_builds_the_index_that_puts_build() -> None:
    documents = [
        Document(
            id="a",
            kind="pro",
            terms={"city": ("austin",), "kind": ("featured",)},
            numbers=at(30.27, -97.74, price=5.0, like=7.0),
            counters={"like": 60, "share": 2},
        ),
        Document(id="b", kind="job", terms={"city": ("austin", "denver")}, numbers={}, counters={}),
        Document(
            id="c",
            kind=None,
            terms={},
            numbers={"loc.lat": 91.0, "loc.lon": 0.0, "home.lat": 1.0},
            counters={"view": 3},
        ),
    ]
    loaded, put_one_by_one = Index(counter_fields=COUNTERS), Index(counter_fields=COUNTERS)
    loaded.reserve("c")
    put_one_by_one.reserve("c")
    loaded.load(documents)
    for item_id, kind, terms, numbers, counters in documents:
        put(put_one_by_one, item_id, kind=kind, terms=terms, numbers=numbers, counters=counters)

    assert loaded.statistics() == put_one_by_one.statistics()
    assert loaded.postings() == put_one_by_one.postings()
    for raw, sort in [
        ({"all": []}, Sort("like")),
        ({"range": ["share", None, 0]}, Sort("view", descending=False)),
        ({"range": ["loc.lat", 90, None]}, None),
        ({"near": ["loc", 30.27, -97.74, 1]}, None),
        ({"term": ["kind", "featured"]}, None),
    ]:
        query = parse(raw)
        assert loaded.search(query, limit=10, sort=sort) == put_one_by_one.search(
            query, limit=10, sort=sort
        )
    assert ids(loaded, {"all": []}) == ["c", "a", "b"]


def test_load_refuses_an_index_that_has_searchable_items() -> None:
    index = Index()
    put(index, "a", kind="pro")
    with pytest.raises(ValueError, match="without searchable items"):
        index.load([Document(id="b", kind="pro", terms={}, numbers={}, counters={})])


def test_load_refuses_an_item_twice() -> None:
    twice = [Document(id="a", kind="pro", terms={}, numbers={}, counters={})] * 2
    with pytest.raises(ValueError, match="'a' twice"):
        Index().load(twice)


def test_a_load_that_fails_leaves_the_index_usable() -> None:
    index = Index()
    twice = [Document(id="a", kind="pro", terms={"city": ("austin",)}, numbers={}, counters={})]
    with pytest.raises(ValueError, match="twice"):
        index.load(twice * 2)
    put(index, "a", kind="job")
    assert ids(index, {"term": ["kind", "job"]}) == ["a"]


def test_load_does_not_make_a_term_field_without_values_known() -> None:
    index = Index()
    index.load([Document(id="a", kind=None, terms={"city": ()}, numbers={}, counters={})])
    assert index.statistics().term_fields == 0
    with pytest.raises(QueryError, match="unknown term field 'city'"):
        index.search(parse({"term": ["city", "austin"]}), limit=10)


# -- inspection -----------------------------------------------------------------------------


def test_statistics_count_items_ids_fields_and_postings() -> None:
    index = Index(counter_fields=COUNTERS)
    put(index, "a", kind="pro", terms={"city": ("austin", "denver")}, numbers=at(0, 0))
    put(index, "b", kind="job", terms={"city": ("austin",)}, counters={"share": 2})
    index.reserve("c")
    assert index.statistics() == IndexStatistics(
        items=2,
        ids=3,
        term_fields=2,  # city, kind
        postings=4,  # city=austin, city=denver, kind=pro, kind=job
        numeric_fields=5,  # like, view, loc.lat, loc.lon, share
        geo_fields=1,
    )
    index.discard("a")
    assert index.statistics() == IndexStatistics(
        items=1, ids=3, term_fields=2, postings=2, numeric_fields=3, geo_fields=0
    )


def test_match_returns_a_fresh_bitmap_the_caller_may_change() -> None:
    index = Index(counter_fields=COUNTERS)
    put(index, "a", kind="pro", numbers={"price": 1.0})
    put(index, "b", kind="pro", numbers={"price": 2.0})
    for raw in (
        {"all": []},
        {"term": ["kind", "pro"]},
        {"range": ["price", None, None]},
        {"any": [{"term": ["kind", "pro"]}]},
        {"all": [{"term": ["kind", "pro"]}]},
    ):
        found = index.match(parse(raw))
        assert index.external(found) == ["a", "b"]
        found.clear()
        found.add(7)
        assert index.external(index.match(parse(raw))) == ["a", "b"]
    assert index.postings() == {"kind": {"pro": ["a", "b"]}}
    assert ids(index, {"all": []}) == ["a", "b"]
    assert len(index) == 2


# -- geo ------------------------------------------------------------------------------------


def test_near_finds_points_within_the_distance() -> None:
    index = Index()
    put(index, "downtown", numbers=at(30.2672, -97.7431))
    put(index, "round-rock", numbers=at(30.5083, -97.6789))  # ~27 km north
    put(index, "houston", numbers=at(29.7604, -95.3698))
    put(index, "no-place", kind="pro")
    assert ids(index, {"near": ["loc", 30.2672, -97.7431, 10]}) == ["downtown"]
    assert ids(index, {"near": ["loc", 30.2672, -97.7431, 30]}) == ["downtown", "round-rock"]
    assert ids(index, {"near": ["loc", 30.2672, -97.7431, 0]}) == ["downtown"]
    assert ids(index, {"not": {"near": ["loc", 30.2672, -97.7431, 30]}}) == ["houston", "no-place"]


def test_near_needs_both_coordinates_on_the_map() -> None:
    index = Index()
    put(index, "ok", numbers=at(0.0, 0.0))
    put(index, "no-lon", numbers={"loc.lat": 0.0})
    put(index, "off-map", numbers=at(90.5, 0.0))
    put(index, "bad-lon", numbers=at(0.0, -180.5))
    put(index, "nameless", numbers={".lat": 0.0, ".lon": 0.0})
    assert ids(index, {"near": ["loc", 0, 0, 20_000]}) == ["ok"]
    assert index.statistics().geo_fields == 1


def test_moving_a_point_moves_it_out_of_the_old_neighbourhood() -> None:
    index = Index()
    put(index, "a", numbers=at(30.27, -97.74))
    put(index, "a", numbers=at(39.74, -104.99))
    assert ids(index, {"near": ["loc", 30.27, -97.74, 50]}) == []
    assert ids(index, {"near": ["loc", 39.74, -104.99, 50]}) == ["a"]


def antimeridian_index(padding: int = 0) -> Index:
    index = Index()
    for n in range(padding):
        put(index, f"far-{n}", numbers=at(45.0, 10.0))
    put(index, "east", numbers=at(0.0, 179.95))
    put(index, "west", numbers=at(0.0, -179.95))
    put(index, "minus-180", numbers=at(0.0, -180.0))
    put(index, "inland", numbers=at(0.0, 179.0))
    return index


@pytest.mark.parametrize("lon", [180.0, -180.0, 179.99, -179.99])
def test_near_the_antimeridian_finds_points_on_both_sides(lon: float) -> None:
    index = antimeridian_index()
    assert ids(index, {"near": ["loc", 0.0, lon, 15]}) == ["east", "west", "minus-180"]


def test_near_the_antimeridian_among_many_candidates_finds_points_on_both_sides() -> None:
    index = antimeridian_index(padding=DIRECT_CHECK_MAX)
    near = {"near": ["loc", 0.0, -179.99, 15]}
    assert ids(index, near) == ["east", "west", "minus-180"]


def pole_index(padding: int = 0) -> Index:
    index = Index()
    for n in range(padding):
        put(index, f"far-{n}", numbers=at(45.0, 10.0))
    for lon in (0.0, 90.0, 180.0, -90.0):
        put(index, f"top-{lon:g}", numbers=at(89.99, lon))
    put(index, "pole", numbers=at(90.0, 0.0))
    put(index, "lower", numbers=at(89.0, 0.0))
    return index


@pytest.mark.parametrize("padding", [0, DIRECT_CHECK_MAX])
def test_near_a_pole_finds_points_at_every_longitude(padding: int) -> None:
    index = pole_index(padding)
    tops = ["top-0", "top-90", "top-180", "top--90", "pole"]
    assert ids(index, {"near": ["loc", 90.0, 0.0, 5]}) == tops
    assert ids(index, {"near": ["loc", 89.99, 0.0, 3]}) == tops
    assert ids(index, {"near": ["loc", 90.0, 123.0, 200]}) == [*tops, "lower"]


def test_near_among_many_candidates_finds_a_point_at_lon_plus_180() -> None:
    index = Index()
    for n in range(DIRECT_CHECK_MAX):
        put(index, f"far-{n}", numbers=at(45.0, 10.0))
    put(index, "plus-180", numbers=at(0.0, 180.0))
    put(index, "minus-180", numbers=at(0.0, -180.0))
    assert ids(index, {"near": ["loc", 0.0, 179.99, 5]}) == ["plus-180", "minus-180"]


def test_near_a_pole_among_many_candidates_finds_points_at_other_longitudes() -> None:
    index = Index()
    for n in range(DIRECT_CHECK_MAX):
        put(index, f"far-{n}", numbers=at(45.0, 10.0))
    put(index, "here", numbers=at(89.95, 0.0))
    put(index, "ten-east", numbers=at(89.95, 10.0))  # 0.97 km away
    assert ids(index, {"near": ["loc", 89.95, 0.0, 1.1]}) == ["here", "ten-east"]


# -- NumericField ---------------------------------------------------------------------------

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


# -- GeoField -------------------------------------------------------------------------------


def test_a_geo_field_sets_moves_and_unsets_points() -> None:
    geo = GeoField("loc")
    geo.set(2, 30.27, -97.74)
    geo.set(2, 30.27, -97.74)
    geo.set(2000, 39.74, -104.99)  # beyond the initial arrays
    assert geo.get(2) == (30.27, -97.74)
    assert geo.get(2000) == (39.74, -104.99)
    assert geo.get(3) is None
    geo.set(2, 40.0, -105.0)
    assert list(geo.select(30.27, -97.74, 50.0)) == []
    assert list(geo.select(39.74, -104.99, 50.0)) == [2, 2000]
    geo.unset(2)
    geo.unset(2)
    assert len(geo) == 1
    assert list(geo.select(39.74, -104.99, 50.0)) == [2000]


def brute_near(
    points: dict[int, tuple[float, float]], lat: float, lon: float, km: float
) -> list[int]:
    return [
        doc
        for doc, (plat, plon) in sorted(points.items())
        if distance_km(lat, lon, np.array([plat]), np.array([plon]))[0] <= km
    ]


@settings(max_examples=20, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    centre=st.sampled_from(
        [(30.27, -97.74), (0.0, 179.8), (-60.0, 0.0), (75.0, 20.0), (86.0, 100.0), (-88.0, 0.0)]
    ),
    offset=st.tuples(st.floats(-2.0, 2.0), st.floats(-2.0, 2.0)),
    km=st.sampled_from([0.0, 1.0, 10.0, 50.0, 120.0, 400.0, 900.0, 3000.0, 12_000.0])
    | st.floats(0, 1500),
)
def test_geo_select_equals_a_brute_force_distance_filter(
    seed: int, centre: tuple[float, float], offset: tuple[float, float], km: float
) -> None:
    """Points spread over a wide cap around the centre, so circles at high latitudes reach
    their widest longitudes."""
    rng = np.random.default_rng(seed)
    geo = GeoField("loc")
    points = {}
    poleward = abs(centre[0]) + 8.0
    spread_lon = 180.0 if poleward >= 85.0 else 8.0 / math.cos(math.radians(poleward))
    for doc in range(800):
        lat = min(90.0, max(-90.0, centre[0] + rng.uniform(-8.0, 8.0)))
        lon = math.remainder(centre[1] + rng.uniform(-spread_lon, spread_lon), 360.0)
        if doc % 50 == 0:
            lon = 180.0 if doc % 100 == 0 else -180.0  # on the antimeridian exactly
        points[doc] = (lat, lon)
        geo.set(doc, lat, lon)
    lat = min(90.0, max(-90.0, centre[0] + offset[0]))
    lon = math.remainder(centre[1] + offset[1], 360.0)
    expected = brute_near(points, lat, lon, km)
    assert list(geo.select(lat, lon, km)) == expected
    assert list(geo.keep(BitMap(range(900)), lat, lon, km)) == expected
    candidates = BitMap(doc for doc in points if rng.random() < 0.6)
    assert list(geo.keep(candidates, lat, lon, km)) == [d for d in expected if d in candidates]


def destination(lat: float, lon: float, km: float, bearing: float) -> tuple[float, float]:
    """The point ``km`` from (lat, lon) on the great circle leaving at ``bearing`` (radians)."""
    phi, arc = math.radians(lat), km / EARTH_RADIUS_KM
    phi2 = math.asin(
        math.sin(phi) * math.cos(arc) + math.cos(phi) * math.sin(arc) * math.cos(bearing)
    )
    dlambda = math.atan2(
        math.sin(bearing) * math.sin(arc) * math.cos(phi),
        math.cos(arc) - math.sin(phi) * math.sin(phi2),
    )
    return math.degrees(phi2), math.remainder(lon + math.degrees(dlambda), 360.0)


@settings(max_examples=30, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    lat=st.sampled_from([0.0, 30.0, -45.0, 60.0, 75.0, -82.0, 88.0, 89.95])
    | st.floats(-90.0, 90.0),
    lon=st.sampled_from([0.0, 179.9, -179.9, 180.0]) | st.floats(-180.0, 180.0),
    km=st.sampled_from([0.5, 3.0, 20.0, 100.0, 400.0, 1500.0]) | st.floats(0.1, 3000.0),
)
def test_near_decides_points_at_the_edge_of_the_circle_exactly(
    seed: int, lat: float, lon: float, km: float
) -> None:
    """Points within a percent of the radius, at every bearing: where the circle is widest in
    longitude, and in cells that only just fit inside it."""
    rng = np.random.default_rng(seed)
    geo = GeoField("loc")
    points = {}
    for doc in range(600):
        bearing = rng.uniform(0.0, 2.0 * math.pi)
        points[doc] = destination(lat, lon, km * rng.uniform(0.99, 1.01), bearing)
        geo.set(doc, *points[doc])
    expected = brute_near(points, lat, lon, km)
    assert list(geo.select(lat, lon, km)) == expected
    candidates = BitMap(doc for doc in points if rng.random() < 0.6)
    assert list(geo.keep(candidates, lat, lon, km)) == [d for d in expected if d in candidates]


# The grid sizes of index.geo (degrees); points at cell corners are the hardest to decide.
GRID_SIZES = (8.0, 2.0, 0.5, 0.125, 0.03125)


@settings(max_examples=15, deadline=None, database=None)
@given(
    lat=st.sampled_from([0.0, 30.0, -45.0, 60.0, -75.0, 85.0]) | st.floats(-88.0, 88.0),
    lon=st.sampled_from([0.0, 179.9, -179.9]) | st.floats(-180.0, 180.0),
    km=st.sampled_from([2.0, 10.0, 60.0, 250.0, 900.0, 2000.0]) | st.floats(1.0, 2500.0),
)
def test_near_decides_points_at_the_corners_of_grid_cells_exactly(
    lat: float, lon: float, km: float
) -> None:
    """Just inside each corner of every cell about the circle's edge, for every grid size."""
    dlat = km / (math.pi * EARTH_RADIUS_KM / 180.0)
    dlon = min(180.0, dlat / max(0.01, math.cos(math.radians(min(89.0, abs(lat) + dlat)))))
    geo = GeoField("loc")
    points: dict[int, tuple[float, float]] = {}
    epsilon = 1e-7
    for size in GRID_SIZES:
        rows = range(math.floor((lat - dlat) / size) - 1, math.floor((lat + dlat) / size) + 2)
        columns = range(math.floor((lon - dlon) / size) - 1, math.floor((lon + dlon) / size) + 2)
        if len(rows) * len(columns) > 1_000:
            continue
        for row in rows:
            for column in columns:
                south, west = row * size, column * size
                for corner_lat, corner_lon in (
                    (south + epsilon, west + epsilon),
                    (south + epsilon, west + size - epsilon),
                    (south + size - epsilon, west + epsilon),
                    (south + size - epsilon, west + size - epsilon),
                ):
                    if -90.0 <= corner_lat <= 90.0:
                        doc = len(points)
                        points[doc] = (corner_lat, math.remainder(corner_lon, 360.0))
                        geo.set(doc, *points[doc])
    expected = brute_near(points, lat, lon, km)
    assert list(geo.select(lat, lon, km)) == expected
