"""The legacy batch feed: each format, bad records, the LMDB store and snapshot swaps.

Readers are tested through :class:`FeedStore` (what a load stores is what
``get`` answers), so every format is checked end to end. Most tests load on
the calling thread (``isolate=False``); the ``isolated`` ones load in a child
process as the server does. The watcher tests run on real time with short
polls: loads run on worker threads, which a fake clock does not wait for.
"""

from __future__ import annotations

import csv
import json
import logging
import os
import random
import re
import sqlite3
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import lmdb
import msgpack
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st

from actors import framing
from legacy_adapter import feed, sources
from legacy_adapter.errors import FeedError
from legacy_adapter.feed import FeedStore, watch_feed
from legacy_adapter.sources import (
    BadRecord,
    FeedEntry,
    LoadReport,
    Record,
    open_source,
)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedStore]:
    """A store that loads on the calling thread (no process start: fast, monkeypatchable)."""
    opened = FeedStore(tmp_path / "legacy", isolate=False)
    yield opened
    opened.close()


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[FeedStore]:
    """A store that loads in a child process, as the server runs it."""
    opened = FeedStore(tmp_path / "isolated")
    yield opened
    opened.close()


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


# -- JSONL ------------------------------------------------------------------------------


def test_jsonl_loads_every_user_with_or_without_scores(tmp_path: Path, store: FeedStore) -> None:
    path = write_jsonl(
        tmp_path / "feed.jsonl",
        [
            entry("u1", "home", ["a", "b"], [0.9, 0.5]),
            entry("u2", "home", ["c"]),
            entry("u1", "jobs", ["d"], [1]),
            {"user": 7, "surface": "home", "items": [11, "x"]},  # ints become strings
            entry("u3", "home", []),
        ],
    )

    report = store.load(open_source(str(path)))

    assert store.get("home", "u1") == FeedEntry(items=("a", "b"), scores=(0.9, 0.5))
    assert store.get("home", "u2") == FeedEntry(items=("c",), scores=None)
    assert store.get("jobs", "u1") == FeedEntry(items=("d",), scores=(1.0,))
    assert store.get("home", "7") == FeedEntry(items=("11", "x"))
    assert store.get("home", "u3") == FeedEntry(items=())
    assert store.get("jobs", "u2") is None
    assert store.get("nope", "u1") is None
    assert (report.records, report.entries, report.bad) == (5, 5, 0)
    assert report.source == str(path)
    assert store.snapshot == report.snapshot
    assert report.snapshot.startswith("feed.jsonl:")
    assert store.entries == 5


def test_jsonl_bad_lines_are_counted_with_line_numbers_and_never_stop_the_load(
    tmp_path: Path, store: FeedStore
) -> None:
    long_key = "s" * 300
    path = write_jsonl(
        tmp_path / "feed.jsonl",
        [
            entry("ok1", "home", ["a"]),  # 1
            "{not json",  # 2
            "[1, 2]",  # 3
            {"surface": "home", "items": ["a"]},  # 4: no user
            entry("u", "", ["a"]),  # 5: empty surface
            {"user": "u", "surface": "home", "items": "a"},  # 6
            entry("u", "home", ["a", ""]),  # 7: an empty item
            entry("u", "home", ["a", True]),  # 8: a bool is no id
            entry("u", "home", ["a", "b"], [1.0]),  # 9: scores of another length
            '{"user": "u", "surface": "home", "items": ["a"], "scores": [NaN]}',  # 10
            entry("u", "home", [str(i) for i in range(sources.MAX_ITEMS + 1)]),  # 11
            entry(long_key, long_key, ["a"]),  # 12: key over 511 bytes
            b'{"user": "\xff", "surface": "home", "items": ["a"]}',  # 13: not UTF-8
            "",  # 14: blank lines are skipped, not counted
            "   ",  # 15
            {"user": 1.5, "surface": "home", "items": ["a"]},  # 16
            entry("u", "home", ["a"], "high"),  # 17
            entry("ok2", "home", ["b"]),  # 18
        ],
    )

    report = store.load(open_source(str(path)))

    assert store.get("home", "ok1") == FeedEntry(items=("a",))
    assert store.get("home", "ok2") == FeedEntry(items=("b",))
    assert (report.records, report.entries, report.bad) == (16, 2, 14)
    why = reasons(report)
    assert set(why) == {f"feed.jsonl:{n}" for n in (*range(2, 14), 16, 17)}
    assert why["feed.jsonl:2"].startswith("invalid JSON")
    assert why["feed.jsonl:3"] == "not a JSON object"
    assert why["feed.jsonl:4"] == "'user' is missing"
    assert why["feed.jsonl:5"] == "'surface' is empty"
    assert why["feed.jsonl:6"] == "'items' must be a list"
    assert why["feed.jsonl:7"] == "items[1] must be a non-empty string or an integer"
    assert why["feed.jsonl:8"] == "items[1] must be a non-empty string or an integer"
    assert why["feed.jsonl:9"] == "'scores' has 1 numbers for 2 items"
    assert why["feed.jsonl:10"] == "scores[0] must be a finite number"
    assert why["feed.jsonl:11"] == "'items' has 1001 entries; at most 1000"
    assert "at most 511" in why["feed.jsonl:12"]
    assert why["feed.jsonl:13"] == "not UTF-8"
    assert why["feed.jsonl:16"] == "'user' must be a non-empty string or an integer"
    assert why["feed.jsonl:17"] == "'scores' must be a list of numbers"


