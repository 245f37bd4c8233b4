"""What the index holds of an item: its document, and the term pairs and geo points in it.

A document is an item's ``kind``, ``terms`` (field -> values), ``numbers``
(field -> value) and interaction ``counters`` (event type -> count). The
index (:mod:`index.inverted`) posts its kind and terms as ``(field, value)``
pairs (:func:`term_pairs`) and makes a geo point of each pair of numbers
``F.lat`` and ``F.lon`` within range (:func:`geo_points`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final, NamedTuple

KIND_FIELD: Final = "kind"
LAT: Final = ".lat"
LON: Final = ".lon"

Terms = Mapping[str, Sequence[str]]


class StoredDoc(NamedTuple):
    """What the index holds of one searchable item (its previous put)."""

    kind: str | None
    terms: Terms
    numbers: dict[str, float]
    counters: dict[str, int]


EMPTY: Final = StoredDoc(None, {}, {}, {})

#: A :class:`Document` or a plain tuple of its fields (cheaper to make by the 100,000).
DocumentFields = tuple[str, str | None, Terms, Mapping[str, float], Mapping[str, int]]


class Document(NamedTuple):
    """One searchable item for :meth:`Index.load <index.Index.load>`: the arguments of
    :meth:`Index.put <index.Index.put>`."""

    id: str
    kind: str | None
    terms: Terms
    numbers: Mapping[str, float]
    counters: Mapping[str, int]


def term_pairs(kind: str | None, terms: Terms) -> set[tuple[str, str]]:
    """The ``(field, value)`` postings of a document: its terms, and its kind under ``kind``."""
    pairs = {(field, value) for field, values in terms.items() for value in values}
    if kind is not None:
        pairs.add((KIND_FIELD, kind))
    return pairs


def geo_points(numbers: Mapping[str, float]) -> dict[str, tuple[float, float]]:
    """The geo fields of a document: ``F -> (lat, lon)`` for each valid ``F.lat``, ``F.lon``."""
    points = {}
    for name, lat in numbers.items():
        if name.endswith(LAT):
            field = name[: -len(LAT)]
            lon = numbers.get(field + LON)
            if field and lon is not None and -90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0:
                points[field] = (lat, lon)
    return points
