"""Turn RPC params into domain commands, or say exactly what is wrong.

Every error names the offending field by its path (``events[3].ts``) and
what was expected. Validation happens before anything is written, so a batch
with one bad event is rejected whole and nothing of it is applied.

The common case (a well-formed event) is checked with cheap ``type() is``
tests; the detailed messages are only built on the error path.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from typing import Any, Final

from actors import DEFAULT_CLOCK_SKEW_S, MAX_KEY_BYTES, RecordInteraction, RemoveItem, UpsertItem
from index import Query, QueryError, Sort, parse_sort
from index import parse as parse_query
from matchlight.errors import BadRequest
from ranker import DEFAULT_SURFACE, RecommendRequest

MAX_BATCH: Final = 100_000
MAX_TYPE_LEN: Final = 64
MAX_TERMS_PER_FIELD: Final = 256
#: Term fields, and numbers, one item may carry (each).
MAX_FIELDS_PER_ITEM: Final = 256
#: Longest field name (of terms or numbers), in characters.
MAX_FIELD_NAME: Final = 128
#: ``weight`` scales how much one event counts: from 0 (not at all) to this.
MAX_WEIGHT: Final = 1_000_000.0
#: An item's numbers lie within ±this (integers are exact up to about 9e15).
MAX_NUMBER: Final = 1e15

_EVENT_FIELDS: Final = frozenset({"id", "type", "user", "item", "ts", "weight", "props"})
_ITEM_FIELDS: Final = frozenset({"id", "kind", "terms", "numbers", "active"})


def _describe(value: Any) -> str:
    """The offending value as an error message shows it: the value itself, briefly."""
    if value is None:
        return "null"
    if type(value) is bool:
        return "true" if value else "false"
    if type(value) is list:
        return f"an array of {len(value)}"
    if type(value) is dict:
        return f"a map of {len(value)}"
    if type(value) in (int, float):
        return repr(value)
    if type(value) is str:
        shown = repr(value if len(value) <= 40 else value[:40] + "…")
        return f"the string {shown}"
    return type(value).__name__


def params_map(params: Any) -> dict[str, Any]:
    """The request's params map: ``[]`` is an empty map, ``[map]`` that map."""
    if type(params) is list:
        if not params:
            return {}
        if len(params) == 1 and type(params[0]) is dict:
            return params[0]
    raise BadRequest(f"params must be [] or [map], got {_describe(params)}")


def require(params: Mapping[str, Any], name: str) -> Any:
    if name not in params:
        raise BadRequest(f"missing field '{name}'")
    return params[name]


def ident(value: Any, path: str) -> str:
    """An id: a non-empty string (or an integer, taken as its decimal string) of ≤ 256 bytes."""
    if type(value) is int:
        value = str(value)
    elif type(value) is not str:
        raise BadRequest(f"{path}: expected a string id, got {_describe(value)}")
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
    raise BadRequest(f"{path}: expected a number, got {_describe(value)}")


def timestamp(value: Any, path: str, *, now: float, clock_skew_s: float) -> float:
    """An event time: seconds since the epoch, from 0 to ``clock_skew_s`` past ``now``.

    Events in the past are fine (backfills, replays of history); one in the
    future would outweigh every other event of its item and user (decayed
    state grows by 2x per half-life ahead), so it is refused, saying whether
    it looks like milliseconds, microseconds or nanoseconds.
    """
    ts = number(value, path)
    if ts < 0.0:
        raise BadRequest(f"{path}: expected seconds since the epoch (0 or more), got {value!r}")
    latest = now + clock_skew_s
    if ts <= latest:
        return ts
    hint = ""
    for unit, factor in (("milliseconds", 1e3), ("microseconds", 1e6), ("nanoseconds", 1e9)):
        if _PLAUSIBLE_SECONDS <= ts / factor <= latest:
            hint = f"; it looks like {unit} since the epoch: send seconds ({ts / factor:.3f})"
            break
    raise BadRequest(
        f"{path}: {value!r} is {_duration(ts - now)} ahead of the server's clock; events may "
        f"be at most {clock_skew_s:g} s ahead (ts <= {latest:.3f}){hint}"
    )


