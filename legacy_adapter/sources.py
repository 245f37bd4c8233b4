"""The legacy batch feed's sources and readers (what :func:`open_source` opens).

A company adopting Matchlight already has a nightly batch job that writes
precomputed recommendations per user and surface. :func:`open_source` reads
what that job writes:

- a JSONL file, one object per line:
  ``{"user": U, "surface": S, "items": [ids], "scores"?: [floats]}``;
- a CSV file of rows ``user,surface,rank,item[,score]`` (header optional; the
  rows of one user may be interleaved with others', they are ordered by rank);
- a SQL table or view through sqlite3: ``sqlite:PATH?table=NAME`` with the
  columns ``user, surface, rank, item`` and optionally ``score``;
- a directory of dated snapshot files (``2026-11-27.jsonl``,
  ``feed-20261128T0300.csv``): the complete file whose name sorts last wins.
  A file is complete once ``NAME.done`` exists beside it or, if the directory
  holds no ``.done`` file at all, as soon as it is there.

Bad lines or rows are reported (:class:`BadRecord`, counted in the
:class:`LoadReport`), never fatal. :mod:`legacy_adapter.feed` loads them into LMDB.
"""

from __future__ import annotations

import codecs
import contextlib
import csv
import io
import itertools
import json
import logging
import math
import operator
import os
import re
import sqlite3
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator
from pathlib import Path
from typing import IO, Any, Final, Protocol, TypeAlias
from urllib.parse import parse_qs

import attrs

from legacy_adapter.errors import FeedError

log = logging.getLogger(__name__)

MAX_ITEMS: Final = 1_000
"""Longest item list of one user on one surface; a longer one is a bad record."""
MAX_KEY_BYTES: Final = 511
"""LMDB's key limit: ``surface + NUL + user`` in UTF-8 must fit."""
MAX_LINE_BYTES: Final = 1 << 20
"""Longest JSONL line read; a longer one is a bad record (and is never held whole)."""
MAX_RANK: Final = 2**31 - 1
MAX_EXAMPLES: Final = 20
BATCH: Final = 10_000
"""Records per spool or LMDB write transaction while loading."""
_DONE: Final = ".done"
_EXTENSIONS: Final = (".jsonl", ".csv")
_CSV_COLUMNS: Final = ("user", "surface", "rank", "item", "score")
_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9_]+", re.ASCII)
_SQLITE: Final = "sqlite:"
_STR: Final = frozenset({str})
_NUMBER: Final = frozenset({float, int})
_KEY: Final = operator.itemgetter(0, 1)
_RANK_ORDER: Final = operator.itemgetter(2, 5)
_RAW_KEY: Final = operator.itemgetter(2, 1)  # (surface, user) of (rowid, user, surface, …)

Record: TypeAlias = tuple[str, str, tuple[str, ...], tuple[float, ...] | None]
"""One good record: ``(surface, user, items, scores)``."""
# One CSV or SQL row once valid: (surface, user, rank, item, score, position).
_Row: TypeAlias = tuple[str, str, int, str, float | None, int]


@attrs.frozen(kw_only=True)
class FeedEntry:
    """What the feed recommends to one user on one surface, best first."""

    items: tuple[str, ...]
    #: One score per item, or ``None`` if the feed gives none.
    scores: tuple[float, ...] | None = None


@attrs.frozen(kw_only=True)
class BadRecord:
    """A line or row that was skipped, where it is (``feed.jsonl:17``) and why."""

    where: str
    reason: str


@attrs.frozen(kw_only=True)
class LoadReport:
    """What one :meth:`FeedStore.load` did."""

    source: str
    snapshot: str
    #: Lines or rows read (blank lines and a CSV header not counted).
    records: int
    #: Distinct (surface, user) pairs stored.
    entries: int
    bad: int
    #: The first :data:`MAX_EXAMPLES` bad records.
    examples: tuple[BadRecord, ...]
    seconds: float


