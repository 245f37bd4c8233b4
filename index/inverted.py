"""The inverted index over the searchable items: postings, numeric fields, geo fields.

Items are known by their external id (a string) and stored under a dense
internal id (``doc``) handed out in the order items are first seen
(:meth:`Index.reserve`). Internal ids are never reused, so the mapping is
stable for the life of the index, and an index rebuilt by reserving the
same ids in the same order (the order of each item's first event in the
log) numbers items identically: results with ties come out identically too.

Only searchable items (those that exist and are active) are in the index;
:meth:`Index.put` replaces an item's searchable document, changing only the
postings that differ, and :meth:`Index.discard` takes it out.

Fields:

- term fields: the item's ``terms``, and its ``kind`` under the field ``kind``;
- numeric fields: the item's ``numbers`` and its interaction counters per
  event type (``like``, ``view``, …). A counter field is 0 for items without
  that counter; a ``numbers`` entry of the same name takes precedence;
- geo fields: ``F`` for an item whose ``numbers`` hold both ``F.lat`` and ``F.lon``.

A field is known while at least one searchable item has it (counter fields
named at construction are always known). A query naming an unknown field, or
a field of the wrong kind, raises :class:`~index.errors.QueryError`.

Results are in internal id order (first seen first) unless sorted; a sort by
value breaks ties by internal id. Pure: no Trio, no I/O, not thread-safe.
"""

from __future__ import annotations

import array
import itertools
import operator
from collections.abc import Iterable, KeysView, Mapping
from typing import Final

import attrs
import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

from index.bulk import Columns, collect_columns
from index.document import (
    EMPTY,
    LAT,
    LON,
    DocumentFields,
    StoredDoc,
    Terms,
    geo_points,
    term_pairs,
)
from index.errors import QueryError
from index.geo import GeoField
from index.numeric import NumericField
from index.query import AllOf, AnyOf, Near, Not, Query, Range, Sort, Term, fields

_NOTHING: Final = BitMap()
_NO_POSTINGS: Final[dict[str, BitMap]] = {}


@attrs.frozen(kw_only=True)
class SearchResult:
    #: External ids, in result order, at most ``limit`` of them.
    ids: list[str]
    #: Every match, not only those returned.
    total: int


@attrs.frozen(kw_only=True)
class IndexStatistics:
    items: int
    ids: int
    term_fields: int
    postings: int
    numeric_fields: int
    geo_fields: int


def _known(names: Iterable[str]) -> str:
    names = sorted(names)
    shown = ", ".join(names[:20]) + (", …" if len(names) > 20 else "")
    return f"known: {shown}" if names else "the index has none"