def test_jsonl_duplicate_user_last_line_wins_and_counts_once(
    tmp_path: Path, store: FeedStore
) -> None:
    lines = [entry(f"u{n}", "home", [f"first{n}"]) for n in range(sources.BATCH + 5)]
    lines += [entry("u3", "home", ["second"]), entry("u3", "home", ["third"], [0.1])]
    lines.append(entry(f"u{sources.BATCH + 1}", "home", ["again"]))  # same batch as its first
    path = write_jsonl(tmp_path / "feed.jsonl", lines)

    report = store.load(open_source(str(path)))

    assert store.get("home", "u3") == FeedEntry(items=("third",), scores=(0.1,))
    assert store.get("home", f"u{sources.BATCH + 1}") == FeedEntry(items=("again",))
    assert (report.records, report.entries) == (sources.BATCH + 8, sources.BATCH + 5)


def test_jsonl_line_over_the_length_limit_is_bad_and_skipped_whole(
    tmp_path: Path, store: FeedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sources, "MAX_LINE_BYTES", 64)
    path = write_jsonl(
        tmp_path / "feed.jsonl",
        [entry("u1", "home", ["x" * 200]), entry("u2", "home", ["a"])],
    )

    report = store.load(open_source(str(path)))

    assert reasons(report) == {"feed.jsonl:1": "line longer than 64 bytes"}
    assert store.get("home", "u2") == FeedEntry(items=("a",))


# -- CSV ----------------------------------------------------------------------------------


def write_csv(path: Path, rows: list[list[Any]]) -> Path:
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.mark.parametrize("header", [None, ["user", "surface", "rank", "item", "score"]])
def test_csv_collects_interleaved_rows_by_rank(
    tmp_path: Path, store: FeedStore, header: list[str] | None
) -> None:
    rows = [
        ["u1", "home", 2, "b", 0.5],
        ["u2", "home", 1, "z", ""],
        ["u1", "home", 1, "a", 0.9],
        ["u1", "jobs", 1, "j", ""],
        ["u1", "home", 10, "c", 0.1],
        ["u2", "home", 2, "y", ""],
    ]
    path = write_csv(tmp_path / "feed.csv", ([header] if header else []) + rows)

    report = store.load(open_source(str(path)))

    assert store.get("home", "u1") == FeedEntry(items=("a", "b", "c"), scores=(0.9, 0.5, 0.1))
    assert store.get("home", "u2") == FeedEntry(items=("z", "y"), scores=None)
    assert store.get("jobs", "u1") == FeedEntry(items=("j",))
    assert (report.records, report.entries, report.bad) == (6, 3, 0)


def test_csv_four_column_header_in_any_case_is_skipped(tmp_path: Path, store: FeedStore) -> None:
    path = write_csv(
        tmp_path / "feed.csv", [["User", " SURFACE", "Rank", "item"], ["u", "s", 1, "i"]]
    )

    report = store.load(open_source(str(path)))

    assert (report.records, report.bad) == (1, 0)
    assert store.get("s", "u") == FeedEntry(items=("i",))


def test_csv_bad_rows_and_groups_are_counted_and_the_rest_loads(
    tmp_path: Path, store: FeedStore
) -> None:
    path = tmp_path / "feed.csv"
    path.write_bytes(
        b"user,surface,rank,item,score\n"  # 1
        b"ok,home,1,a,\n"  # 2
        b"u,home,1\n"  # 3: too few fields
        b"u,home,x,a\n"  # 4: rank not a number
        b"u,home,0,a\n"  # 5: rank below 1
        b"u,home,1,,\n"  # 6: empty item
        b"u,home,1,a,abc\n"  # 7: score not a number
        b"u,home,1,a,nan\n"  # 8: score not finite
        b",home,1,a\n"  # 9: no user
        b"u,home,1,\xff\n"  # 10: not UTF-8
        b"dup,home,1,a\n"  # 11
        b"ok,home,2,b,\n"  # 12
        b"dup,home,1,b\n"  # 13: same rank again: the user's list is dropped
        b"mixed,home,1,a,0.5\n"  # 14
        b"mixed,home,2,b\n"  # 15: no score while the other has one
        b'u,home,1,"a"b\n'  # 16: bad quoting
        b"\n"  # blank: skipped
        b"ok2,home,1,z,2.5\n"  # 18
    )

    report = store.load(open_source(str(path)))

    assert store.get("home", "ok") == FeedEntry(items=("a", "b"))
    assert store.get("home", "ok2") == FeedEntry(items=("z",), scores=(2.5,))
    assert store.get("home", "dup") is None
    assert store.get("home", "mixed") is None
    assert (report.records, report.entries) == (16, 2)
    why = reasons(report)
    assert report.bad == len(why) == 11
    assert why["feed.csv:3"] == "expected 4 or 5 fields (user,surface,rank,item[,score]), got 3"
    assert why["feed.csv:4"] == "rank must be an integer from 1 to 2147483647, got 'x'"
    assert why["feed.csv:5"].startswith("rank must be an integer")
    assert why["feed.csv:6"] == "'item' is empty"
    assert why["feed.csv:7"] == "score must be a finite number, got 'abc'"
    assert why["feed.csv:8"] == "score must be a finite number, got 'nan'"
    assert why["feed.csv:9"] == "'user' is empty"
    assert why["feed.csv:10"] == "not UTF-8"
    assert why["feed.csv:13"] == (
        "duplicate rank 1 for surface 'home' user 'dup' (also at feed.csv:11); dropped"
    )
    assert (
        why["feed.csv:14"] == "only some rows of surface 'home' user 'mixed' have a score; dropped"
    )
    assert why["feed.csv:16"].startswith("bad CSV")


