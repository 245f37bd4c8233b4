"""Query templates: placeholders filled per request; a clause without a value is dropped."""

from __future__ import annotations

from typing import Any

import pytest

from index import EVERYTHING, AnyOf, Near, Range, Term, parse
from ranker import ConfigError, RequestError
from ranker.template import check_template, fill

CITY = {"term": ["city", "$context.city"]}
PRO = {"term": ["kind", "pro"]}


# -- $context -----------------------------------------------------------------------------


def test_context_values_are_substituted() -> None:
    assert fill(CITY, {"city": "austin"}, {}) == Term("city", "austin")


def test_a_template_without_placeholders_is_the_query() -> None:
    template = {"all": [PRO, {"range": ["like", 5, None]}]}

    assert fill(template, {"city": "austin"}, {}) == parse(template)


def test_no_template_matches_everything() -> None:
    assert fill(None, {}, {}) is EVERYTHING


def test_a_missing_context_value_drops_its_clause_and_broadens_an_all() -> None:
    template = {"all": [PRO, CITY]}

    assert fill(template, {"city": "austin"}, {}) == parse(
        {"all": [PRO, {"term": ["city", "austin"]}]}
    )
    assert fill(template, {}, {}) == parse({"all": [PRO]})
    assert fill(template, {"city": None}, {}) == parse({"all": [PRO]})


def test_a_template_dropped_entirely_matches_everything() -> None:
    assert fill(CITY, {}, {}) is EVERYTHING
    assert fill({"all": [CITY, {"any": [CITY]}]}, {}, {}) is EVERYTHING


def test_a_not_of_a_dropped_clause_is_dropped() -> None:
    template = {"all": [PRO, {"not": CITY}]}

    assert fill(template, {}, {}) == parse({"all": [PRO]})
    assert fill(template, {"city": "austin"}, {}) == parse(
        {"all": [PRO, {"not": {"term": ["city", "austin"]}}]}
    )


def test_an_any_keeps_its_clauses_that_have_values() -> None:
    template = {"any": [CITY, {"term": ["area", "$context.area"]}]}

    assert fill(template, {"area": "downtown"}, {}) == parse(
        {"any": [{"term": ["area", "downtown"]}]}
    )


def test_an_empty_any_in_a_template_is_kept_and_matches_nothing() -> None:
    assert fill({"any": []}, {}, {}) == AnyOf(())


# -- $user.top ----------------------------------------------------------------------------

TOP = {"term": ["category", "$user.top.category"]}


def test_user_top_with_no_values_drops_the_clause() -> None:
    assert fill({"all": [PRO, TOP]}, {}, {}) == parse({"all": [PRO]})
    assert fill({"all": [PRO, TOP]}, {}, {"category": []}) == parse({"all": [PRO]})
    assert fill(TOP, {}, {"city": ["austin"]}) is EVERYTHING


def test_user_top_with_one_value_is_a_term() -> None:
    assert fill(TOP, {}, {"category": ["plumbing"]}) == Term("category", "plumbing")


def test_user_top_with_several_values_is_any_of_the_terms() -> None:
    filled = fill(TOP, {}, {"category": ["plumbing", "painting", "roofing"]})

    assert filled == AnyOf(
        (
            Term("category", "plumbing"),
            Term("category", "painting"),
            Term("category", "roofing"),
        )
    )


# -- ranges and near ------------------------------------------------------------------------

PRICE = {"range": ["price", "$context.min", "$context.max"]}


@pytest.mark.parametrize(
    ("context", "expected"),
    [
        ({"min": 10, "max": 50.5}, Range("price", 10.0, 50.5)),
        ({"min": 10}, Range("price", 10.0, None)),
        ({"max": 50}, Range("price", None, 50.0)),
        ({"min": None, "max": 7}, Range("price", None, 7.0)),
    ],
)
def test_a_missing_range_bound_becomes_open(context: dict[str, Any], expected: Range) -> None:
    filled = fill(PRICE, context, {})

    assert filled == expected
    assert isinstance(filled, Range)
    assert all(type(b) is float for b in (filled.lo, filled.hi) if b is not None)


