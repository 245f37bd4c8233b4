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
:class:`LoadReport`), never fatal. The readers live in :mod:`legacy_adapter.jsonl_reader`
and :mod:`legacy_adapter.csv_reader`, the checks they share in
:mod:`legacy_adapter.records`; :mod:`legacy_adapter.feed` loads the records into LMDB.
"""

from __future__ import annotations

import contextlib
import itertools
import operator
import os
import re
import sqlite3
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import IO, Final, Protocol, TypeAlias
from urllib.parse import parse_qs

import attrs

from legacy_adapter.csv_reader import read_csv
from legacy_adapter.errors import FeedError
from legacy_adapter.jsonl_reader import read_jsonl
from legacy_adapter.records import (
    COLUMNS,
    MAX_ITEMS,
    BadRecord,
    Record,
    Row,
    check_row,
    group_rows,
)

_DONE: Final = ".done"
_IDENTIFIER: Final = re.compile(r"[A-Za-z0-9_]+", re.ASCII)
_SQLITE: Final = "sqlite:"
_RAW_KEY: Final = operator.itemgetter(2, 1)  # (surface, user) of (rowid, user, surface, …)

Reader: TypeAlias = Callable[[IO[bytes], str], Generator[Record | BadRecord, None, int]]
"""Reads one snapshot file (open, and its name for bad records) into records; returns the
lines or rows read."""
#: The reader of each file extension.
READERS: Final[dict[str, Reader]] = {".jsonl": read_jsonl, ".csv": read_csv}
MAX_EXAMPLES: Final = 20
"""Bad records a :class:`LoadReport` shows (it counts them all)."""


@attrs.frozen(kw_only=True)
class FeedEntry:
    """What the feed recommends to one user on one surface, best first."""

    items: tuple[str, ...]
    #: One score per item, or ``None`` if the feed gives none.
    scores: tuple[float, ...] | None = None


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
    reader = READERS.get(suffix)
    if reader is not None:
        return FeedFile(path, reader)
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


class FeedFile:
    """A feed in one file, read by ``reader``; its snapshot is the file's name, size and mtime.

    :func:`open_source` picks the reader by extension (:data:`READERS`).
    """

    def __init__(self, path: Path, reader: Reader) -> None:
        self.path = path
        self.reader = reader

    def describe(self) -> str:
        return str(self.path)

    def snapshot_id(self) -> str | None:
        return _file_id(self.path)

    def records(self, snapshot_id: str) -> Generator[Record | BadRecord, None, int]:
        return _read_snapshot(self.path, snapshot_id, self.reader)


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
        feeds = [name for name in names if name.lower().endswith(tuple(READERS))]
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
        reader = read_jsonl if name.lower().endswith(".jsonl") else read_csv
        return _read_snapshot(path, snapshot_id, reader)


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
            missing = [c for c in COLUMNS[:4] if c not in columns]
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
                valid: list[Row] = []
                extra = 0
                for rowid, *fields in raw_group:
                    read += 1
                    position = rowid if isinstance(rowid, int) else read
                    row = check_row(fields, position)
                    if isinstance(row, str):
                        yield BadRecord(where=where(position), reason=row)
                    elif len(valid) <= MAX_ITEMS:
                        valid.append(row)
                    else:
                        extra += 1  # counted, not kept: the group is bad anyway
                if valid:
                    yield group_rows(valid[0][0], valid[0][1], valid, extra, where)
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


def _read_snapshot(
    path: Path, snapshot_id: str, reader: Reader
) -> Generator[Record | BadRecord, None, int]:
    """The records of snapshot ``snapshot_id`` of the file at ``path``, lazily.

    Raises (at the first ``next``) :class:`FeedError` if the file is no longer
    that snapshot.
    """
    with _open_snapshot(path, snapshot_id) as f:
        return (yield from reader(f, path.name))