# 1973: a finer unit is only suggested when the time it gives is in living memory.
_PLAUSIBLE_SECONDS: Final = 1e8


def _duration(seconds: float) -> str:
    for unit, size in (("years", 365.25 * 86400), ("days", 86400), ("hours", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:,.1f} {unit}"
    return f"{seconds:.1f} s"


def weight(value: Any, path: str) -> float:
    """An event's weight: a number from 0 to :data:`MAX_WEIGHT`."""
    w = number(value, path)
    if not 0.0 <= w <= MAX_WEIGHT:
        raise BadRequest(f"{path}: must lie in [0, {MAX_WEIGHT:,.0f}], got {value!r}")
    return w


def batch(params: Mapping[str, Any], name: str) -> list[Any]:
    value = require(params, name)
    if type(value) is not list:
        raise BadRequest(f"{name}: expected an array, got {_describe(value)}")
    if len(value) > MAX_BATCH:
        raise BadRequest(f"{name}: at most {MAX_BATCH} per call, got {len(value)}")
    return value


def events(
    params: Mapping[str, Any],
    *,
    now: float | None = None,
    clock_skew_s: float = DEFAULT_CLOCK_SKEW_S,
) -> list[RecordInteraction]:
    """``ingest`` params → commands. Raises :class:`BadRequest` naming the field.

    ``now`` is the server's clock (default: read it); an event's ``ts`` may be
    at most ``clock_skew_s`` ahead of it.
    """
    raw = batch(params, "events")
    latest = (time.time() if now is None else now) + clock_skew_s
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
                and 0.0 <= e["ts"] <= latest  # NaN fails, so do ±inf beyond the window
                and type(weight) in (float, int)
                and 0.0 <= weight <= MAX_WEIGHT
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
        append(_event_slow(e, f"events[{i}]", latest - clock_skew_s, clock_skew_s))
    return out


def _str_keys(mapping: dict[Any, Any]) -> bool:
    return all(type(k) is str for k in mapping)


def _event_slow(
    e: Any, path: str, now: float, clock_skew_s: float = DEFAULT_CLOCK_SKEW_S
) -> RecordInteraction:
    """Validate one event field by field, raising on the first problem."""
    if type(e) is not dict:
        raise BadRequest(f"{path}: expected a map, got {_describe(e)}")
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
        raise BadRequest(f"{path}.type: expected a string, got {_describe(event_type)}")
    if not 0 < len(event_type) <= MAX_TYPE_LEN:
        raise BadRequest(
            f"{path}.type: must be 1..{MAX_TYPE_LEN} characters, got {len(event_type)}"
        )
    props = e.get("props")
    if props is not None:
        if type(props) is not dict:
            raise BadRequest(f"{path}.props: expected a map, got {_describe(props)}")
        for key in props:
            if type(key) is not str:
                raise BadRequest(f"{path}.props: keys must be strings, got {_describe(key)}")
    return RecordInteraction(
        id=ident(e["id"], f"{path}.id"),
        type=event_type,
        user=ident(e["user"], f"{path}.user"),
        item=ident(e["item"], f"{path}.item"),
        ts=timestamp(e["ts"], f"{path}.ts", now=now, clock_skew_s=clock_skew_s),
        weight=weight(e.get("weight", 1.0), f"{path}.weight"),
        props=props or {},
    )


def items(params: Mapping[str, Any], *, now: float) -> list[UpsertItem]:
    """``upsert_items`` params → commands. Raises :class:`BadRequest` naming the field."""
    out: list[UpsertItem] = []
    for i, raw in enumerate(batch(params, "items")):
        path = f"items[{i}]"
        if type(raw) is not dict:
            raise BadRequest(f"{path}: expected a map, got {_describe(raw)}")
        for key in raw:
            if key not in _ITEM_FIELDS:
                raise BadRequest(
                    f"{path}: unknown field {key!r} (allowed: {', '.join(sorted(_ITEM_FIELDS))})"
                )
        if "id" not in raw:
            raise BadRequest(f"{path}.id: missing")
        kind = raw.get("kind")
        if kind is not None and type(kind) is not str:
            raise BadRequest(f"{path}.kind: expected a string, got {_describe(kind)}")
        active = raw.get("active")
        if active is not None and type(active) is not bool:
            raise BadRequest(f"{path}.active: expected true or false, got {_describe(active)}")
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
    if len(key) > MAX_FIELD_NAME:
        raise BadRequest(
            f"{path}: field names are at most {MAX_FIELD_NAME} characters, got {len(key)} "
            f"({key[:40]!r}…)"
        )
    return key


def _field_count(raw: dict[str, Any], path: str) -> None:
    if len(raw) > MAX_FIELDS_PER_ITEM:
        raise BadRequest(f"{path}: at most {MAX_FIELDS_PER_ITEM} fields per item, got {len(raw)}")


def _terms(raw: Any, path: str) -> dict[str, tuple[str, ...] | None] | None:
    if raw is None:
        return None
    if type(raw) is not dict:
        raise BadRequest(f"{path}: expected a map of field to string or [string]")
    _field_count(raw, path)
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
                raise BadRequest(f"{where}: at most {MAX_TERMS_PER_FIELD} values, got {len(value)}")
            for j, v in enumerate(value):
                if type(v) is not str:
                    raise BadRequest(f"{where}[{j}]: expected a string, got {_describe(v)}")
            out[field] = tuple(value)
        else:
            raise BadRequest(f"{where}: expected a string or [string], got {_describe(value)}")
    return out


# A geo field F is the pair of numbers "F.lat" and "F.lon" (see index.inverted).
_COORDINATE_LIMITS: Final = {".lat": 90.0, ".lon": 180.0}


def _numbers(raw: Any, path: str) -> dict[str, float | None] | None:
    if raw is None:
        return None
    if type(raw) is not dict:
        raise BadRequest(f"{path}: expected a map of field to number")
    _field_count(raw, path)
    out: dict[str, float | None] = {}
    for key, value in raw.items():
        field = _field_name(key, path)
        out[field] = None if value is None else number(value, f"{path}.{key}")
        if value is not None and not -MAX_NUMBER <= value <= MAX_NUMBER:
            raise BadRequest(f"{path}.{key}: must lie within ±{MAX_NUMBER:g}, got {value!r}")
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
    {"user", "surface", "k", "context", "filter", "explain", "probe", "_trace"}
)


def recommend(params: Mapping[str, Any]) -> RecommendRequest:
    """``recommend`` params → a request. The filter's fields are checked by the ranker."""
    unknown = params.keys() - _RECOMMEND_FIELDS
    if unknown:
        raise BadRequest(
            f"unknown field {sorted(unknown)[0]!r} "
            "(user, surface, k, context, filter, explain, probe)"
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
        if type(value) is float and not math.isfinite(value):
            raise BadRequest(f"context.{key}: expected a finite number, got {value!r}")
    explain = params.get("explain", False)
    if type(explain) is not bool:
        raise BadRequest(f"explain: expected true or false, got {_describe(explain)}")
    query = None
    if params.get("filter") is not None:
        try:
            query = parse_query(params["filter"])
        except QueryError as exc:
            raise BadRequest(str(exc)) from None
    probe = params.get("probe")
    if probe is not None:
        probe = ident(probe, "probe")
    return RecommendRequest(
        user=user,
        surface=surface,
        k=k,
        context=context,
        filter=query,
        explain=explain,
        probe=probe,
    )
