"""Examples of what the index answers to filters (terms, numbers, counters that default to
0), how puts, discards and reservations change it, and what it reports about itself."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from index import EVERYTHING, Index, IndexStatistics, QueryError, SearchResult, Sort, parse
from tests.index.helpers import COUNTERS, at, ids, put

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
    raw: dict[str, Any]
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
