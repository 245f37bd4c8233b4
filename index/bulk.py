"""Bulk loading of the index: a rebuild's documents gathered into columns in one pass.

:meth:`index.Index.load` builds each bitmap and numeric field once from
sorted id lists, rather than putting items one by one; :func:`collect_columns`
is its first stage, the hot loop of a startup rebuild (plain dict and list
operations only).
"""

from __future__ import annotations

from typing import NamedTuple

from index.document import KIND_FIELD, DocumentFields, StoredDoc


class Columns(NamedTuple):
    """What :meth:`index.Index.load` gathers before building bitmaps and fields from it."""

    #: field -> value -> internal ids
    postings: dict[str, dict[str, list[int]]]
    #: field -> (internal ids, values)
    numeric: dict[str, tuple[list[int], list[float]]]
    #: counter field -> items whose value of it is a counter
    refs: dict[str, int]
    #: the internal ids loaded
    loaded: list[int]


def collect_columns(
    documents: list[DocumentFields],
    *,
    owned: bool,
    internal: dict[str, int],
    external: list[str],
    docs: list[StoredDoc | None],
) -> Columns:
    """Gather the documents' postings and numeric columns in plain lists.

    Reserves each new item's internal id (``internal``, ``external`` and
    ``docs`` are the index's id tables, extended in place) and keeps its
    document in ``docs`` (with ``owned``, its numbers and counters maps as they
    are, else copies).
    """
    postings: dict[str, dict[str, list[int]]] = {}
    kinds: dict[str, list[int]] = {}
    numeric: dict[str, tuple[list[int], list[float]]] = {}
    refs: dict[str, int] = {}
    loaded: list[int] = []
    # The hot loop of a startup rebuild: plain dict and list operations only.
    for item_id, kind, terms, numbers, counters in documents:
        doc = internal.get(item_id)
        if doc is None:
            doc = internal[item_id] = len(external)
            external.append(item_id)
            docs.append(None)
        if owned:
            docs[doc] = StoredDoc(kind, terms, numbers, counters)  # type: ignore[arg-type]
        else:
            docs[doc] = StoredDoc(kind, terms, dict(numbers), dict(counters))
        loaded.append(doc)
        if kind is not None:
            ids = kinds.get(kind)
            if ids is None:
                kinds[kind] = [doc]
            else:
                ids.append(doc)
        for field, values in terms.items():
            by_value = postings.get(field)
            if by_value is None:
                if not values:
                    continue  # a field without values is not a field (as in put)
                by_value = postings[field] = {}
            for value in values:
                ids = by_value.get(value)
                if ids is None:
                    by_value[value] = [doc]
                else:
                    ids.append(doc)
        for name, count in counters.items():
            if name not in numbers:
                refs[name] = refs.get(name, 0) + 1
                column = numeric.get(name)
                if column is None:
                    column = numeric[name] = ([], [])
                column[0].append(doc)
                column[1].append(count)
        for name, number in numbers.items():
            column = numeric.get(name)
            if column is None:
                column = numeric[name] = ([], [])
            column[0].append(doc)
            column[1].append(number)
    if kinds:
        by_kind = postings.setdefault(KIND_FIELD, {})
        for kind, ids in kinds.items():
            # A term field "kind" and the item kind share postings; ids stay sorted below.
            by_kind.setdefault(kind, []).extend(ids)
    return Columns(postings, numeric, refs, loaded)