class FeedSource(Protocol):
    """Where a feed comes from. Every method blocks (file or database I/O)."""

    def describe(self) -> str:
        """A short human description (``feed.jsonl``, ``directory /srv/feed``)."""
        ...

    def snapshot_id(self) -> str | None:
        """The identity of the newest complete snapshot, or ``None`` if there is none yet.

        A new identity means new content. Raises :class:`FeedError` if the
        source cannot even be inspected.
        """
        ...

    def records(self, snapshot_id: str) -> Iterator[Record | BadRecord]:
        """The snapshot's records: a :data:`Record` per good one, a :class:`BadRecord` per bad one.

        Lazy: nothing is read before the first ``next``. A generator may
        *return* the number of lines or rows it read (for
        :attr:`LoadReport.records`). Raises :class:`FeedError` (the snapshot
        is gone or changed, a table lacks a column), :class:`OSError` or
        :class:`sqlite3.Error` while iterating if the source cannot be read.
        """
        ...


# -- sources ------------------------------------------------------------------------


def open_source(spec: str) -> FeedSource:
    """The feed source ``spec`` names. Blocks briefly (a ``stat``).

    ``spec`` is a ``.jsonl`` or ``.csv`` file, a directory of snapshot files
    or ``sqlite:PATH?table=NAME``.

    Raises:
        FeedError: the path does not exist, has an unknown extension, or the
            ``sqlite:`` spec is malformed (the table name must consist of
            letters, digits and underscores).
    """
    if spec.startswith(_SQLITE):
        return _open_sqlite(spec)
    path = Path(spec)
    if path.is_dir():
        return SnapshotDirectory(path)
    if not path.is_file():
        raise FeedError(f"legacy feed {spec!r}: no such file or directory")
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        return JsonlFile(path)
    if suffix == ".csv":
        return CsvFile(path)
    raise FeedError(
        f"legacy feed {spec!r}: unknown extension {suffix or '(none)'!r}; expected .jsonl, "
        ".csv, a directory or sqlite:PATH?table=NAME"
    )


def _open_sqlite(spec: str) -> SqliteTable:
    path, mark, query = spec[len(_SQLITE) :].rpartition("?")
    fields = parse_qs(query, keep_blank_values=True)
    tables = fields.pop("table", [])
    if not mark or not path or fields or len(tables) != 1:
        raise FeedError(f"legacy feed {spec!r}: expected sqlite:PATH?table=NAME")
    (table,) = tables
    if not _IDENTIFIER.fullmatch(table):
        raise FeedError(
            f"legacy feed {spec!r}: table name {table!r} must be letters, digits and underscores"
        )
    if not Path(path).is_file():
        raise FeedError(f"legacy feed {spec!r}: no such database file {path!r}")
    return SqliteTable(Path(path), table)


class JsonlFile:
    """A feed in one JSONL file; its snapshot is the file's name, size and mtime."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    def snapshot_id(self) -> str | None:
        return _file_id(self.path)

    def records(self, snapshot_id: str) -> Generator[Record | BadRecord, None, int]:
        return _jsonl_records(self.path, snapshot_id)


class CsvFile:
    """A feed in one CSV file of ``user,surface,rank,item[,score]`` rows."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return str(self.path)

    def snapshot_id(self) -> str | None:
        return _file_id(self.path)

    def records(self, snapshot_id: str) -> Generator[Record | BadRecord, None, int]:
        return _csv_records(self.path, snapshot_id)


