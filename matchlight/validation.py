"""Turn RPC params into domain commands, or say exactly what is wrong.

Every error names the offending field by its path (``events[3].ts``) and
what was expected. Validation happens before anything is written, so a batch
with one bad event is rejected whole and nothing of it is applied.

The common case (a well-formed event) is checked with cheap ``type() is``
tests; the detailed messages are only built on the error path.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import Any, Final

from actors import MAX_KEY_BYTES, RecordInteraction, RemoveItem, UpsertItem
from index import Query, QueryError, Sort, parse_sort
from index import parse as parse_query
from matchlight.errors import BadRequest
from ranker import DEFAULT_SURFACE, RecommendRequest

MAX_BATCH: Final = 100_000
MAX_TYPE_LEN: Final = 64
MAX_TERMS_PER_FIELD: Final = 256

_EVENT_FIELDS: Final = frozenset({"id", "type", "user", "item", "ts", "weight", "props"})
_ITEM_FIELDS: Final = frozenset({"id", "kind", "terms", "numbers", "active"})


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def params_map(params: Any) -> dict[str, Any]:
    """The request's params map: ``[]`` is an empty map, ``[map]`` that map."""
    if type(params) is list:
        if not params:
            return {}
        if len(params) == 1 and type(params[0]) is dict:
            return params[0]
    raise BadRequest(f"params must be [] or [map], got {_describe(params)}")


def _describe(value: Any) -> str:
    if type(value) is list:
        return f"an array of {len(value)}"
    return _type_name(value)


def require(params: Mapping[str, Any], name: str) -> Any:
    if name not in params:
        raise BadRequest(f"missing field '{name}'")
    return params[name]


def ident(value: Any, path: str) -> str:
    """An id: a non-empty string (or an integer, taken as its decimal string) of ≤ 256 bytes."""
    if type(value) is int:
        value = str(value)
    elif type(value) is not str:
        raise BadRequest(f"{path}: expected a string id, got {_type_name(value)}")
    size = len(value.encode())
    if size == 0 or size > MAX_KEY_BYTES:
        raise BadRequest(f"{path}: id must be 1..{MAX_KEY_BYTES} utf-8 bytes, got {size}")
    checked: str = value
    return checked


def number(value: Any, path: str) -> float:
    if type(value) is float:
        if math.isfinite(value):
            return value
        raise BadRequest(f"{path}: expected a finite number, got {value}")
    if type(value) is int:
        return float(value)
    raise BadRequest(f"{path}: expected a number, got {_type_name(value)}")


def batch(params: Mapping[str, Any], name: str) -> list[Any]:
    value = require(params, name)
    if type(value) is not list:
        raise BadRequest(f"{name}: expected an array, got {_type_name(value)}")
    if len(value) > MAX_BATCH:
        raise BadRequest(f"{name}: at most {MAX_BATCH} per call, got {len(value)}")
    return value


def events(params: Mapping[str, Any]) -> list[RecordInteraction]:
    """``ingest`` params → commands. Raises :class:`BadRequest` naming the field."""
    raw = batch(params, "events")
    out: list[RecordInteraction] = []
    append = out.append
    for i, e in enumerate(raw):
        # Fast path: exactly the shape well-behaved clients send.
        if (
            type(e) is dict
            and type(e.get("id")) is str
            and type(e.get("type")) is str
            and type(e.get("user")) is str
            and type(e.get("item")) is str
            and type(e.get("ts")) in (float, int)
            and len(e) <= 7
            and _EVENT_FIELDS.issuperset(e)
        ):
            weight = e.get("weight", 1.0)
            props = e.get("props")
            if (
                0 < len(e["id"]) <= MAX_KEY_BYTES // 4
                and 0 < len(e["type"]) <= MAX_TYPE_LEN
                and 0 < len(e["user"]) <= MAX_KEY_BYTES // 4
                and 0 < len(e["item"]) <= MAX_KEY_BYTES // 4
                and math.isfinite(e["ts"])
                and type(weight) in (float, int)
                and math.isfinite(weight)
                and (props is None or (type(props) is dict and _str_keys(props)))
            ):
                append(
                    RecordInteraction(
                        id=e["id"],
                        type=e["type"],
                        user=e["user"],
                        item=e["item"],
                        ts=float(e["ts"]),
                        weight=float(weight),
                        props=props or {},
                    )
                )
                continue
        append(_event_slow(e, f"events[{i}]"))
    return out