def test_a_range_with_both_bounds_missing_is_dropped() -> None:
    assert fill(PRICE, {}, {}) is EVERYTHING
    assert fill({"all": [PRO, PRICE]}, {}, {}) == parse({"all": [PRO]})


def test_a_range_mixing_a_literal_and_a_placeholder_bound() -> None:
    template = {"range": ["price", 5, "$context.max"]}

    assert fill(template, {"max": 9}, {}) == Range("price", 5.0, 9.0)
    assert fill(template, {}, {}) == Range("price", 5.0, None)


def test_near_placeholders_are_filled_and_a_missing_one_drops_the_clause() -> None:
    template = {"near": ["loc", "$context.lat", "$context.lon", 25]}

    assert fill(template, {"lat": 30.25, "lon": -97.75}, {}) == Near("loc", 30.25, -97.75, 25.0)
    assert fill({"all": [PRO, template]}, {"lat": 30.25}, {}) == parse({"all": [PRO]})


# -- request errors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "context", "key"),
    [
        (CITY, {"city": 3}, "context.city"),
        (CITY, {"city": ["austin"]}, "context.city"),
        (PRICE, {"min": "ten"}, "context.min"),
        (PRICE, {"max": True}, "context.max"),
        ({"near": ["loc", "$context.lat", 0, 5]}, {"lat": "north"}, "context.lat"),
    ],
)
def test_a_context_value_of_the_wrong_type_is_a_request_error(
    template: Any, context: dict[str, Any], key: str
) -> None:
    with pytest.raises(RequestError) as caught:
        fill(template, context, {})

    assert str(caught.value).startswith(f"{key}:")


@pytest.mark.parametrize(
    "template",
    [
        {"term": ["city", "$ctx.city"]},
        {"term": ["city", "$context."]},
        {"range": ["price", "$user.top.price", None]},
        {"all": [PRO, {"term": ["city", "$city"]}]},
    ],
)
def test_an_unknown_placeholder_is_a_request_error(template: Any) -> None:
    with pytest.raises(RequestError, match="unknown placeholder"):
        fill(template, {"city": "austin"}, {})


def test_a_filled_query_that_is_invalid_is_a_request_error() -> None:
    with pytest.raises(RequestError, match=r"retrieval\.near"):
        fill({"near": ["loc", "$context.lat", 0, 5]}, {"lat": 200}, {})


# -- check_template ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "template",
    [
        PRO,
        CITY,
        TOP,
        PRICE,
        {"all": [PRO, {"not": CITY}, {"any": [TOP, PRICE]}]},
        {"near": ["loc", "$context.lat", "$context.lon", "$context.km"]},
        {"range": ["like", 50, None]},
        {"all": []},
    ],
)
def test_check_template_accepts_valid_templates_with_placeholders(template: Any) -> None:
    check_template(template, "surfaces.home.retrieval")


@pytest.mark.parametrize(
    ("template", "where"),
    [
        ({"term": ["kind"]}, "surfaces.home.retrieval.term"),
        ({"match": ["kind", "pro"]}, "surfaces.home.retrieval"),
        ([PRO], "surfaces.home.retrieval"),
        ({"all": [PRO, {"range": ["like", "lots", None]}]}, "surfaces.home.retrieval.all[1]"),
        ({"term": ["city", "$ctx.city"]}, "surfaces.home.retrieval.term[1]"),
        ({"range": ["like", "$user.top.like", None]}, "surfaces.home.retrieval.range[1]"),
        ({"not": {"term": ["city", 3]}}, "surfaces.home.retrieval.not"),
    ],
)
def test_check_template_rejects_bad_shapes_naming_the_path(template: Any, where: str) -> None:
    with pytest.raises(ConfigError) as caught:
        check_template(template, "surfaces.home.retrieval")

    assert str(caught.value).startswith(where)
