"""The query language of ``search`` (and of the ranker's retrieval), parsed into nodes.

A query is a map with exactly one key (DESIGN.md):

``{"all": [q, ...]}``   every sub-query matches (``{"all": []}`` matches everything)
``{"any": [q, ...]}``   at least one matches (``{"any": []}`` matches nothing)
``{"not": q}``          ``q`` does not match
``{"term": [field, value]}``               the item has ``value`` under term field ``field``
``{"range": [field, min|null, max|null]}`` a numeric field within [min, max], inclusive
``{"near": [field, lat, lon, km]}``        a geo field within ``km`` of (lat, lon)

:func:`parse` checks the shape and types and raises :class:`QueryError`
naming the path of what is wrong (``filter.all[1].range[1]``); whether the
fields exist is checked by the index that evaluates the query.
"""

from __future__ import annotations

import math
from typing import Any, Final, NamedTuple

from index.errors import QueryError

MAX_DEPTH: Final = 32
MAX_NODES: Final = 512


class Term(NamedTuple):
    field: str
    value: str


class Range(NamedTuple):
    field: str
    lo: float | None
    hi: float | None


class Near(NamedTuple):
    field: str
    lat: float
    lon: float
    km: float


class AllOf(NamedTuple):
    children: tuple[Query, ...]


class AnyOf(NamedTuple):
    children: tuple[Query, ...]


class Not(NamedTuple):
    child: Query


Query = Term | Range | Near | AllOf | AnyOf | Not

EVERYTHING: Final = AllOf(())


class Sort(NamedTuple):
    """Order results by a numeric field; descending unless ``descending`` is false."""

    field: str
    descending: bool = True


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _number(value: Any, path: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise QueryError(f"{path}: expected a number, got {_type_name(value)}")
    if not math.isfinite(value):
        raise QueryError(f"{path}: expected a finite number, got {value}")
    return float(value)


def _field(value: Any, path: str) -> str:
    if not isinstance(value, str) or not value:
        raise QueryError(f"{path}: expected a field name (a non-empty string)")
    return value


def _args(value: Any, path: str, names: tuple[str, ...]) -> list[Any]:
    if not isinstance(value, list | tuple) or len(value) != len(names):
        raise QueryError(f"{path}: expected [{', '.join(names)}]")
    return list(value)


class _Parser:
    def __init__(self) -> None:
        self.nodes = 0

    def parse(self, raw: Any, path: str, depth: int) -> Query:
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise QueryError(f"{path}: a query may have at most {MAX_NODES} parts")
        if depth > MAX_DEPTH:
            raise QueryError(f"{path}: a query may nest at most {MAX_DEPTH} levels deep")
        if not isinstance(raw, dict) or len(raw) != 1:
            raise QueryError(
                f"{path}: expected a map with one key (all, any, not, term, range or near)"
            )
        ((op, arg),) = raw.items()
        at = f"{path}.{op}"
        if op in ("all", "any"):
            if not isinstance(arg, list | tuple):
                raise QueryError(f"{at}: expected a list of queries")
            children = tuple(self.parse(c, f"{at}[{i}]", depth + 1) for i, c in enumerate(arg))
            return AllOf(children) if op == "all" else AnyOf(children)
        if op == "not":
            return Not(self.parse(arg, at, depth + 1))
        if op == "term":
            field, value = _args(arg, at, ("field", "value"))
            if not isinstance(value, str):
                raise QueryError(f"{at}[1]: expected a string value, got {_type_name(value)}")
            return Term(_field(field, f"{at}[0]"), value)
        if op == "range":
            field, lo, hi = _args(arg, at, ("field", "min or null", "max or null"))
            low = None if lo is None else _number(lo, f"{at}[1]")
            high = None if hi is None else _number(hi, f"{at}[2]")
            if low is not None and high is not None and low > high:
                raise QueryError(f"{at}: min {lo} is greater than max {hi}")
            return Range(_field(field, f"{at}[0]"), low, high)
        if op == "near":
            field, lat, lon, km = _args(arg, at, ("field", "lat", "lon", "km"))
            latitude = _number(lat, f"{at}[1]")
            longitude = _number(lon, f"{at}[2]")
            distance = _number(km, f"{at}[3]")
            if not -90.0 <= latitude <= 90.0:
                raise QueryError(f"{at}[1]: latitude {lat} is outside [-90, 90]")
            if not -180.0 <= longitude <= 180.0:
                raise QueryError(f"{at}[2]: longitude {lon} is outside [-180, 180]")
            if distance < 0:
                raise QueryError(f"{at}[3]: distance {km} km is negative")
            return Near(_field(field, f"{at}[0]"), latitude, longitude, distance)
        raise QueryError(f"{path}: unknown operator {op!r} (all, any, not, term, range or near)")


def parse(raw: Any, path: str = "filter") -> Query:
    """The query ``raw`` (maps and lists, as decoded from msgpack) as nodes.

    Raises:
        QueryError: malformed; the message names the path of the fault.
    """
    return _Parser().parse(raw, path, 0)


def unparse(query: Query) -> dict[str, Any]:
    """The map :func:`parse` reads ``query`` from (``parse(unparse(q)) == q``): how a
    query is stored, e.g. in a decision record."""
    if type(query) is AllOf or type(query) is AnyOf:
        return {"all" if type(query) is AllOf else "any": [unparse(c) for c in query.children]}
    if type(query) is Not:
        return {"not": unparse(query.child)}
    if type(query) is Term:
        return {"term": [query.field, query.value]}
    if type(query) is Range:
        return {"range": [query.field, query.lo, query.hi]}
    if type(query) is Near:
        return {"near": [query.field, query.lat, query.lon, query.km]}
    raise TypeError(f"not a query node: {type(query).__name__}")


def parse_sort(raw: Any, path: str = "sort") -> Sort:
    """``"field"`` (descending), or ``[field, "desc"|"asc"]``.

    Raises:
        QueryError: anything else.
    """
    if isinstance(raw, str):
        return Sort(_field(raw, path))
    if isinstance(raw, list | tuple) and len(raw) == 2:
        field, order = raw
        if order in ("desc", "asc"):
            return Sort(_field(field, f"{path}[0]"), order == "desc")
        raise QueryError(f'{path}[1]: expected "desc" or "asc", got {order!r}')
    raise QueryError(f'{path}: expected a field name or [field, "desc"|"asc"]')


def fields(query: Query) -> list[tuple[str, str]]:
    """Every (kind, field) the query names: kind is ``term``, ``range`` or ``near``."""
    out: list[tuple[str, str]] = []
    stack = [query]
    while stack:
        node = stack.pop()
        if type(node) is Term:
            out.append(("term", node.field))
        elif type(node) is Range:
            out.append(("range", node.field))
        elif type(node) is Near:
            out.append(("near", node.field))
        elif type(node) is AllOf or type(node) is AnyOf:
            stack.extend(node.children)
        elif type(node) is Not:
            stack.append(node.child)
    return out
