"""Bulk loading builds the index that puts build, and refuses what puts would not."""

from __future__ import annotations

import pytest

from index import Document, Index, QueryError, Sort, parse
from tests.index.helpers import COUNTERS, at, ids, put


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
