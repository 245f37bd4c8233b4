"""Read a CSV feed of ``user,surface,rank,item[,score]`` rows (header optional).

The rows of one user may be interleaved with others'; :func:`read_csv`
spools the valid ones to a temporary SQLite file (:class:`_RowSpool`), which
sorts them on disk, and reads them back as one record per (surface, user)
ordered by rank. It is a reader of :class:`legacy_adapter.sources.FeedFile`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import os
import sqlite3
import tempfile
from collections.abc import Generator, Iterator
from typing import IO

from legacy_adapter.records import (
    BATCH,
    COLUMNS,
    MAX_KEY_BYTES,
    MAX_RANK,
    BadRecord,
    Record,
    Row,
    check_row,
    collect_rows,
)


def read_csv(raw: IO[bytes], name: str) -> Generator[Record | BadRecord, None, int]:
    """The records of the CSV file ``raw`` (called ``name`` in bad records); returns the
    number of rows read (blank lines and a header not counted)."""
    read = 0
    with (
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
                yield BadRecord(where=f"{name}:{reader.line_num}", reason=f"bad CSV: {exc}")
                continue
            if not fields or (len(fields) == 1 and not fields[0].strip()):
                continue  # a blank line
            if first:
                first = False
                header = tuple(field.strip().lower() for field in fields)
                if header in (COLUMNS[:4], COLUMNS):
                    continue
            read += 1
            row = _csv_row(fields, reader.line_num)
            if isinstance(row, str):
                yield BadRecord(where=f"{name}:{reader.line_num}", reason=row)
            else:
                spool.add(row)
        yield from collect_rows(spool.rows(), lambda line: f"{name}:{line}")
    return read


def _csv_row(fields: list[str], line: int) -> Row | str:
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
    # The common case, checked inline (a feed has millions of rows); check_row says what is
    # wrong.
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
    return check_row([user, surface, rank, item, score or None], line)


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
        self._pending: list[Row] = []
        return self

    def add(self, row: Row) -> None:
        self._pending.append(row)
        if len(self._pending) >= BATCH:
            self._flush()

    def _flush(self) -> None:
        self._db.executemany("INSERT INTO rows VALUES (?, ?, ?, ?, ?, ?)", self._pending)
        self._pending.clear()

    def rows(self) -> Iterator[Row]:
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