class Index:
    """An incrementally maintained inverted index of searchable items."""

    def __init__(self, *, counter_fields: Iterable[str] = ()) -> None:
        self._external: list[str] = []
        self._internal: dict[str, int] = {}
        self._docs: list[StoredDoc | None] = []
        #: Every searchable item.
        self.live = BitMap()
        self._terms: dict[str, dict[str, BitMap]] = {}
        self._numeric: dict[str, NumericField] = {}
        self._geo: dict[str, GeoField] = {}
        #: Per internal id: how many times its kind or terms changed since this index began.
        self._term_versions = np.zeros(1024, dtype=np.uint32)
        self._standard_counters = frozenset(counter_fields)
        # field -> searchable items whose value of it is a counter (see _set_counter_default)
        self._counter_refs: dict[str, int] = {}
        for name in self._standard_counters:
            self._numeric[name] = NumericField(name, default=0.0)

    # -- ids ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.live)

    def __contains__(self, item_id: object) -> bool:
        doc = self._internal.get(item_id) if isinstance(item_id, str) else None
        return doc is not None and doc in self.live

    def reserve(self, item_id: str) -> int:
        """The internal id of ``item_id``, handing out the next one if it is new."""
        doc = self._internal.get(item_id)
        if doc is None:
            doc = self._internal[item_id] = len(self._external)
            self._external.append(item_id)
            self._docs.append(None)
        return doc

    def doc_of(self, item_id: str) -> int | None:
        """The internal id of ``item_id``, or ``None`` if it was never seen."""
        return self._internal.get(item_id)

    def external(self, docs: Iterable[int]) -> list[str]:
        """The external ids of internal ids."""
        docs = list(docs)
        if len(docs) > 1:
            return list(operator.itemgetter(*docs)(self._external))
        return [self._external[d] for d in docs]

    # -- maintenance ----------------------------------------------------------------

    def put(
        self,
        item_id: str,
        *,
        kind: str | None = None,
        terms: Terms,
        numbers: Mapping[str, float],
        counters: Mapping[str, int],
    ) -> None:
        """Make ``item_id`` searchable with this document, replacing its previous one.

        ``terms`` must not be mutated afterwards (the index keeps it to see
        whether the next put changes terms at all); numbers and counters are copied.
        """
        doc = self.reserve(item_id)
        old = self._docs[doc]
        if old is None:
            old = EMPTY
            self.live.add(doc)
        if kind != old.kind or terms is not old.terms:
            self._update_terms(doc, term_pairs(old.kind, old.terms), term_pairs(kind, terms))
        kept_numbers, kept_counters = old.numbers, old.counters
        if numbers != old.numbers:
            self._update_numbers(doc, old, numbers, counters)
            self._update_geo(doc, geo_points(old.numbers), geo_points(numbers))
            kept_numbers, kept_counters = dict(numbers), dict(counters)
        elif counters != old.counters:
            # The ingest path: an interaction bumped a counter. Counters only grow.
            if all(name in counters for name in old.counters):
                self._update_counters(doc, old.counters, counters, numbers)
            else:
                self._update_numbers(doc, old, numbers, counters)
            kept_counters = dict(counters)
        self._docs[doc] = StoredDoc(kind, terms, kept_numbers, kept_counters)

    def load(self, documents: Iterable[DocumentFields], *, owned: bool = False) -> None:
        """Put many items at once into an index that has no searchable items yet.

        The same index as calling :meth:`put` for each in turn (ids already
        reserved keep theirs), built in bulk: what a rebuild at startup uses.
        With ``owned`` the index keeps the documents' numbers and counters
        maps instead of copying them: the caller must not use them again.

        Raises:
            ValueError: the index already has searchable items, or an item
                comes twice (the index is left as it was).
        """
        if self.live:
            raise ValueError("load() needs an index without searchable items")
        documents = list(documents)
        if len({document[0] for document in documents}) != len(documents):
            seen: set[str] = set()
            for document in documents:
                if document[0] in seen:
                    raise ValueError(f"load() got {document[0]!r} twice")
                seen.add(document[0])
        self._install(
            collect_columns(
                documents,
                owned=owned,
                internal=self._internal,
                external=self._external,
                docs=self._docs,
            )
        )

    def _install(self, columns: Columns) -> None:
        """Turn collected columns into the index's bitmaps and fields."""
        postings, numeric, refs, loaded = columns
        self.live = BitMap(array.array("I", loaded))
        for name, (lat_ids, lats) in list(numeric.items()):
            if not name.endswith(LAT) or name == LAT:
                continue
            lon_column = numeric.get(name[: -len(LAT)] + LON)
            if lon_column is None:
                continue
            self._load_geo(name[: -len(LAT)], lat_ids, lats, *lon_column)
        for field, by_value in postings.items():
            self._terms[field] = {
                value: BitMap(array.array("I", ids)) for value, ids in by_value.items()
            }
        for name, (ids, numbers_of) in numeric.items():
            numeric_field = self._numeric.get(name)
            if numeric_field is None:
                numeric_field = self._numeric[name] = NumericField(name)
            numeric_field.load(np.array(ids, dtype=np.uint32), np.array(numbers_of, dtype=float))
        self._counter_refs = refs
        for name in refs:
            self._set_counter_default(name)

    def _load_geo(
        self,
        field: str,
        lat_ids: list[int],
        lats: list[float],
        lon_ids: list[int],
        lons: list[float],
    ) -> None:
        """Load geo field ``field`` from its ``.lat`` and ``.lon`` columns (as
        :func:`~index.document.geo_points` makes points).

        Costs in proportion to the columns, not to the ids: a catalogue may have
        many geo fields that few items have.
        """
        # Each item is in a column at most once: the items with both, ascending.
        ids, at_lat, at_lon = np.intersect1d(
            np.array(lat_ids, dtype=np.uint32),
            np.array(lon_ids, dtype=np.uint32),
            assume_unique=True,
            return_indices=True,
        )
        lat_of = np.array(lats, dtype=float)[at_lat]
        lon_of = np.array(lons, dtype=float)[at_lon]
        # Only `numbers` make points: drop values that came from a counter of that name.
        docs, lat_name, lon_name = self._docs, field + LAT, field + LON
        ok = (np.abs(lat_of) <= 90.0) & (np.abs(lon_of) <= 180.0)  # NaN fails both
        for position, doc in enumerate(ids.tolist()):
            numbers = docs[doc].numbers
            if lat_name not in numbers or lon_name not in numbers:
                ok[position] = False
        if ok.any():
            self._geo[field] = geo = GeoField(field)
            geo.load(ids[ok], lat_of[ok], lon_of[ok])

    def discard(self, item_id: str) -> None:
        """Make ``item_id`` unsearchable (removed or inactive); its internal id stays."""
        doc = self._internal.get(item_id)
        if doc is None:
            return
        old = self._docs[doc]
        if old is None:
            return
        self._update_terms(doc, term_pairs(old.kind, old.terms), set())
        self._update_numbers(doc, old, {}, {})
        self._update_geo(doc, geo_points(old.numbers), {})
        self._docs[doc] = None
        self.live.discard(doc)

    def _update_terms(self, doc: int, old: set[tuple[str, str]], new: set[tuple[str, str]]) -> None:
        if doc >= len(self._term_versions):
            grown = np.zeros(max(doc + 1, 2 * len(self._term_versions)), dtype=np.uint32)
            grown[: len(self._term_versions)] = self._term_versions
            self._term_versions = grown
        self._term_versions[doc] += 1
        for field, value in old - new:
            postings = self._terms[field]
            bitmap = postings[value]
            bitmap.discard(doc)
            if not bitmap:
                del postings[value]
                if not postings:
                    del self._terms[field]
        for field, value in new - old:
            postings = self._terms.setdefault(field, {})
            posting = postings.get(value)
            if posting is None:
                posting = postings[value] = BitMap()
            posting.add(doc)

    def _update_numbers(
        self, doc: int, old: StoredDoc, numbers: Mapping[str, float], counters: Mapping[str, int]
    ) -> None:
        before = {**old.counters, **old.numbers}
        after = {**counters, **numbers}
        gone = before.keys() - after.keys()
        for name in gone:
            self._numeric[name].unset(doc)
        for name, value in after.items():
            if before.get(name) != value:
                field = self._numeric.get(name)
                if field is None:
                    field = self._numeric[name] = NumericField(name)
                field.set(doc, value)
        # Which fields get their value from a counter changed? (See _set_counter_default.)
        was = old.counters.keys() - old.numbers.keys()
        now = counters.keys() - numbers.keys()
        for name in was - now:
            self._counter_refs[name] -= 1
            self._set_counter_default(name)
        for name in now - was:
            self._counter_refs[name] = self._counter_refs.get(name, 0) + 1
            self._set_counter_default(name)
        for name in gone:
            field = self._numeric.get(name)
            if field is not None:
                self._drop_if_unused(name, field)

    def _update_counters(
        self,
        doc: int,
        old: Mapping[str, int],
        counters: Mapping[str, int],
        numbers: Mapping[str, float],
    ) -> None:
        """:meth:`_update_numbers` when only counters changed and none disappeared."""
        for name, value in counters.items():
            if name in numbers or old.get(name) == value:
                continue  # shadowed by a number, or unchanged
            field = self._numeric.get(name)
            if field is None:
                field = self._numeric[name] = NumericField(name)
            field.set(doc, value)
            if name not in old:
                self._counter_refs[name] = self._counter_refs.get(name, 0) + 1
                self._set_counter_default(name)

    def _set_counter_default(self, name: str) -> None:
        """A field is a counter field (0 when missing) while some item counts it."""
        refs = self._counter_refs.get(name, 0)
        if refs == 0:
            self._counter_refs.pop(name, None)
        field = self._numeric.get(name)
        if field is not None:
            counted = refs > 0 or name in self._standard_counters
            field.default = 0.0 if counted else None
            self._drop_if_unused(name, field)

    def _drop_if_unused(self, name: str, field: NumericField) -> None:
        if (
            not len(field)
            and name not in self._standard_counters
            and name not in self._counter_refs
        ):
            del self._numeric[name]

    def _update_geo(
        self,
        doc: int,
        old: Mapping[str, tuple[float, float]],
        new: Mapping[str, tuple[float, float]],
    ) -> None:
        for name in old.keys() - new.keys():
            gone = self._geo[name]
            gone.unset(doc)
            if not len(gone):
                del self._geo[name]
        for name, (lat, lon) in new.items():
            if old.get(name) != (lat, lon):
                geo = self._geo.get(name)
                if geo is None:
                    geo = self._geo[name] = GeoField(name)
                geo.set(doc, lat, lon)

    # -- queries ----------------------------------------------------------------------

    def check(self, query: Query, sort: Sort | None = None) -> None:
        """Raise :class:`QueryError` if the query or sort names a field the index lacks."""
        for kind, name in fields(query):
            if kind == "term" and name not in self._terms:
                raise QueryError(f"unknown term field {name!r} ({_known(self._terms)})")
            if kind == "range" and name not in self._numeric:
                raise QueryError(f"unknown numeric field {name!r} ({_known(self._numeric)})")
            if kind == "near" and name not in self._geo:
                raise QueryError(f"unknown geo field {name!r} ({_known(self._geo)})")
        if sort is not None and sort.field not in self._numeric:
            raise QueryError(
                f"cannot sort by {sort.field!r}: not a numeric field ({_known(self._numeric)})"
            )

    def match(self, query: Query, within: BitMap | None = None) -> BitMap:
        """The internal ids of searchable items matching ``query`` (a new bitmap).

        With ``within``, only those of its items (cheaper than intersecting afterwards).

        Raises:
            QueryError: the query names an unknown field.
        """
        self.check(query)
        scope = self.live if within is None else within & self.live
        return BitMap(self._eval(query, scope))

    def search(self, query: Query, *, limit: int, sort: Sort | None = None) -> SearchResult:
        """The first ``limit`` matches (by ``sort``, else first seen first) and the total.

        Raises:
            QueryError: the query or sort names an unknown field.
            ValueError: ``limit`` is negative.
        """
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        self.check(query, sort)
        if sort is not None and type(query) is Range and query.field == sort.field:
            # "price in [a, b], most expensive first": walk that field's buckets only.
            top, total = self._numeric[sort.field].range_top(
                query.lo, query.hi, self.live, limit, descending=sort.descending
            )
            return SearchResult(ids=self.external(top), total=total)
        matches = self._eval(query, self.live)
        if sort is not None:
            docs: Iterable[int] = self._numeric[sort.field].order(
                matches, limit, descending=sort.descending
            )
        else:
            docs = itertools.islice(matches, limit)
        return SearchResult(ids=self.external(docs), total=len(matches))

    def _eval(self, node: Query, within: BitMap) -> BitMap:
        """The items of ``within`` matching ``node``. May return (never mutate) internal bitmaps."""
        kind = type(node)
        if kind is Term:
            assert isinstance(node, Term)
            postings = self._terms[node.field].get(node.value)
            if postings is None:
                return BitMap()
            return postings if within is self.live else postings & within
        if kind is AllOf:
            assert isinstance(node, AllOf)
            current = within
            for child in sorted(node.children, key=self._cost):
                if type(child) is Not:
                    current = current - self._eval(child.child, current)
                else:
                    current = self._eval(child, current)
                if not current:
                    break
            return current
        if kind is AnyOf:
            assert isinstance(node, AnyOf)
            parts = [self._eval(child, within) for child in node.children]
            return BitMap.union(*parts) if parts else BitMap()
        if kind is Not:
            assert isinstance(node, Not)
            return within - self._eval(node.child, within)
        if kind is Range:
            assert isinstance(node, Range)
            return self._numeric[node.field].keep(within, node.lo, node.hi)
        if kind is Near:
            assert isinstance(node, Near)
            return self._geo[node.field].keep(within, node.lat, node.lon, node.km)
        raise TypeError(f"not a query node: {node!r}")

    def _cost(self, node: Query) -> float:
        """Rough cost of evaluating ``node`` first in an ``all``: cheap and narrow first."""
        kind = type(node)
        if kind is Term:
            assert isinstance(node, Term)
            postings = self._terms[node.field].get(node.value)
            return 0.0 if postings is None else float(len(postings))
        if kind is AnyOf or kind is AllOf:
            return 1e12
        if kind is Range or kind is Near:
            return 1e13  # checked against what the narrow parts left
        return 1e14  # Not: subtract from what is left

    # -- per-item reads (for the ranker) -------------------------------------------

    def term_postings(self, field: str, value: str) -> BitMap:
        """The searchable items with ``value`` under term field ``field`` (empty if none).

        The index's own bitmap: do not mutate it.
        """
        postings = self._terms.get(field, _NO_POSTINGS).get(value)
        return _NOTHING if postings is None else postings

    def document(self, doc: int) -> tuple[str | None, Terms] | None:
        """The kind and terms of a searchable item by internal id, ``None`` if not searchable."""
        if doc >= len(self._docs):
            return None
        entry = self._docs[doc]
        return None if entry is None else (entry.kind, entry.terms)

    def term_versions(self, docs: npt.NDArray[np.uint32]) -> npt.NDArray[np.uint32]:
        """For each item, a number that changes whenever its kind or terms change.

        Lets a reader cache something derived from an item's terms (the
        ranker's item vectors) and see cheaply which entries went stale. It
        may also move when they did not (a put with a new but equal terms
        mapping): a reader then recomputes for nothing. Items loaded in bulk
        start at 0.
        """
        versions = self._term_versions
        inside = docs < len(versions)
        return np.where(inside, versions[np.where(inside, docs, 0)], 0).astype(np.uint32)

    def values(self, field: str, docs: npt.NDArray[np.uint32]) -> npt.NDArray[np.float64]:
        """The value of numeric field ``field`` for each of ``docs``.

        Items without a value get the field's default (0 for counters), else NaN;
        an unknown field gives all NaN, or all 0 for a standard counter.
        """
        numeric = self._numeric.get(field)
        if numeric is None:
            fill = 0.0 if field in self._standard_counters else np.nan
            return np.full(len(docs), fill)
        return numeric.values_of(docs)

    # -- inspection -------------------------------------------------------------------

    def postings(self) -> dict[str, dict[str, list[str]]]:
        """Every term posting as external ids: for tests and debugging."""
        return {
            field: {value: self.external(bitmap) for value, bitmap in values.items()}
            for field, values in self._terms.items()
        }

    def numeric_field_names(self) -> KeysView[str]:
        """The numeric fields the index has now (a live view: do not keep it across changes)."""
        return self._numeric.keys()

    def statistics(self) -> IndexStatistics:
        return IndexStatistics(
            items=len(self.live),
            ids=len(self._external),
            term_fields=len(self._terms),
            postings=sum(len(values) for values in self._terms.values()),
            numeric_fields=len(self._numeric),
            geo_fields=len(self._geo),
        )
