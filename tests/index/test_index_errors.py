"""Queries and sorts naming fields the index does not know, and what the error lists."""

from __future__ import annotations

import re
from typing import Any

import pytest

from index import EVERYTHING, Index, QueryError, SearchResult, Sort, parse
from tests.index.helpers import at, ids, put


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
