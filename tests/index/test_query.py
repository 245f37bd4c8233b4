"""``parse`` and ``parse_sort``: well-formed queries become nodes; anything else is a
:class:`QueryError` whose message starts with the path of the fault."""

from __future__ import annotations

import re
from typing import Any

import pytest

from index import (
    EVERYTHING,
    AllOf,
    AnyOf,
    Near,
    Not,
    QueryError,
    Range,
    SearchError,
    Sort,
    Term,
    parse,
    parse_sort,
    unparse,
)
from index.query import MAX_DEPTH, MAX_NODES, fields


def nested_nots(levels: int) -> dict[str, Any]:
    query: dict[str, Any] = {"term": ["city", "austin"]}
    for _ in range(levels):
        query = {"not": query}
    return query


# -- well-formed queries ------------------------------------------------------------------

WELL_FORMED: list[tuple[Any, Any]] = [
    ({"term": ["city", "austin"]}, Term("city", "austin")),
    ({"term": ("city", "")}, Term("city", "")),
    ({"range": ["like", 50, None]}, Range("like", 50.0, None)),
    ({"range": ["price", None, 10.5]}, Range("price", None, 10.5)),
    ({"range": ["price", None, None]}, Range("price", None, None)),
    ({"range": ["price", 3, 3]}, Range("price", 3.0, 3.0)),
    ({"range": ["price", -0.0, 0]}, Range("price", 0.0, 0.0)),
    ({"near": ["loc", 30.27, -97.74, 25]}, Near("loc", 30.27, -97.74, 25.0)),
    ({"near": ["loc", -90, 180, 0]}, Near("loc", -90.0, 180.0, 0.0)),
    ({"near": ["loc", 90, -180, 0.0]}, Near("loc", 90.0, -180.0, 0.0)),
    ({"all": []}, EVERYTHING),
    ({"any": []}, AnyOf(())),
    ({"not": {"term": ["kind", "pro"]}}, Not(Term("kind", "pro"))),
    (
        {"all": [{"term": ["kind", "pro"]}, {"any": [{"range": ["like", 1, 2]}]}]},
        AllOf((Term("kind", "pro"), AnyOf((Range("like", 1.0, 2.0),)))),
    ),
    ({"any": ({"all": ()},)}, AnyOf((EVERYTHING,))),
]


@pytest.mark.parametrize(("raw", "expected"), WELL_FORMED)
def test_parse_turns_well_formed_queries_into_nodes(raw: Any, expected: Any) -> None:
    assert parse(raw) == expected


@pytest.mark.parametrize(("raw", "expected"), WELL_FORMED)
def test_unparse_gives_the_map_parse_reads_back(raw: Any, expected: Any) -> None:
    assert parse(unparse(expected)) == expected


def test_parse_makes_every_number_a_float() -> None:
    node = parse({"near": ["loc", 30, -97, 5]})
    assert isinstance(node, Near)
    assert all(type(value) is float for value in (node.lat, node.lon, node.km))
    node = parse({"range": ["like", 50, 60]})
    assert isinstance(node, Range)
    assert type(node.lo) is float
    assert type(node.hi) is float


def test_parse_does_not_check_that_fields_exist() -> None:
    assert parse({"term": ["no-such-field", "x"]}) == Term("no-such-field", "x")


def test_fields_lists_every_field_a_query_names_with_its_kind() -> None:
    query = parse(
        {
            "all": [
                {"term": ["city", "austin"]},
                {"not": {"range": ["like", 50, None]}},
                {"any": [{"near": ["loc", 0, 0, 1]}, {"term": ["kind", "pro"]}]},
            ]
        }
    )
    assert sorted(fields(query)) == [
        ("near", "loc"),
        ("range", "like"),
        ("term", "city"),
        ("term", "kind"),
    ]


def test_queries_may_nest_as_deep_as_the_limit() -> None:
    node = parse(nested_nots(MAX_DEPTH))
    for _ in range(MAX_DEPTH):
        assert isinstance(node, Not)
        node = node.child
    assert node == Term("city", "austin")


def test_queries_may_have_as_many_parts_as_the_limit() -> None:
    leaves = [{"term": ["city", str(n)]} for n in range(MAX_NODES - 1)]
    node = parse({"any": leaves})
    assert isinstance(node, AnyOf)
    assert len(node.children) == MAX_NODES - 1