class SnapshotDirectory:
    """A directory of dated ``.jsonl``/``.csv`` snapshots; the newest complete one wins.

    Hidden files and other extensions are ignored. With any ``NAME.done``
    marker present, only files with their marker count as complete (a file
    still being written has none yet); with no marker at all, every file does.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def describe(self) -> str:
        return f"directory {self.path}"

    def newest(self) -> Path | None:
        """The newest complete snapshot file, if any. Raises :class:`FeedError` if unreadable."""
        try:
            with os.scandir(self.path) as entries:
                names = [e.name for e in entries if not e.name.startswith(".") and e.is_file()]
        except OSError as exc:
            raise FeedError(f"cannot list the legacy feed directory {self.path}: {exc}") from exc
        done = {name[: -len(_DONE)] for name in names if name.endswith(_DONE)}
        feeds = [name for name in names if name.lower().endswith(_EXTENSIONS)]
        if done:
            feeds = [name for name in feeds if name in done]
        return self.path / max(feeds) if feeds else None

    def snapshot_id(self) -> str | None:
        newest = self.newest()
        return None if newest is None else _file_id(newest)

    def records(self, snapshot_id: str) -> Generator[Record | BadRecord, None, int]:
        name = snapshot_id.rsplit(":", 2)[0]
        if not name or name != Path(name).name or name.startswith("."):
            raise FeedError(f"{snapshot_id!r} is not a snapshot of {self.describe()}")
        path = self.path / name
        if name.lower().endswith(".jsonl"):
            return _jsonl_records(path, snapshot_id)
        return _csv_records(path, snapshot_id)


class SqliteTable:
    """A feed in a SQLite table or view (``user, surface, rank, item[, score]``), read-only.

    Its snapshot is the table name and the size and mtime of the database
    file (and of its write-ahead log, if any); it has none while the table
    does not exist. Each load reads in one transaction, so it sees one
    consistent state of the table.
    """

    def __init__(self, path: Path, table: str) -> None:
        self.path = path
        self.table = table

    def describe(self) -> str:
        return f"table {self.table} in {self.path}"

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path.resolve().as_uri() + "?mode=ro", uri=True)

    def snapshot_id(self) -> str | None:
        parts = []
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                st = path.stat()
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise FeedError(f"cannot stat {path}: {exc}") from exc
            parts.append(f"{st.st_size}:{st.st_mtime_ns}")
        if not parts:
            return None
        try:
            with contextlib.closing(self._connect()) as db:
                found = db.execute(
                    "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?",
                    (self.table,),
                ).fetchone()
        except sqlite3.Error as exc:
            raise FeedError(f"cannot read {self.describe()}: {exc}") from exc
        return None if found is None else ":".join([self.table, *parts])

    def records(self, snapshot_id: str) -> Generator[Record | BadRecord, None, int]:
        with contextlib.closing(self._connect()) as db:
            columns = {row[1].lower() for row in db.execute(f'PRAGMA table_info("{self.table}")')}
            if not columns:
                raise FeedError(f"{self.describe()}: no such table")
            missing = [c for c in _CSV_COLUMNS[:4] if c not in columns]
            if missing:
                raise FeedError(f"{self.describe()} lacks the column(s) {', '.join(missing)}")
            score = '"score"' if "score" in columns else "NULL"
            select = f'"user", "surface", "rank", "item", {score} FROM "{self.table}"'
            order = 'ORDER BY "surface", "user"'
            try:
                cursor = db.execute(f"SELECT rowid, {select} {order}")
            except sqlite3.OperationalError:  # a view or a WITHOUT ROWID table
                cursor = db.execute(f"SELECT NULL, {select} {order}")
            read = 0
            where = f"table {self.table} row {{}}".format
            # One group per raw (surface, user). Rows of 5 and '5' sort apart: they
            # become two records of user "5", and the later one wins.
            for _, raw_group in itertools.groupby(cursor, key=_RAW_KEY):
                valid: list[_Row] = []
                extra = 0
                for rowid, *fields in raw_group:
                    read += 1
                    position = rowid if isinstance(rowid, int) else read
                    row = _row(fields, position)
                    if isinstance(row, str):
                        yield BadRecord(where=where(position), reason=row)
                    elif len(valid) <= MAX_ITEMS:
                        valid.append(row)
                    else:
                        extra += 1  # counted, not kept: the group is bad anyway
                if valid:
                    yield _group(valid[0][0], valid[0][1], valid, extra, where)
        return read


def _file_id(path: Path) -> str | None:
    try:
        return _id_of(path.name, path.stat())
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise FeedError(f"cannot stat the legacy feed {path}: {exc}") from exc


def _id_of(name: str, st: os.stat_result) -> str:
    return f"{name}:{st.st_size}:{st.st_mtime_ns}"


def _open_snapshot(path: Path, snapshot_id: str) -> IO[bytes]:
    f = path.open("rb")
    if _id_of(path.name, os.fstat(f.fileno())) != snapshot_id:
        f.close()
        raise FeedError(f"{path} changed after snapshot {snapshot_id} was chosen")
    return f


class _Invalid(Exception):
    """A record is bad; the message says why."""


def _name(value: object, field: str) -> str:
    if isinstance(value, str):
        if not value:
            raise _Invalid(f"{field!r} is empty")
    elif isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    elif value is None:
        raise _Invalid(f"{field!r} is missing")
    else:
        raise _Invalid(f"{field!r} must be a non-empty string or an integer")
    if "\0" in value:
        raise _Invalid(f"{field!r} contains a NUL character")
    return value


def _check_key(surface: str, user: str) -> None:
    try:
        size = len(surface.encode()) + 1 + len(user.encode())
    except UnicodeEncodeError:
        raise _Invalid("'user' or 'surface' is not valid Unicode") from None
    if size > MAX_KEY_BYTES:
        raise _Invalid(f"surface and user take {size} bytes; at most {MAX_KEY_BYTES} fit")


# -- JSONL ----------------------------------------------------------------------------


def _jsonl_records(path: Path, snapshot_id: str) -> Generator[Record | BadRecord, None, int]:
    read = 0
    with _open_snapshot(path, snapshot_id) as f:
        for lineno in itertools.count(1):
            line = f.readline(MAX_LINE_BYTES + 1)
            if not line:
                break
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while line and not line.endswith(b"\n"):  # skip the rest, a chunk at a time
                    line = f.readline(MAX_LINE_BYTES)
                read += 1
                reason = f"line longer than {MAX_LINE_BYTES} bytes"
                yield BadRecord(where=f"{path.name}:{lineno}", reason=reason)
                continue
            if lineno == 1 and line.startswith(codecs.BOM_UTF8):
                line = line[len(codecs.BOM_UTF8) :]
            if line.isspace():
                continue
            read += 1
            try:
                yield _json_record(line)
            except _Invalid as exc:
                yield BadRecord(where=f"{path.name}:{lineno}", reason=str(exc))
    return read


def _json_record(line: bytes) -> Record:
    try:
        text = line.decode()
    except UnicodeDecodeError:
        raise _Invalid("not UTF-8") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _Invalid(f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _Invalid("not a JSON object")
    user = _name(obj.get("user"), "user")
    surface = _name(obj.get("surface"), "surface")
    raw_items = obj.get("items")
    if not isinstance(raw_items, list):
        raise _Invalid("'items' is missing" if raw_items is None else "'items' must be a list")
    if len(raw_items) > MAX_ITEMS:
        raise _Invalid(f"'items' has {len(raw_items)} entries; at most {MAX_ITEMS}")
    if set(map(type, raw_items)) <= _STR and "" not in raw_items:  # the fast path, in C
        items = tuple(raw_items)
    else:
        items = tuple(_item(item, i) for i, item in enumerate(raw_items))
    scores = _scores(obj.get("scores"), len(items))
    _check_key(surface, user)
    # Lone surrogates can only come from \u escapes: check the rare lines that have any.
    if b"\\u" in line:
        try:
            for item in items:
                item.encode()
        except UnicodeEncodeError:
            raise _Invalid("an item is not valid Unicode") from None
    return surface, user, items, scores


def _item(value: object, i: int) -> str:
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _Invalid(f"items[{i}] must be a non-empty string or an integer")


def _scores(value: object, n: int) -> tuple[float, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise _Invalid("'scores' must be a list of numbers")
    if len(value) != n:
        raise _Invalid(f"'scores' has {len(value)} numbers for {n} items")
    if set(map(type, value)) <= _NUMBER:
        with contextlib.suppress(OverflowError):  # an int too large for a float
            scores = tuple(map(float, value))
            if all(map(math.isfinite, scores)):
                return scores
    for i, score in enumerate(value):
        if type(score) not in (float, int) or not math.isfinite(score):
            raise _Invalid(f"scores[{i}] must be a finite number")
    raise _Invalid("'scores' has a number too large")


# -- CSV and SQL rows -------------------------------------------------------------------


def _csv_records(path: Path, snapshot_id: str) -> Generator[Record | BadRecord, None, int]:
    read = 0
    with (
        _open_snapshot(path, snapshot_id) as raw,
        io.TextIOWrapper(raw, encoding="utf-8-sig", errors="surrogateescape", newline="") as text,
        _RowSpool() as spool,
    ):
        reader = csv.reader(text, strict=True)
        first = True
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                read += 1
                yield BadRecord(where=f"{path.name}:{reader.line_num}", reason=f"bad CSV: {exc}")
                continue
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            if first:
                first = False
                header = tuple(field.strip().lower() for field in fields)
                if header in (_CSV_COLUMNS[:4], _CSV_COLUMNS):
                    continue
            read += 1
            row = _csv_row(fields, reader.line_num)
            if isinstance(row, str):
                yield BadRecord(where=f"{path.name}:{reader.line_num}", reason=row)
            else:
                spool.add(row)
        yield from _collect(spool.rows(), lambda line: f"{path.name}:{line}")
    return read


def _csv_row(fields: list[str], line: int) -> _Row | str:
    n = len(fields)
    if n != 4 and n != 5:
        return f"expected 4 or 5 fields (user,surface,rank,item[,score]), got {n}"
    user, surface, rank, item = (
        fields[0].strip(),
        fields[1].strip(),
        fields[2].strip(),
        fields[3].strip(),
    )
    score = fields[4].strip() if n == 5 else ""
    try:
        key_size = len(surface.encode()) + 1 + len(user.encode())
        item.encode()
        score.encode()
    except UnicodeEncodeError:  # the file was read with errors="surrogateescape"
        return "not UTF-8"
    # The common case, checked inline (a feed has millions of rows); _row says what is wrong.
    if (
        user
        and surface
        and item
        and key_size <= MAX_KEY_BYTES
        and "\0" not in user
        and "\0" not in surface
        and "\0" not in item
        and rank.isascii()
        and rank.isdigit()
        and 1 <= (number := int(rank)) <= MAX_RANK
    ):
        if not score:
            return surface, user, number, item, None, line
        with contextlib.suppress(ValueError):
            value = float(score)
            if math.isfinite(value):
                return surface, user, number, item, value, line
    return _row([user, surface, rank, item, score or None], line)


def _row(fields: list[Any], position: int) -> _Row | str:
    """A CSV or SQL row ``user, surface, rank, item[, score]`` checked, or why it is bad."""
    try:
        user = _name(fields[0], "user")
        surface = _name(fields[1], "surface")
        _check_key(surface, user)
        rank = fields[2]
        if isinstance(rank, str) and rank.isascii() and rank.isdigit():
            rank = int(rank)
        if not isinstance(rank, int) or isinstance(rank, bool) or not 1 <= rank <= MAX_RANK:
            raise _Invalid(f"rank must be an integer from 1 to {MAX_RANK}, got {fields[2]!r}")
        item = _name(fields[3], "item")
        score = fields[4] if len(fields) > 4 else None
        if score is not None:
            try:
                score = float(score)
            except (TypeError, ValueError, OverflowError):
                score = math.nan
            if not math.isfinite(score):
                raise _Invalid(f"score must be a finite number, got {fields[4]!r}")
    except _Invalid as exc:
        return str(exc)
    return surface, user, rank, item, score, position


class _RowSpool:
    """CSV rows in a temporary on-disk SQLite database, read back grouped by user.

    Grouping the rows of millions of users in Python dicts would not fit in
    memory; SQLite sorts on disk. The file lives in the system's temporary
    directory (``TMPDIR``) and is removed on exit.
    """

    def __enter__(self) -> _RowSpool:
        self._dir = tempfile.TemporaryDirectory(prefix="matchlight-feed-")
        try:
            self._db = sqlite3.connect(os.path.join(self._dir.name, "rows.sqlite"))
            self._db.executescript(
                "PRAGMA journal_mode = OFF; PRAGMA synchronous = OFF;"
                "CREATE TABLE rows (surface TEXT, user TEXT, rank INTEGER, item TEXT,"
                " score REAL, line INTEGER);"
            )
        except BaseException:
            self._dir.cleanup()
            raise
        self._pending: list[_Row] = []
        return self

    def add(self, row: _Row) -> None:
        self._pending.append(row)
        if len(self._pending) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        self._db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?)", self._pending)
        self._pending.clear()

    def rows(self) -> Iterator[_Row]:
        self._flush()
        self._db.commit()
        return iter(
            self._db.execute(
                "SELECT surface, user, rank, item, score, line FROM rows"
                " ORDER BY surface, user, rank, line"
            )
        )

    def __exit__(self, *exc_info: object) -> None:
        try:
            self._db.close()
        finally:
            self._dir.cleanup()


def _collect(rows: Iterable[_Row], where: Callable[[int], str]) -> Iterator[Record | BadRecord]:
    """Valid rows grouped into one record per (surface, user); a group's rows must be adjacent."""
    for (surface, user), rest in itertools.groupby(rows, key=_KEY):
        group = list(itertools.islice(rest, MAX_ITEMS + 1))
        extra = sum(1 for _ in rest)  # noqa: B031 (the rows islice left: counted, not kept)
        yield _group(surface, user, group, extra, where)


def _group(
    surface: str, user: str, group: list[_Row], extra: int, where: Callable[[int], str]
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
