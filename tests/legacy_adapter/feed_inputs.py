"""Feeds for the feed tests: files in each format, and sources over records in memory."""

from __future__ import annotations

import csv
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from legacy_adapter.feed import FeedStore
from legacy_adapter.records import BadRecord, Record
from legacy_adapter.sources import LoadReport


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    """One line per element: a dict as JSON, a str or bytes as is."""
    with path.open("wb") as f:
        for line in lines:
            if isinstance(line, dict):
                line = json.dumps(line)
            f.write((line if isinstance(line, bytes) else line.encode()) + b"\n")
    return path


def entry(user: Any, surface: str, items: list[Any], scores: Any = None) -> dict[str, Any]:
    out: dict[str, Any] = {"user": user, "surface": surface, "items": items}
    if scores is not None:
        out["scores"] = scores
    return out


def reasons(report: LoadReport) -> dict[str, str]:
    return {bad.where: bad.reason for bad in report.examples}


def write_csv(path: Path, rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


def make_db(path: Path, rows: list[tuple[Any, ...]], *, score: bool, table: str = "recs") -> str:
    with sqlite3.connect(path) as db:
        columns = "user, surface, rank, item" + (", score" if score else "")
        db.execute(f"CREATE TABLE {table} ({columns})")
        marks = ", ".join("?" * (5 if score else 4))
        db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    db.close()
    return f"sqlite:{path}?table={table}"


class ListSource:
    """A source over records in memory; it fails with ``error`` after ``fail_after`` of them."""

    def __init__(
        self,
        records: list[Record | BadRecord],
        *,
        fail_after: int | None = None,
        error: Exception | None = None,
    ) -> None:
        self.items = records
        self.fail_after = fail_after
        self.error = error or OSError("the disk went away")
        self.version = "v1"

    def describe(self) -> str:
        return "list"

    def snapshot_id(self) -> str | None:
        return self.version

    def records(self, snapshot_id: str) -> Iterator[Record | BadRecord]:
        for n, record in enumerate(self.items):
            if n == self.fail_after:
                raise self.error
            yield record


def snapshots(store: FeedStore) -> list[str]:
    return sorted(p.name for p in store.path.iterdir() if p.name.startswith("snap-"))