def test_csv_user_with_too_many_rows_is_one_bad_record(tmp_path: Path, store: FeedStore) -> None:
    rows = [["big", "home", rank, f"i{rank}"] for rank in range(1, sources.MAX_ITEMS + 3)]
    path = write_csv(tmp_path / "feed.csv", [*rows, ["small", "home", 1, "a"]])

    report = store.load(open_source(str(path)))

    assert reasons(report) == {
        "feed.csv:1": "surface 'home' user 'big' has 1002 items; at most 1000"
    }
    assert store.get("home", "big") is None
    assert store.get("home", "small") == FeedEntry(items=("a",))


# -- SQLite -------------------------------------------------------------------------------


def make_db(path: Path, rows: list[tuple[Any, ...]], *, score: bool, table: str = "recs") -> str:
    with sqlite3.connect(path) as db:
        columns = "user, surface, rank, item" + (", score" if score else "")
        db.execute(f"CREATE TABLE {table} ({columns})")
        marks = ", ".join("?" * (5 if score else 4))
        db.executemany(f"INSERT INTO {table} VALUES ({marks})", rows)
    db.close()
    return f"sqlite:{path}?table={table}"


def test_sqlite_table_with_scores_loads_ordered_by_rank(tmp_path: Path, store: FeedStore) -> None:
    spec = make_db(
        tmp_path / "feed.db",
        [
            ("u1", "home", 2, "b", 0.5),
            ("u1", "home", 1, "a", 0.9),
            (42, "home", 1, 7, None),
            ("u2", "home", 1, "x", None),
            ("u2", "home", 1, "y", None),  # duplicate rank: u2 dropped
            (None, "home", 1, "a", None),  # row 6: no user
            ("u3", "home", "2", "c", 1),  # numeric text ranks are fine
            ("u3", "home", "one", "d", 1),  # row 8
        ],
        score=True,
    )

    report = store.load(open_source(spec))

    assert store.get("home", "u1") == FeedEntry(items=("a", "b"), scores=(0.9, 0.5))
    assert store.get("home", "42") == FeedEntry(items=("7",))
    assert store.get("home", "u2") is None
    assert store.get("home", "u3") == FeedEntry(items=("c",), scores=(1.0,))
    assert (report.records, report.entries, report.bad) == (8, 3, 3)
    why = reasons(report)
    assert why["table recs row 6"] == "'user' is missing"
    assert why["table recs row 8"].startswith("rank must be an integer")
    assert why["table recs row 5"].startswith("duplicate rank 1 for surface 'home' user 'u2'")
    assert report.source == f"table recs in {tmp_path / 'feed.db'}"


def test_sqlite_table_without_score_column(tmp_path: Path, store: FeedStore) -> None:
    spec = make_db(
        tmp_path / "feed.db",
        [("u1", "home", 2, "b"), ("u2", "home", 1, "c"), ("u1", "home", 1, "a")],
        score=False,
    )

    report = store.load(open_source(spec))

    assert store.get("home", "u1") == FeedEntry(items=("a", "b"))
    assert store.get("home", "u2") == FeedEntry(items=("c",))
    assert (report.records, report.entries, report.bad) == (3, 2, 0)


def test_sqlite_user_with_too_many_rows_is_one_bad_record(tmp_path: Path, store: FeedStore) -> None:
    rows = [("big", "s", rank, f"i{rank}") for rank in range(1, sources.MAX_ITEMS + 3)]
    spec = make_db(tmp_path / "feed.db", [*rows, ("small", "s", 1, "a")], score=False)

    report = store.load(open_source(spec))

    assert reasons(report) == {
        "table recs row 1": "surface 's' user 'big' has 1002 items; at most 1000"
    }
    assert store.get("s", "small") == FeedEntry(items=("a",))


def test_sqlite_snapshot_changes_with_the_database_and_needs_the_table(tmp_path: Path) -> None:
    spec = make_db(tmp_path / "feed.db", [("u", "s", 1, "i")], score=False)
    other = open_source(f"sqlite:{tmp_path / 'feed.db'}?table=later")
    source = open_source(spec)
    before = source.snapshot_id()

    with sqlite3.connect(tmp_path / "feed.db") as db:
        db.execute("INSERT INTO recs VALUES ('v', 's', 1, 'j')")
    db.close()

    assert other.snapshot_id() is None
    assert before is not None
    assert before.startswith("recs:")
    assert source.snapshot_id() not in (None, before)