def _str_keys(mapping: dict[Any, Any]) -> bool:
    return all(type(k) is str for k in mapping)


def _event_slow(e: Any, path: str) -> RecordInteraction:
    """Validate one event field by field, raising on the first problem."""
    if type(e) is not dict:
        raise BadRequest(f"{path}: expected a map, got {_type_name(e)}")
    for key in e:
        if key not in _EVENT_FIELDS:
            raise BadRequest(
                f"{path}: unknown field {key!r} (allowed: {', '.join(sorted(_EVENT_FIELDS))})"
            )
    for key in ("id", "type", "user", "item", "ts"):
        if key not in e:
            raise BadRequest(f"{path}.{key}: missing")
    event_type = e["type"]
    if type(event_type) is not str:
        raise BadRequest(f"{path}.type: expected a string, got {_type_name(event_type)}")
    if not 0 < len(event_type) <= MAX_TYPE_LEN:
        raise BadRequest(f"{path}.type: must be 1..{MAX_TYPE_LEN} characters")
    props = e.get("props")
    if props is not None:
        if type(props) is not dict:
            raise BadRequest(f"{path}.props: expected a map, got {_type_name(props)}")
        for key in props:
            if type(key) is not str:
                raise BadRequest(f"{path}.props: keys must be strings, got {_type_name(key)}")
    return RecordInteraction(
        id=ident(e["id"], f"{path}.id"),
        type=event_type,
        user=ident(e["user"], f"{path}.user"),
        item=ident(e["item"], f"{path}.item"),
        ts=number(e["ts"], f"{path}.ts"),
        weight=number(e.get("weight", 1.0), f"{path}.weight"),
        props=props or {},
    )


def items(params: Mapping[str, Any], *, now: float) -> list[UpsertItem]:
    """``upsert_items`` params → commands. Raises :class:`BadRequest` naming the field."""
    out: list[UpsertItem] = []
    for i, raw in enumerate(batch(params, "items")):
        path = f"items[{i}]"
        if type(raw) is not dict:
            raise BadRequest(f"{path}: expected a map, got {_type_name(raw)}")
        for key in raw:
            if key not in _ITEM_FIELDS:
                raise BadRequest(
                    f"{path}: unknown field {key!r} (allowed: {', '.join(sorted(_ITEM_FIELDS))})"
                )
        if "id" not in raw:
            raise BadRequest(f"{path}.id: missing")
        kind = raw.get("kind")
        if kind is not None and type(kind) is not str:
            raise BadRequest(f"{path}.kind: expected a string, got {_type_name(kind)}")
        active = raw.get("active")
        if active is not None and type(active) is not bool:
            raise BadRequest(f"{path}.active: expected true or false, got {_type_name(active)}")
        out.append(
            UpsertItem(
                event_id=f"item-upsert/{uuid.uuid4().hex}",
                item=ident(raw["id"], f"{path}.id"),
                ts=now,
                kind=kind,
                terms=_terms(raw.get("terms"), f"{path}.terms"),
                numbers=_numbers(raw.get("numbers"), f"{path}.numbers"),
                active=active,
            )
        )
    return out


def _field_name(key: Any, path: str) -> str:
    if type(key) is not str or not key:
        raise BadRequest(f"{path}: field names must be non-empty strings, got {key!r}")
    return key


def _terms(raw: Any, path: str) -> dict[str, tuple[str, ...] | None] | None:
    if raw is None:
        return None
    if type(raw) is not dict:
        raise BadRequest(f"{path}: expected a map of field to string or [string]")
    out: dict[str, tuple[str, ...] | None] = {}
    for key, value in raw.items():
        field = _field_name(key, path)
        where = f"{path}.{field}"
        if value is None:
            out[field] = None
        elif type(value) is str:
            out[field] = (value,)
        elif type(value) is list:
            if len(value) > MAX_TERMS_PER_FIELD:
                raise BadRequest(f"{where}: at most {MAX_TERMS_PER_FIELD} values")
            for j, v in enumerate(value):
                if type(v) is not str:
                    raise BadRequest(f"{where}[{j}]: expected a string, got {_type_name(v)}")
            out[field] = tuple(value)
        else:
            raise BadRequest(f"{where}: expected a string or [string], got {_type_name(value)}")
    return out


# A geo field F is the pair of numbers "F.lat" and "F.lon" (see index.inverted).
_COORDINATE_LIMITS: Final = {".lat": 90.0, ".lon": 180.0}