# -- malformed queries ----------------------------------------------------------------------

BAD_QUERIES: list[tuple[Any, str]] = [
    # The whole query.
    (None, "filter: expected a map with one key"),
    ([], "filter: expected a map with one key"),
    ({}, "filter: expected a map with one key"),
    ({"term": ["a", "b"], "range": ["c", 1, 2]}, "filter: expected a map with one key"),
    ({"match": ["city", "austin"]}, "filter: unknown operator 'match'"),
    ({"ALL": []}, "filter: unknown operator 'ALL'"),
    # Combinators.
    ({"all": {"term": ["a", "b"]}}, "filter.all: expected a list of queries"),
    ({"any": "term"}, "filter.any: expected a list of queries"),
    ({"any": None}, "filter.any: expected a list of queries"),
    ({"all": [{"term": ["a", "b"]}, 3]}, "filter.all[1]: expected a map with one key"),
    ({"not": []}, "filter.not: expected a map with one key"),
    ({"not": {"not": {"nope": 1}}}, "filter.not.not: unknown operator 'nope'"),
    # Terms.
    ({"term": ["city"]}, "filter.term: expected [field, value]"),
    ({"term": ["city", "a", "b"]}, "filter.term: expected [field, value]"),
    ({"term": "city"}, "filter.term: expected [field, value]"),
    ({"term": ["city", 5]}, "filter.term[1]: expected a string value, got int"),
    ({"term": ["city", None]}, "filter.term[1]: expected a string value, got null"),
    ({"term": ["city", ["a"]]}, "filter.term[1]: expected a string value, got list"),
    ({"term": ["", "a"]}, "filter.term[0]: expected a field name (a non-empty string)"),
    ({"term": [7, "a"]}, "filter.term[0]: expected a field name (a non-empty string)"),
    # Ranges.
    ({"range": ["like", 1]}, "filter.range: expected [field, min or null, max or null]"),
    ({"range": ["like", "1", None]}, "filter.range[1]: expected a number, got str"),
    ({"range": ["like", None, "9"]}, "filter.range[2]: expected a number, got str"),
    ({"range": ["like", True, None]}, "filter.range[1]: expected a number, got bool"),
    ({"range": ["like", None, False]}, "filter.range[2]: expected a number, got bool"),
    ({"range": ["like", float("nan"), None]}, "filter.range[1]: expected a finite number"),
    ({"range": ["like", None, float("inf")]}, "filter.range[2]: expected a finite number"),
    ({"range": ["like", 5, 1]}, "filter.range: min 5 is greater than max 1"),
    ({"range": ["like", 0.5, -0.5]}, "filter.range: min 0.5 is greater than max -0.5"),
    ({"range": [None, 1, 2]}, "filter.range[0]: expected a field name"),
    # Near.
    ({"near": ["loc", 0, 0]}, "filter.near: expected [field, lat, lon, km]"),
    ({"near": ["loc", 91, 0, 1]}, "filter.near[1]: latitude 91 is outside [-90, 90]"),
    ({"near": ["loc", -90.5, 0, 1]}, "filter.near[1]: latitude -90.5 is outside [-90, 90]"),
    ({"near": ["loc", 0, 180.01, 1]}, "filter.near[2]: longitude 180.01 is outside [-180, 180]"),
    ({"near": ["loc", 0, -181, 1]}, "filter.near[2]: longitude -181 is outside [-180, 180]"),
    ({"near": ["loc", 0, 0, -1]}, "filter.near[3]: distance -1 km is negative"),
    ({"near": ["loc", 0, 0, -0.001]}, "filter.near[3]: distance -0.001 km is negative"),
    ({"near": ["loc", "0", 0, 1]}, "filter.near[1]: expected a number, got str"),
    ({"near": ["loc", 0, True, 1]}, "filter.near[2]: expected a number, got bool"),
    ({"near": ["loc", 0, 0, None]}, "filter.near[3]: expected a number, got null"),
    ({"near": ["loc", 0, 0, float("inf")]}, "filter.near[3]: expected a finite number"),
    ({"near": ["", 0, 0, 1]}, "filter.near[0]: expected a field name"),
    # Deep in a tree, the path says exactly where.
    (
        {"all": [{"term": ["kind", "pro"]}, {"range": ["like", "50", None]}]},
        "filter.all[1].range[1]: expected a number, got str",
    ),
    (
        {"any": [{"all": []}, {"not": {"all": [{"all": []}, {"near": ["l", 0, 0, -2]}]}}]},
        "filter.any[1].not.all[1].near[3]: distance -2 km is negative",
    ),
]