def test_sqlite_table_lacking_a_column_fails_the_load(tmp_path: Path, store: FeedStore) -> None:
    with sqlite3.connect(tmp_path / "feed.db") as db:
        db.execute("CREATE TABLE recs (user, surface, item)")
    db.close()

    with pytest.raises(FeedError, match="lacks the column"):
        store.load(open_source(f"sqlite:{tmp_path / 'feed.db'}?table=recs"))
    assert store.snapshot is None


@pytest.mark.parametrize(
    "spec",
    [
        "sqlite:{db}",
        "sqlite:{db}?table=",
        "sqlite:{db}?table=recs;drop",
        'sqlite:{db}?table=re"cs',
        "sqlite:{db}?table=a&table=b",
        "sqlite:{db}?table=recs&x=1",
        "sqlite:{missing}?table=recs",
        "sqlite:?table=recs",
    ],
)
def test_bad_sqlite_specs_are_refused(tmp_path: Path, spec: str) -> None:
    make_db(tmp_path / "feed.db", [], score=False)

    with pytest.raises(FeedError):
        open_source(spec.format(db=tmp_path / "feed.db", missing=tmp_path / "none.db"))


# -- sources ------------------------------------------------------------------------------


def test_open_source_refuses_missing_paths_and_unknown_extensions(tmp_path: Path) -> None:
    (tmp_path / "feed.txt").write_text("")

    with pytest.raises(FeedError, match="no such file"):
        open_source(str(tmp_path / "absent.jsonl"))
    with pytest.raises(FeedError, match="unknown extension"):
        open_source(str(tmp_path / "feed.txt"))


def test_directory_serves_the_newest_complete_snapshot(tmp_path: Path) -> None:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    source = open_source(str(feeds))
    assert source.snapshot_id() is None

    write_jsonl(feeds / "2026-11-26.jsonl", [entry("u", "s", ["a"])])
    write_csv(feeds / "2026-11-27.csv", [["u", "s", 1, "b"]])
    (feeds / "2026-11-29.txt").write_text("ignored: another extension")
    (feeds / ".2026-11-30.jsonl").write_text("ignored: hidden")
    assert source.snapshot_id() == sources._file_id(feeds / "2026-11-27.csv")  # no .done anywhere

    (feeds / "2026-11-26.jsonl.done").touch()
    assert source.snapshot_id() == sources._file_id(feeds / "2026-11-26.jsonl")  # 27 unfinished

    (feeds / "2026-11-27.csv.done").touch()
    write_jsonl(feeds / "2026-11-28.jsonl", [entry("u", "s", ["c"])])  # still being written
    newest = source.snapshot_id()
    assert newest == sources._file_id(feeds / "2026-11-27.csv")
    assert newest is not None
    assert newest.startswith("2026-11-27.csv:")


def test_directory_snapshot_loads_its_file(tmp_path: Path, store: FeedStore) -> None:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    write_jsonl(feeds / "a.jsonl", [entry("u", "s", ["a"])])
    write_csv(feeds / "b.csv", [["u", "s", 1, "b"], ["u", "s", 0, "c"]])

    report = store.load(open_source(str(feeds)))

    assert store.get("s", "u") == FeedEntry(items=("b",))
    assert reasons(report) == {"b.csv:2": "rank must be an integer from 1 to 2147483647, got '0'"}
    assert report.source == f"directory {feeds}"


def test_a_changed_file_is_not_loaded_under_its_old_snapshot(
    tmp_path: Path, store: FeedStore
) -> None:
    path = write_jsonl(tmp_path / "feed.jsonl", [entry("u", "s", ["a"])])
    source = open_source(str(path))
    old = source.snapshot_id()
    assert old is not None
    write_jsonl(path, [entry("u", "s", ["a", "b"])])

    with pytest.raises(FeedError, match="changed"):
        store.load(source, old)
    assert store.snapshot is None


# -- the store ------------------------------------------------------------------------------


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


def test_a_restart_serves_the_last_loaded_feed_without_its_source(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "feed.jsonl", [entry("u", "s", ["a"], [1.0])])
    first = FeedStore(tmp_path / "legacy", isolate=False)
    report = first.load(open_source(str(path)))
    first.close()
    path.unlink()

    again = FeedStore(tmp_path / "legacy", isolate=False)
    try:
        assert again.get("s", "u") == FeedEntry(items=("a",), scores=(1.0,))
        assert again.snapshot == report.snapshot
        assert again.statistics() == feed.FeedStatistics(
            snapshot=report.snapshot, entries=1, loads=0, last_report=None
        )
    finally:
        again.close()


def test_a_swap_deletes_the_previous_environment(store: FeedStore) -> None:
    source = ListSource([("s", "u", ("a",), None)])
    store.load(source)
    first = snapshots(store)
    source.items = [("s", "u", ("b",), None), ("s", "v", ("c",), None)]
    source.version = "v2"

    report = store.load(source)

    assert store.get("s", "u") == FeedEntry(items=("b",))
    assert (store.snapshot, store.entries) == ("v2", 2)
    assert len(first) == len(snapshots(store)) == 1
    assert snapshots(store) != first
    assert store.statistics().loads == 2
    assert store.statistics().last_report == report
    assert json.loads((store.path / "CURRENT").read_text())["env"] == snapshots(store)[0]


