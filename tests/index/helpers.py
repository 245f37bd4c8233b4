"""Shorthands for the example tests of :class:`index.Index`: putting an item with only the
parts a test cares about, a point's numbers, and the ids a raw query finds."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from index import Index, Sort, parse

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
    """``index.put`` with empty terms, numbers and counters where not given."""
    index.put(item_id, kind=kind, terms=terms or {}, numbers=numbers or {}, counters=counters or {})


def at(lat: float, lon: float, **numbers: float) -> dict[str, float]:
    """The numbers of a point in the geo field ``loc``, with any other ``numbers``."""
    return {"loc.lat": lat, "loc.lon": lon, **numbers}


def ids(index: Index, raw: Any, *, sort: Sort | None = None, limit: int = 100) -> list[str]:
    """The ids the raw (JSON-shaped) query finds, in order."""
    return index.search(parse(raw), limit=limit, sort=sort).ids
