"""Query templates: a surface's retrieval and rule queries, filled per request.

A template is a query in the ``search`` language whose values may be
placeholders:

- ``"$context.NAME"``: the request's ``context[NAME]`` (a string in a
  ``term``, a number in a ``range`` or ``near``);
- ``"$user.top.FIELD"``: in a ``term`` only, the values of term field
  ``FIELD`` the user likes most (their strongest positive affinities, at
  most :data:`TOP_VALUES`); several values become an ``any`` of terms.

A clause whose placeholder has no value is dropped (a missing range bound
opens it), so a surface degrades to a broader query instead of failing: an
``all`` or ``any`` whose clauses are all dropped is dropped, as is a ``not``
of a dropped clause, and a template dropped entirely matches every item.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from index import EVERYTHING, Query, QueryError, parse
from ranker.errors import ConfigError, RequestError

TOP_VALUES: Final = 3
_CONTEXT: Final = "$context."
_USER_TOP: Final = "$user.top."
_VALIDATING: Final = object()


class _Dropped(Exception):
    """A placeholder without a value: the clause holding it is dropped."""


def fill(
    template: Any,
    context: Mapping[str, Any],
    top_values: Mapping[str, list[str]],
    path: str = "retrieval",
) -> Query:
    """The query of ``template`` for one request. Pure.

    ``top_values`` maps a term field to the user's favourite values of it.

    Raises:
        RequestError: a context value has the wrong type for where it goes.
    """
    if template is None:
        return EVERYTHING
    try:
        filled = _node(template, context, top_values, path)
    except _Dropped:
        return EVERYTHING
    try:
        return parse(filled, path)
    except QueryError as exc:
        raise RequestError(str(exc)) from None


def check_template(template: Any, path: str) -> None:
    """Check a template's shape as if every placeholder had a value.

    Raises:
        ConfigError: naming what is wrong.
    """
    try:
        filled = _node(template, _VALIDATING, _VALIDATING, path)
        parse(filled, path)
    except (QueryError, RequestError) as exc:
        raise ConfigError(str(exc)) from None
    except _Dropped:  # pragma: no cover - validation never drops
        pass


def _node(node: Any, context: Any, tops: Any, path: str) -> Any:
    if not isinstance(node, dict) or len(node) != 1:
        return node  # parse reports the shape error with its path
    ((op, arg),) = node.items()
    here = f"{path}.{op}"
    if op in ("all", "any") and isinstance(arg, list):
        kept = []
        for i, child in enumerate(arg):
            try:
                kept.append(_node(child, context, tops, f"{here}[{i}]"))
            except _Dropped:
                continue
        if arg and not kept:
            raise _Dropped
        return {op: kept}
    if op == "not":
        return {op: _node(arg, context, tops, here)}
    if op == "term" and isinstance(arg, list) and len(arg) == 2:
        field, value = arg
        if isinstance(value, str) and value.startswith(_USER_TOP):
            wanted = value[len(_USER_TOP) :]
            if tops is _VALIDATING:
                return {"term": [field, "x"]}
            values = tops.get(wanted, [])
            if not values:
                raise _Dropped
            if len(values) == 1:
                return {"term": [field, values[0]]}
            return {"any": [{"term": [field, v]} for v in values]}
        return {"term": [field, _value(value, context, f"{here}[1]", str)]}
    if op == "range" and isinstance(arg, list) and len(arg) == 3:
        field, lo, hi = arg
        bounds = []
        for i, bound in enumerate((lo, hi), start=1):
            try:
                bounds.append(_value(bound, context, f"{here}[{i}]", float))
            except _Dropped:
                bounds.append(None)
        if _is_placeholder(lo) and _is_placeholder(hi) and bounds == [None, None]:
            raise _Dropped
        return {"range": [field, *bounds]}
    if op == "near" and isinstance(arg, list) and len(arg) == 4:
        field, *numbers = arg
        return {
            "near": [
                field,
                *(_value(n, context, f"{here}[{i}]", float) for i, n in enumerate(numbers, 1)),
            ]
        }
    return node


def _is_placeholder(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("$")


def _value(value: Any, context: Any, path: str, kind: type) -> Any:
    if not _is_placeholder(value):
        return value
    if not value.startswith(_CONTEXT) or len(value) == len(_CONTEXT):
        raise RequestError(
            f"{path}: unknown placeholder {value!r} (use $context.NAME or $user.top.FIELD)"
        )
    if context is _VALIDATING:
        return "x" if kind is str else 0.0
    name = value[len(_CONTEXT) :]
    if name not in context or context[name] is None:
        raise _Dropped
    got = context[name]
    if kind is str:
        if not isinstance(got, str):
            raise RequestError(f"context.{name}: expected a string for {path}, got {got!r}")
        return got
    if isinstance(got, bool) or not isinstance(got, int | float):
        raise RequestError(f"context.{name}: expected a number for {path}, got {got!r}")
    return float(got)