@pytest.mark.parametrize("error", [OSError("gone"), sqlite3.OperationalError("locked")])
def test_a_load_that_fails_midway_leaves_the_old_feed_serving(
    store: FeedStore, error: Exception
) -> None:
    store.load(ListSource([("s", "u", ("old",), None)]))
    kept = snapshots(store)
    records: list[Record | BadRecord] = [
        ("s", f"u{n}", ("new",), None) for n in range(3 * sources.BATCH)
    ]
    failing = ListSource(records, fail_after=2 * sources.BATCH + 7, error=error)
    failing.version = "v2"

    with pytest.raises(FeedError, match="failed"):
        store.load(failing)

    assert store.get("s", "u") == FeedEntry(items=("old",))
    assert store.get("s", "u1") is None
    assert (store.snapshot, snapshots(store)) == ("v1", kept)


def test_a_load_whose_source_file_vanished_changes_nothing(
    tmp_path: Path, store: FeedStore
) -> None:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    write_jsonl(feeds / "1.jsonl", [entry("u", "s", ["old"])])
    source = open_source(str(feeds))
    store.load(source)
    write_jsonl(feeds / "2.jsonl", [entry("u", "s", ["new"])])
    newest = source.snapshot_id()
    assert newest is not None
    (feeds / "2.jsonl").unlink()

    with pytest.raises(FeedError):
        store.load(source, newest)
    assert store.get("s", "u") == FeedEntry(items=("old",))
    assert len(snapshots(store)) == 1


def test_a_source_without_a_snapshot_cannot_be_loaded(store: FeedStore) -> None:
    source = ListSource([])
    source.version = None  # type: ignore[assignment]

    with pytest.raises(FeedError, match="no complete snapshot"):
        store.load(source)


def test_keys_over_lmdb_limit_and_unencodable_values_are_bad_records(store: FeedStore) -> None:
    source = ListSource(
        [
            ("s", "x" * 600, ("a",), None),
            ("s", "ok", ("a",), None),
            ("s", "\ud800", ("a",), None),
            BadRecord(where="somewhere", reason="told so"),
        ]
    )

    report = store.load(source)

    assert store.get("s", "ok") == FeedEntry(items=("a",))
    assert store.get("s", "x" * 600) is None
    assert store.get("s", "\ud800") is None
    assert (report.records, report.entries, report.bad) == (4, 1, 3)
    assert report.examples[0] == BadRecord(
        where="list record 1", reason="surface and user take 602 bytes; at most 511 fit"
    )
    assert report.examples[2] == BadRecord(where="somewhere", reason="told so")


def test_only_the_first_examples_are_kept(store: FeedStore) -> None:
    bad: list[Record | BadRecord] = [BadRecord(where=str(n), reason="x") for n in range(50)]

    report = store.load(ListSource(bad))

    assert report.bad == 50
    assert [b.where for b in report.examples] == [str(n) for n in range(sources.MAX_EXAMPLES)]


