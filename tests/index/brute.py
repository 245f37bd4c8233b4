"""A brute-force reference for :class:`index.Index`: every query checks every document.

It shares no code with the index beyond the query nodes and ``distance_km``
(called on one-element arrays, so distances round exactly as the index's do).
The semantics it implements are the specification the property tests hold the
index to: see ``tests/index/test_properties.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property

import attrs
import numpy as np

from index import (
    KIND_FIELD,
    AllOf,
    AnyOf,
    Near,
    Not,
    Query,
    QueryError,
    Range,
    SearchResult,
    Sort,
    Term,
    distance_km,
)


@attrs.frozen(kw_only=True)
class BruteDoc:
    kind: str | None
    terms: dict[str, tuple[str, ...]]
    numbers: dict[str, float]
    counters: dict[str, int]

    def term_values(self, field: str) -> set[str]:
        values = set(self.terms.get(field, ()))
        if field == KIND_FIELD and self.kind is not None:
            values.add(self.kind)
        return values

    def point(self, field: str) -> tuple[float, float] | None:
        lat = self.numbers.get(field + ".lat")
        lon = self.numbers.get(field + ".lon")
        if not field or lat is None or lon is None:
            return None
        if -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
            return lat, lon
        return None


def _point_fields(numbers: Mapping[str, float]) -> set[str]:
    return {name.removesuffix(".lat") for name in numbers if name.endswith(".lat")}


class BruteIndex:
    """The index's semantics, by exhaustive search over a dict of documents."""

    def __init__(self, *, counter_fields: Iterable[str] = ()) -> None:
        self.standard_counters = frozenset(counter_fields)
        #: External id -> position in first-seen order.
        self.positions: dict[str, int] = {}
        #: The searchable documents.
        self.docs: dict[str, BruteDoc] = {}

    def _changed(self) -> None:
        for name in ("counter_fields", "term_fields", "numeric_fields", "geo_fields", "postings"):
            self.__dict__.pop(name, None)

    def reserve(self, item_id: str) -> None:
        self.positions.setdefault(item_id, len(self.positions))

    def put(
        self,
        item_id: str,
        *,
        kind: str | None,
        terms: Mapping[str, Sequence[str]],
        numbers: Mapping[str, float],
        counters: Mapping[str, int],
    ) -> None:
        self.reserve(item_id)
        self._changed()
        self.docs[item_id] = BruteDoc(
            kind=kind,
            terms={field: tuple(values) for field, values in terms.items()},
            numbers=dict(numbers),
            counters=dict(counters),
        )

    def discard(self, item_id: str) -> None:
        self._changed()
        self.docs.pop(item_id, None)

    # -- fields (recomputed after each change) ----------------------------------------

    @cached_property
    def counter_fields(self) -> set[str]:
        counted = {
            name for doc in self.docs.values() for name in doc.counters if name not in doc.numbers
        }
        return counted | self.standard_counters

    @cached_property
    def term_fields(self) -> set[str]:
        return {field for doc in self.docs.values() for field in doc.terms if doc.terms[field]} | (
            {KIND_FIELD} if any(doc.kind is not None for doc in self.docs.values()) else set()
        )

    @cached_property
    def numeric_fields(self) -> set[str]:
        named = {name for doc in self.docs.values() for name in (*doc.numbers, *doc.counters)}
        return named | self.standard_counters

    @cached_property
    def geo_fields(self) -> set[str]:
        return {
            field
            for doc in self.docs.values()
            for field in _point_fields(doc.numbers)
            if doc.point(field) is not None
        }

    @cached_property
    def postings(self) -> dict[str, dict[str, list[str]]]:
        """Field -> value -> external ids in first-seen order, like ``Index.postings``."""
        out: dict[str, dict[str, list[str]]] = {}
        for item_id in self.ordered(self.docs):
            doc = self.docs[item_id]
            fields = set(doc.terms) | ({KIND_FIELD} if doc.kind is not None else set())
            for field in fields:
                for value in doc.term_values(field):
                    out.setdefault(field, {}).setdefault(value, []).append(item_id)
        return out

    # -- queries ---------------------------------------------------------------------

    def value(self, doc: BruteDoc, field: str, counter_fields: set[str]) -> float | None:
        if field in doc.numbers:
            return float(doc.numbers[field])
        if field in doc.counters:
            return float(doc.counters[field])
        return 0.0 if field in counter_fields else None

    def check(self, query: Query, sort: Sort | None = None) -> None:
        terms, numeric, geo = self.term_fields, self.numeric_fields, self.geo_fields
        stack = [query]
        while stack:
            node = stack.pop()
            if isinstance(node, Term) and node.field not in terms:
                raise QueryError(f"unknown term field {node.field!r}")
            if isinstance(node, Range) and node.field not in numeric:
                raise QueryError(f"unknown numeric field {node.field!r}")
            if isinstance(node, Near) and node.field not in geo:
                raise QueryError(f"unknown geo field {node.field!r}")
            if isinstance(node, AllOf | AnyOf):
                stack.extend(node.children)
            if isinstance(node, Not):
                stack.append(node.child)
        if sort is not None and sort.field not in numeric:
            raise QueryError(f"cannot sort by {sort.field!r}")

    def matches(self, doc: BruteDoc, node: Query, counter_fields: set[str]) -> bool:
        if isinstance(node, Term):
            return node.value in doc.term_values(node.field)
        if isinstance(node, Range):
            value = self.value(doc, node.field, counter_fields)
            return (
                value is not None
                and (node.lo is None or value >= node.lo)
                and (node.hi is None or value <= node.hi)
            )
        if isinstance(node, Near):
            point = doc.point(node.field)
            if point is None:
                return False
            km = distance_km(node.lat, node.lon, np.array([point[0]]), np.array([point[1]]))
            return bool(km[0] <= node.km)
        if isinstance(node, AllOf):
            return all(self.matches(doc, child, counter_fields) for child in node.children)
        if isinstance(node, AnyOf):
            return any(self.matches(doc, child, counter_fields) for child in node.children)
        if isinstance(node, Not):
            return not self.matches(doc, node.child, counter_fields)
        raise TypeError(f"not a query node: {node!r}")

    def ordered(self, item_ids: Iterable[str]) -> list[str]:
        return sorted(item_ids, key=self.positions.__getitem__)

    def match(self, query: Query) -> list[str]:
        """Every matching external id, in first-seen order.

        Raises:
            QueryError: the query names an unknown field.
        """
        self.check(query)
        counted = self.counter_fields
        return self.ordered(
            item_id for item_id, doc in self.docs.items() if self.matches(doc, query, counted)
        )

    def search(self, query: Query, *, limit: int, sort: Sort | None = None) -> SearchResult:
        """The first ``limit`` matches and their total, as ``Index.search`` defines them.

        Raises:
            QueryError: the query or sort names an unknown field.
        """
        self.check(query, sort)
        counted = self.counter_fields
        found = self.ordered(
            item_id for item_id, doc in self.docs.items() if self.matches(doc, query, counted)
        )
        if sort is not None:
            counted = self.counter_fields

            def key(item_id: str) -> tuple[bool, float, int]:
                value = self.value(self.docs[item_id], sort.field, counted)
                if value is None:
                    return True, 0.0, self.positions[item_id]
                return False, -value if sort.descending else value, self.positions[item_id]

            found.sort(key=key)
        return SearchResult(ids=found[: max(limit, 0)], total=len(found))
