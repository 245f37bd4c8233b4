"""Read a JSONL feed: one object per line, ``{"user", "surface", "items", "scores"?}``.

:func:`read_jsonl` is a reader of :class:`legacy_adapter.sources.FeedFile`:
it turns an open snapshot file into records, a :class:`BadRecord` for each
line that is not one (with its line number and why).
"""

from __future__ import annotations

import codecs
import contextlib
import itertools
import json
import math
from collections.abc import Generator
from typing import IO, Final

from legacy_adapter.records import (
    MAX_ITEMS,
    BadRecord,
    Invalid,
    Record,
    check_key,
    check_name,
)

MAX_LINE_BYTES: Final = 1 << 20
"""Longest JSONL line read; a longer one is a bad record (and is never held whole)."""
_STR: Final = frozenset({str})
_NUMBER: Final = frozenset({float, int})


def read_jsonl(f: IO[bytes], name: str) -> Generator[Record | BadRecord, None, int]:
    """The records of the JSONL file ``f`` (called ``name`` in bad records); returns the
    number of lines read (blank ones not counted)."""
    read = 0
    for lineno in itertools.count(1):
        line = f.readline(MAX_LINE_BYTES + 1)
        if not line:
            break
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):  # skip the rest, a chunk at a time
                line = f.readline(MAX_LINE_BYTES)
            read += 1
            reason = f"line longer than {MAX_LINE_BYTES} bytes"
            yield BadRecord(where=f"{name}:{lineno}", reason=reason)
            continue
        if lineno == 1 and line.startswith(codecs.BOM_UTF8):
            line = line[len(codecs.BOM_UTF8) :]
        if line.isspace():
            continue
        read += 1
        try:
            yield _json_record(line)
        except Invalid as exc:
            yield BadRecord(where=f"{name}:{lineno}", reason=str(exc))
    return read


def _json_record(line: bytes) -> Record:
    try:
        text = line.decode()
    except UnicodeDecodeError:
        raise Invalid("not UTF-8") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise Invalid(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise Invalid("not a JSON object")
    user = check_name(obj.get("user"), "user")
    surface = check_name(obj.get("surface"), "surface")
    raw_items = obj.get("items")
    if not isinstance(raw_items, list):
        raise Invalid("'items' is missing" if raw_items is None else "'items' must be a list")
    if len(raw_items) > MAX_ITEMS:
        raise Invalid(f"'items' has {len(raw_items)} entries; at most {MAX_ITEMS}")
    if set(map(type, raw_items)) <= _STR and "" not in raw_items:  # the fast path, in C
        items = tuple(raw_items)
    else:
        items = tuple(_item(item, i) for i, item in enumerate(raw_items))
    scores = _scores(obj.get("scores"), len(items))
    check_key(surface, user)
    # Lone surrogates can only come from \u escapes: check the rare lines that have any.
    if b"\\u" in line:
        try:
            for item in items:
                item.encode()
        except UnicodeEncodeError:
            raise Invalid("an item is not valid Unicode") from None
    return surface, user, items, scores


def _item(value: object, i: int) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise Invalid(f"items[{i}] must be a non-empty string or an integer")


def _scores(value: object, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise Invalid("'scores' must be a list of numbers")
    if len(value) != n:
        raise Invalid(f"'scores' has {len(value)} numbers for {n} items")
    if set(map(type, value)) <= _NUMBER:
        with contextlib.suppress(OverflowError):  # an int too large for a float
            scores = tuple(map(float, value))
            if all(map(math.isfinite, scores)):
                return scores
    for i, score in enumerate(value):
        if type(score) not in (float, int) or not math.isfinite(score):
            raise Invalid(f"scores[{i}] must be a finite number")
    raise Invalid("'scores' has a number too large")