def test_the_map_grows_while_loading(
    tmp_path: Path, store: FeedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(feed, "INITIAL_MAP_SIZE", 64 << 10)
    items = tuple(f"item-{n}" for n in range(20))
    source = ListSource([("s", f"u{n}", items, None) for n in range(25_000)])

    report = store.load(source)

    assert report.entries == 25_000
    assert store.get("s", "u24999") == FeedEntry(items=items)


def test_one_process_at_a_time_opens_a_store(store: FeedStore) -> None:
    with pytest.raises(FeedError, match="in use"):
        FeedStore(store.path, isolate=False)


def test_leftovers_of_an_interrupted_load_are_removed_on_open(tmp_path: Path) -> None:
    first = FeedStore(tmp_path / "legacy", isolate=False)
    first.load(ListSource([("s", "u", ("a",), None)]))
    first.close()
    (tmp_path / "legacy" / "snap-9").mkdir()  # a load that died with the process
    (tmp_path / "legacy" / "snap-9" / "data.mdb").write_bytes(b"partial")

    again = FeedStore(tmp_path / "legacy", isolate=False)
    try:
        assert snapshots(again) == ["snap-1"]
        assert again.get("s", "u") == FeedEntry(items=("a",))
    finally:
        again.close()


@pytest.mark.parametrize(
    ("current", "field"),
    [
        ('{"env": "../elsewhere", "snapshot": "v1"}', "env"),
        ('{"env": "snap-7", "snapshot": "v1"}', "env"),  # no such environment
        ('{"env": "snap-1", "snapshot": 3}', "snapshot"),
        ('{"env": "snap-1", "snapshot": "v1", "colour": "red"}', "colour"),
        ("[1, 2]", "expected an object"),
        ("{not json", "not JSON"),
    ],
)
def test_an_invalid_current_file_refuses_to_open_and_deletes_nothing(
    tmp_path: Path, current: str, field: str
) -> None:
    first = FeedStore(tmp_path / "legacy", isolate=False)
    first.load(ListSource([("s", "u", ("a",), None)]))
    first.close()
    (tmp_path / "legacy" / "CURRENT").write_text(current)

    with pytest.raises(FeedError, match=re.escape(f"CURRENT: {field}")):
        FeedStore(tmp_path / "legacy", isolate=False)

    # Nothing was deleted, and the directory's lock was released: mended, it opens.
    (tmp_path / "legacy" / "CURRENT").write_text('{"env": "snap-1", "snapshot": "v1"}')
    again = FeedStore(tmp_path / "legacy", isolate=False)
    try:
        assert again.get("s", "u") == FeedEntry(items=("a",))
    finally:
        again.close()


def test_closing_stops_a_load_in_progress(store: FeedStore) -> None:
    def slow() -> Iterator[Record]:
        for n in range(3 * sources.BATCH):
            if n == sources.BATCH + 1:
                # Wait until close() asked to stop (test-only peek at the store's flag).
                assert store._closing.wait(10)
            yield ("s", f"u{n}", ("a",), None)

    source = ListSource([])
    source.records = lambda snapshot_id: slow()  # type: ignore[method-assign]
    outcome: list[BaseException | LoadReport] = []

    def load() -> None:
        try:
            outcome.append(store.load(source))
        except FeedError as exc:
            outcome.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    time.sleep(0.05)
    store.close()
    loader.join(10)

    assert isinstance(outcome[0], FeedError)
    assert snapshots(store) == []
    assert store.get("s", "u1") is None


def test_get_answers_none_for_keys_that_cannot_exist(store: FeedStore) -> None:
    store.load(ListSource([("s", "u", ("a",), None)]))

    assert store.get("s", "x" * 600) is None
    assert store.get("s", "\ud800") is None
    assert store.get("s\0u", "") is None


# -- damaged entries -------------------------------------------------------------------------


def rewrite_entry(store: FeedStore, key: bytes, change: Any) -> None:
    """Rewrite one stored entry in place, through the store's own environment (one process
    may not open an environment twice)."""
    with store._env.begin(write=True) as txn:
        txn.put(key, change(txn.get(key)))


def flip_middle(value: bytes) -> bytes:
    damaged = bytearray(value)
    damaged[len(damaged) // 2] ^= 0x01
    return bytes(damaged)


@pytest.mark.parametrize(
    "change",
    [
        flip_middle,  # fails the checksum
        lambda value: framing.seal(msgpack.packb(["a", "b", "c"]), b"s\0u1"),  # wrong shape
        lambda value: framing.seal(msgpack.packb((["a"], [1.0, 2.0])), b"s\0u1"),  # scores
        lambda value: b"\xc1\x00",  # cut short
        lambda value: b"\x92\xc1",  # an old, unsealed entry that does not decode
    ],
    ids=["bit", "shape", "scores", "short", "undecodable"],
)
def test_a_damaged_entry_is_absent_counted_and_logged_never_raised(
    store: FeedStore, change: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store.load(ListSource([("s", "u1", ("a", "b"), (2.0, 1.0)), ("s", "u2", ("c",), None)]))
    rewrite_entry(store, b"s\0u1", change)

    assert store.get("s", "u1") is None
    assert store.get("s", "u1") is None
    assert store.get("s", "u2") == FeedEntry(items=("c",))
    assert store.statistics().corrupt_entries == 1
    (line,) = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert "the entry of user 'u1' on surface 's' is corrupt" in line


def test_entries_are_sealed_and_old_unsealed_ones_still_read(store: FeedStore) -> None:
    store.load(ListSource([("s", "u1", ("a", "b"), (2.0, 1.0)), ("s", "u2", ("c",), None)]))
    with store._env.begin() as txn:
        assert all(framing.is_sealed(value) for _, value in txn.cursor())
    rewrite_entry(store, b"s\0u1", lambda value: bytes(framing.unseal(value, b"s\0u1")))

    assert store.get("s", "u1") == FeedEntry(items=("a", "b"), scores=(2.0, 1.0))
    store.close()  # checked as by another process
    problems: list[tuple[str, str]] = []
    counts = feed.check_feed_store(store.path, lambda *p: problems.append(p))
    assert counts == {"entries": 2, "sealed": 1, "unsealed": 1}
    assert problems == []


def test_an_lmdb_error_on_read_is_an_absent_entry(store: FeedStore) -> None:
    store.load(ListSource([("s", "u1", ("a",), None)]))

    class Damaged:
        def begin(self) -> Any:
            raise lmdb.CorruptedError("mdb_txn_begin: MDB_CORRUPTED")

    real, store._env = store._env, Damaged()
    try:
        assert store.get("s", "u1") is None
        assert store.statistics().corrupt_entries == 1
    finally:
        store._env = real


def test_check_feed_store_names_each_damaged_entry(store: FeedStore) -> None:
    store.load(ListSource([(f"s{n}", f"u{n}", ("a",), None) for n in range(5)]))
    rewrite_entry(store, b"s3\0u3", flip_middle)
    store.close()  # checked as by another process
    problems: list[tuple[str, str]] = []

    counts = feed.check_feed_store(store.path, lambda *p: problems.append(p))

    assert counts["entries"] == 5
    (where, what), *_ = problems
    assert where.endswith("surface 's3', user 'u3'")
    assert "checksum mismatch" in what


# -- loading in a child process -------------------------------------------------------------


class StallingSource(ListSource):
    """Yields its records, then never ends (until its process is killed)."""

    def records(self, snapshot_id: str) -> Iterator[Record | BadRecord]:
        yield from self.items
        while True:
            time.sleep(1)


def test_an_isolated_load_stores_what_a_thread_load_stores(
    tmp_path: Path, store: FeedStore, isolated: FeedStore
) -> None:
    feeds = tmp_path / "feeds"
    feeds.mkdir()
    write_jsonl(feeds / "1.jsonl", [entry("u", "s", ["a"], [0.5]), "{bad", entry(9, "s", [1])])
    csv_path = write_csv(tmp_path / "feed.csv", [["u", "s", 2, "b"], ["u", "s", 1, "a"], ["v"]])
    spec = make_db(
        tmp_path / "feed.db", [("u", "s", 1, "a", 0.5), ("u", "s", 1, "b", 1)], score=True
    )

    for source in (str(feeds), str(csv_path), spec):
        in_thread = store.load(open_source(source))
        in_child = isolated.load(open_source(source))

        assert attrs.evolve(in_child, seconds=0) == attrs.evolve(in_thread, seconds=0)
        for user in ("u", "9", "v"):
            assert isolated.get("s", user) == store.get("s", user)


def test_an_isolated_load_that_fails_leaves_the_old_feed_serving(isolated: FeedStore) -> None:
    isolated.load(ListSource([("s", "u", ("old",), None)]))
    failing = ListSource([("s", "u", ("new",), None)] * 3, fail_after=2)
    failing.version = "v2"

    with pytest.raises(FeedError, match="the disk went away") as raised:
        isolated.load(failing)

    assert "in the legacy feed loader process" in "".join(raised.value.__cause__.__notes__)  # type: ignore[union-attr]
    assert isolated.get("s", "u") == FeedEntry(items=("old",))
    assert (isolated.snapshot, len(snapshots(isolated))) == ("v1", 1)


def test_closing_terminates_an_isolated_load_in_progress(isolated: FeedStore) -> None:
    outcome: list[BaseException | LoadReport] = []

    def load() -> None:
        try:
            outcome.append(isolated.load(StallingSource([("s", "u", ("a",), None)])))
        except FeedError as exc:
            outcome.append(exc)

    loader = threading.Thread(target=load)
    loader.start()
    deadline = time.monotonic() + 20
    while not snapshots(isolated) and time.monotonic() < deadline:  # the child is writing
        time.sleep(0.01)
    isolated.close()
    loader.join(20)

    assert isinstance(outcome[0], FeedError)
    assert "ended without a readable result" in str(outcome[0])
    assert snapshots(isolated) == []


def test_a_source_that_does_not_pickle_cannot_load_isolated(isolated: FeedStore) -> None:
    source = ListSource([])
    source.describe = lambda: "local"  # type: ignore[method-assign]

    with pytest.raises(FeedError, match="isolate=False"):
        isolated.load(source)
    assert snapshots(isolated) == []


# -- properties ---------------------------------------------------------------------------

names = st.text(st.characters(categories=["L", "N"]), min_size=1, max_size=6)
lists = st.tuples(
    names, names, st.lists(names, min_size=1, max_size=4), st.booleans(), st.randoms()
)


@settings(max_examples=30, deadline=None)
@given(st.lists(lists, max_size=25), st.randoms())
def test_jsonl_and_csv_of_the_same_entries_load_the_same(
    entries: list[tuple[str, str, list[str], bool, random.Random]], rng: random.Random
) -> None:
    """Whatever the entries, a JSONL file and a shuffled CSV of them serve the last of each."""
    expected: dict[tuple[str, str], FeedEntry] = {}
    jsonl: list[Any] = []
    rows: dict[tuple[str, str], list[list[Any]]] = {}
    for user, surface, items, scored, pick in entries:
        scores = [pick.uniform(-1e6, 1e6) for _ in items] if scored else None
        expected[surface, user] = FeedEntry(
            items=tuple(items), scores=None if scores is None else tuple(scores)
        )
        jsonl.append(entry(user, surface, items, scores))
        rows[surface, user] = [  # a later entry replaces the user's rows in the CSV
            [user, surface, rank, item, "" if scores is None else repr(scores[rank - 1])]
            for rank, item in enumerate(items, 1)
        ]
    csv_rows = [row for group in rows.values() for row in group]
    rng.shuffle(csv_rows)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_jsonl(root / "feed.jsonl", jsonl)
        write_csv(root / "feed.csv", csv_rows)
        for name in ("feed.jsonl", "feed.csv"):
            store = FeedStore(root / name.replace(".", "-"), isolate=False)
            try:
                report = store.load(open_source(str(root / name)))
                assert (report.bad, report.entries) == (0, len(expected))
                for (surface, user), want in expected.items():
                    assert store.get(surface, user) == want
            finally:
                store.close()


# -- watching -------------------------------------------------------------------------------


async def test_watcher_loads_the_current_snapshot_before_reporting_started(
    tmp_path: Path, store: FeedStore
) -> None:
    path = write_jsonl(tmp_path / "feed.jsonl", [entry("u", "s", ["a"])])
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(watch_feed, store, open_source(str(path)))
            assert store.get("s", "u") == FeedEntry(items=("a",))
            nursery.cancel_scope.cancel()


async def test_watcher_after_a_restart_does_not_reload_the_same_snapshot(
    tmp_path: Path,
) -> None:
    path = write_jsonl(tmp_path / "feed.jsonl", [entry("u", "s", ["a"])])
    source = open_source(str(path))
    first = FeedStore(tmp_path / "legacy", isolate=False)
    first.load(source)
    first.close()
    again = FeedStore(tmp_path / "legacy", isolate=False)
    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                await nursery.start(watch_feed, again, source)
                nursery.cancel_scope.cancel()
        assert again.statistics().loads == 0
    finally:
        again.close()


async def test_watcher_logs_a_failed_snapshot_keeps_serving_and_takes_the_next(
    store: FeedStore, caplog: pytest.LogCaptureFixture
) -> None:
    source = ListSource([("s", "u", ("old",), None), BadRecord(where="x:2", reason="broken")])
    caplog.set_level(logging.INFO, logger="legacy_adapter.feed")
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(partial_watch(store, source, poll_s=0.01))
            assert "1 bad records skipped, e.g. x:2: broken" in caplog.text
            # A snapshot that cannot be read: logged, not retried, the old feed serves.
            source.version, source.fail_after = "v2", 0
            await wait_for(lambda: "cannot load snapshot v2" in caplog.text)
            await trio.sleep(0.05)
            assert store.get("s", "u") == FeedEntry(items=("old",))
            source.version, source.fail_after = "v3", None
            source.items = [("s", "u", ("new",), None)]
            await wait_for(lambda: store.get("s", "u") == FeedEntry(items=("new",)))
            nursery.cancel_scope.cancel()
    assert caplog.text.count("cannot load snapshot v2") == 1
    assert store.statistics().loads == 2


def partial_watch(store: FeedStore, source: Any, *, poll_s: float) -> Any:
    async def run(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        await watch_feed(store, source, poll_s=poll_s, task_status=task_status)

    return run


async def wait_for(condition: Any) -> None:
    """Poll ``condition`` (state changed by a worker thread, so no event to wait on)."""
    while True:
        if condition():
            return
        await trio.sleep(0.01)


async def test_snapshot_swap_under_load_serves_old_or_new_never_neither(
    tmp_path: Path, isolated: FeedStore
) -> None:
    """Readers in a tight loop during a swap see complete old or complete new lists only."""
    users = 20_000
    feeds = tmp_path / "feeds"
    feeds.mkdir()

    def snapshot(name: str, tag: str) -> None:
        lines = [entry(f"u{n}", "home", [f"{tag}{n}-{k}" for k in range(5)]) for n in range(users)]
        write_jsonl(feeds / name, lines)
        (feeds / f"{name}.done").touch()

    def old(n: int) -> FeedEntry:
        return FeedEntry(items=tuple(f"a{n}-{k}" for k in range(5)))

    def new(n: int) -> FeedEntry:
        return FeedEntry(items=tuple(f"b{n}-{k}" for k in range(5)))

    snapshot("2026-11-27.jsonl", "a")
    source = open_source(str(feeds))
    seen = {"old": 0, "new": 0}
    swapped = trio.Event()

    async def reader(seed: int) -> None:
        rng = random.Random(seed)
        after_swap = 0
        while after_swap < 200:
            n = rng.randrange(users)
            got = isolated.get("home", f"u{n}")
            if got == old(n):
                assert not swapped.is_set(), "an old list after the swap completed"
                seen["old"] += 1
            else:
                assert got == new(n), f"u{n}: {got!r}"
                seen["new"] += 1
            if swapped.is_set():
                after_swap += 1
            await trio.lowlevel.checkpoint()

    with trio.fail_after(30):
        async with trio.open_nursery() as watching:
            await watching.start(partial_watch(isolated, source, poll_s=0.02))
            first = isolated.snapshot
            async with trio.open_nursery() as readers:
                for seed in range(4):
                    readers.start_soon(reader, seed)
                await trio.sleep(0.05)
                await trio.to_thread.run_sync(snapshot, "2026-11-28.jsonl", "b")
                await wait_for(lambda: isolated.snapshot != first)
                swapped.set()
            watching.cancel_scope.cancel()

    assert seen["old"] > 0
    assert seen["new"] >= 4 * 200
    assert all(isolated.get("home", f"u{n}") == new(n) for n in range(users))
    assert len(snapshots(isolated)) == 1


def test_two_hundred_thousand_users_load_in_seconds(tmp_path: Path, isolated: FeedStore) -> None:
    users = 200_000
    path = tmp_path / "big.jsonl"
    with path.open("w") as f:
        for n in range(users):
            items = [f"i{(n * 7 + k) % 50_000}" for k in range(10)]
            f.write(
                json.dumps(entry(f"user-{n}", "home", items, [1.0 - k / 10 for k in range(10)]))
            )
            f.write("\n")

    started = time.perf_counter()
    report = isolated.load(open_source(str(path)))
    elapsed = time.perf_counter() - started

    print(f"\nloaded {report.entries} users in {elapsed:.2f} s ({report.entries / elapsed:,.0f}/s)")
    assert report.entries == users
    assert report.bad == 0
    assert isolated.get("home", "user-199999") is not None
    assert os.path.exists(isolated.path / "CURRENT")