def _numbers(raw: Any, path: str) -> dict[str, float | None] | None:
    if raw is None:
        return None
    if type(raw) is not dict:
        raise BadRequest(f"{path}: expected a map of field to number")
    out: dict[str, float | None] = {}
    for key, value in raw.items():
        field = _field_name(key, path)
        out[field] = None if value is None else number(value, f"{path}.{key}")
        limit = _COORDINATE_LIMITS.get(field[-4:])
        if limit is not None and value is not None and not -limit <= value <= limit:
            raise BadRequest(f"{path}.{key}: a coordinate must be within ±{limit:g}, got {value}")
    return out


# -- search -----------------------------------------------------------------------

MAX_SEARCH_LIMIT: Final = 10_000
DEFAULT_SEARCH_LIMIT: Final = 100
_SEARCH_FIELDS: Final = frozenset({"filter", "limit", "sort", "_trace"})


def search(params: Mapping[str, Any]) -> tuple[Query, int, Sort | None]:
    """``search`` params → (query, limit, sort). Fields are checked by the index itself."""
    unknown = params.keys() - _SEARCH_FIELDS
    if unknown:
        raise BadRequest(f"unknown field {sorted(unknown)[0]!r} (filter, limit, sort)")
    raw_limit = params.get("limit", DEFAULT_SEARCH_LIMIT)
    if type(raw_limit) is not int or not 1 <= raw_limit <= MAX_SEARCH_LIMIT:
        raise BadRequest(
            f"limit: expected an integer from 1 to {MAX_SEARCH_LIMIT}, got {raw_limit!r}"
        )
    try:
        query = parse_query(require(params, "filter"))
        sort = None if params.get("sort") is None else parse_sort(params["sort"])
    except QueryError as exc:
        raise BadRequest(str(exc)) from None
    return query, raw_limit, sort


def removals(params: Mapping[str, Any], *, now: float) -> list[RemoveItem]:
    """``remove_items`` params → commands."""
    ids = [ident(raw, f"ids[{i}]") for i, raw in enumerate(batch(params, "ids"))]
    # Every command of a batch is decided against the state before the batch,
    # so a repeated id would be removed (and counted) twice.
    return [
        RemoveItem(event_id=f"item-remove/{uuid.uuid4().hex}", item=item_id, ts=now)
        for item_id in dict.fromkeys(ids)
    ]


MAX_K: Final = 1000
MAX_CONTEXT_KEYS: Final = 64
_RECOMMEND_FIELDS: Final = frozenset(
    {"user", "surface", "k", "context", "filter", "explain", "_trace"}
)


def recommend(params: Mapping[str, Any]) -> RecommendRequest:
    """``recommend`` params → a request. The filter's fields are checked by the ranker."""
    unknown = params.keys() - _RECOMMEND_FIELDS
    if unknown:
        raise BadRequest(
            f"unknown field {sorted(unknown)[0]!r} (user, surface, k, context, filter, explain)"
        )
    user = ident(require(params, "user"), "user")
    surface = params.get("surface", DEFAULT_SURFACE)
    if surface is None:
        surface = DEFAULT_SURFACE
    surface = ident(surface, "surface")
    k = params.get("k")
    if k is not None and (type(k) is not int or not 1 <= k <= MAX_K):
        raise BadRequest(f"k: expected an integer from 1 to {MAX_K}, got {_describe(k)}")
    context = params.get("context") or {}
    if not isinstance(context, dict) or not _str_keys(context):
        raise BadRequest(f"context: expected a map with string keys, got {_describe(context)}")
    if len(context) > MAX_CONTEXT_KEYS:
        raise BadRequest(f"context: at most {MAX_CONTEXT_KEYS} keys, got {len(context)}")
    for key, value in context.items():
        if value is not None and not isinstance(value, str | int | float):
            raise BadRequest(
                f"context.{key}: expected a string or a number, got {_describe(value)}"
            )
    explain = params.get("explain", False)
    if type(explain) is not bool:
        raise BadRequest(f"explain: expected true or false, got {_describe(explain)}")
    query = None
    if params.get("filter") is not None:
        try:
            query = parse_query(params["filter"])
        except QueryError as exc:
            raise BadRequest(str(exc)) from None
    return RecommendRequest(
        user=user, surface=surface, k=k, context=context, filter=query, explain=explain
    )
