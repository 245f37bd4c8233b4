"""What a legacy feed record is, and the checks every reader applies to one.

A *record* is one user's list on one surface: ``(surface, user, items,
scores)``. JSONL lines are records already; CSV and SQL rows
(``user, surface, rank, item[, score]``) are checked one by one
(:func:`check_row`) and grouped into records by (surface, user), ordered by
rank (:func:`group_rows`). What is wrong with a line, a row or a group is a
:class:`BadRecord`: counted and reported, never fatal.
"""

from __future__ import annotations

import itertools
import math
import operator
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final, TypeAlias

import attrs

MAX_ITEMS: Final = 1_000
"""Longest item list of one user on one surface; a longer one is a bad record."""
MAX_KEY_BYTES: Final = 511
"""LMDB's key limit: ``surface + NUL + user`` in UTF-8 must fit."""
MAX_RANK: Final = 2**31 - 1
BATCH: Final = 10_000
"""Records per spool or LMDB write transaction while loading."""
COLUMNS: Final = ("user", "surface", "rank", "item", "score")
"""The columns of a CSV or SQL feed; the last is optional."""

_KEY: Final = operator.itemgetter(0, 1)
_RANK_ORDER: Final = operator.itemgetter(2, 5)

Record: TypeAlias = tuple[str, str, tuple[str, ...], tuple[float, ...] | None]
"""One good record: ``(surface, user, items, scores)``."""
Row: TypeAlias = tuple[str, str, int, str, float | None, int]
"""One CSV or SQL row once valid: ``(surface, user, rank, item, score, position)``."""


@attrs.frozen(kw_only=True)
class BadRecord:
    """A line or row that was skipped, where it is (``feed.jsonl:17``) and why."""

    where: str
    reason: str


class Invalid(Exception):
    """A record is bad; the message says why."""


def check_name(value: object, field: str) -> str:
    """A user, surface or item name: a non-empty string or an integer, as a string.

    Raises:
        Invalid: it is missing, empty, of another type or contains a NUL.
    """
    if isinstance(value, str):
        if not value:
            raise Invalid(f"{field!r} is empty")
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif value is None:
        raise Invalid(f"{field!r} is missing")
    else:
        raise Invalid(f"{field!r} must be a non-empty string or an integer")
    if "\0" in value:
        raise Invalid(f"{field!r} contains a NUL character")
    return value


def check_key(surface: str, user: str) -> None:
    """Raise :class:`Invalid` unless ``surface + NUL + user`` fits an LMDB key."""
    try:
        size = len(surface.encode()) + 1 + len(user.encode())
    except UnicodeEncodeError:
        raise Invalid("'user' or 'surface' is not valid Unicode") from None
    if size > MAX_KEY_BYTES:
        raise Invalid(f"surface and user take {size} bytes; at most {MAX_KEY_BYTES} fit")


def check_row(fields: list[Any], position: int) -> Row | str:
    """A CSV or SQL row ``user, surface, rank, item[, score]`` checked, or why it is bad."""
    try:
        user = check_name(fields[0], "user")
        surface = check_name(fields[1], "surface")
        check_key(surface, user)
        rank = fields[2]
        if isinstance(rank, str) and rank.isascii() and rank.isdigit():
            rank = int(rank)
        if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= MAX_RANK:
            raise Invalid(f"rank must be an integer from 1 to {MAX_RANK}, got {fields[2]!r}")
        item = check_name(fields[3], "item")
        score = fields[4] if len(fields) > 4 else None
        if score is not None:
            try:
                score = float(score)
            except (TypeError, ValueError, OverflowError):
                score = math.nan
            if not math.isfinite(score):
                raise Invalid(f"score must be a finite number, got {fields[4]!r}")
    except Invalid as exc:
        return str(exc)
    return surface, user, rank, item, score, position


def collect_rows(rows: Iterable[Row], where: Callable[[int], str]) -> Iterator[Record | BadRecord]:
    """Valid rows grouped into one record per (surface, user); a group's rows must be adjacent."""
    for (surface, user), rest in itertools.groupby(rows, key=_KEY):
        group = list(itertools.islice(rest, MAX_ITEMS + 1))
        extra = sum(1 for _ in rest)  # noqa: B031 (the rows islice left: counted, not kept)
        yield group_rows(surface, user, group, extra, where)


def group_rows(
    surface: str, user: str, group: list[Row], extra: int, where: Callable[[int], str]
) -> Record | BadRecord:
    """One user's rows (and ``extra`` more not kept) as a record ordered by rank, or why not.

    A group is dropped, as one bad record, if two rows share a rank, only
    some rows have a score, or it has more than :data:`MAX_ITEMS` rows.
    """
    whose = f"surface {surface!r} user {user!r}"
    if len(group) + extra > MAX_ITEMS:
        reason = f"{whose} has {len(group) + extra} items; at most {MAX_ITEMS}"
        return BadRecord(where=where(group[0][5]), reason=reason)
    group.sort(key=_RANK_ORDER)
    for before, after in itertools.pairwise(group):
        if before[2] == after[2]:
            reason = f"duplicate rank {after[2]} for {whose} (also at {where(before[5])}); dropped"
            return BadRecord(where=where(after[5]), reason=reason)
    scores = [row[4] for row in group]
    if None in scores:
        if scores.count(None) < len(scores):
            reason = f"only some rows of {whose} have a score; dropped"
            return BadRecord(where=where(group[0][5]), reason=reason)
        return surface, user, tuple(row[3] for row in group), None
    return surface, user, tuple(row[3] for row in group), tuple(scores)  # type: ignore[arg-type]