@pytest.mark.parametrize(("raw", "message"), BAD_QUERIES)
def test_a_malformed_query_is_an_error_naming_its_path(raw: Any, message: str) -> None:
    with pytest.raises(QueryError, match=f"^{re.escape(message)}"):
        parse(raw)


def test_the_path_of_a_fault_starts_at_the_given_root() -> None:
    with pytest.raises(QueryError, match=r"^params\.filter\.all\[0\]\.term\[1\]: "):
        parse({"all": [{"term": ["city", 1]}]}, path="params.filter")


def test_a_query_nested_deeper_than_the_limit_is_an_error() -> None:
    path = "filter" + ".not" * (MAX_DEPTH + 1)
    with pytest.raises(QueryError, match=f"^{re.escape(path)}: .*at most {MAX_DEPTH} levels"):
        parse(nested_nots(MAX_DEPTH + 1))


def test_a_deep_query_of_lists_is_an_error_too() -> None:
    query: dict[str, Any] = {"all": []}
    for _ in range(MAX_DEPTH + 1):
        query = {"any": [query]}
    with pytest.raises(QueryError, match=f"at most {MAX_DEPTH} levels"):
        parse(query)


def test_a_query_with_more_parts_than_the_limit_is_an_error() -> None:
    leaves = [{"term": ["city", str(n)]} for n in range(MAX_NODES)]
    path = f"filter.any[{MAX_NODES - 1}]"
    with pytest.raises(QueryError, match=f"^{re.escape(path)}: .*at most {MAX_NODES} parts"):
        parse({"any": leaves})


def test_parts_are_counted_across_the_whole_tree() -> None:
    half = [{"term": ["city", str(n)]} for n in range(MAX_NODES // 2)]
    with pytest.raises(QueryError, match=f"at most {MAX_NODES} parts"):
        parse({"all": [{"any": half}, {"any": half}]})


def test_query_errors_are_search_errors_and_value_errors() -> None:
    with pytest.raises(QueryError) as caught:
        parse({"nope": 1})
    assert isinstance(caught.value, SearchError)
    assert isinstance(caught.value, ValueError)


# -- sorts ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("like", Sort("like", descending=True)),
        (["like", "desc"], Sort("like", descending=True)),
        (["price", "asc"], Sort("price", descending=False)),
        (("price", "asc"), Sort("price", descending=False)),
    ],
)
def test_parse_sort_reads_a_field_and_an_order(raw: Any, expected: Sort) -> None:
    assert parse_sort(raw) == expected


def test_a_sort_is_descending_unless_asked_otherwise() -> None:
    assert Sort("like").descending


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("", "sort: expected a field name"),
        (5, 'sort: expected a field name or [field, "desc"|"asc"]'),
        (None, 'sort: expected a field name or [field, "desc"|"asc"]'),
        (["like"], 'sort: expected a field name or [field, "desc"|"asc"]'),
        (["like", "asc", "x"], 'sort: expected a field name or [field, "desc"|"asc"]'),
        (["like", "up"], 'sort[1]: expected "desc" or "asc", got \'up\''),
        (["like", "DESC"], 'sort[1]: expected "desc" or "asc", got \'DESC\''),
        (["like", True], 'sort[1]: expected "desc" or "asc", got True'),
        (["", "asc"], "sort[0]: expected a field name"),
        ([3, "desc"], "sort[0]: expected a field name"),
    ],
)
def test_a_malformed_sort_is_an_error_naming_its_path(raw: Any, message: str) -> None:
    with pytest.raises(QueryError, match=f"^{re.escape(message)}"):
        parse_sort(raw)


def test_the_path_of_a_sort_fault_starts_at_the_given_root() -> None:
    with pytest.raises(QueryError, match=r"^params\.sort\[1\]: "):
        parse_sort(["like", "sideways"], path="params.sort")
