"""The legacy batch feed's formats: JSONL, CSV, SQLite and snapshot directories, bad records.

Readers are tested through :class:`FeedStore` (what a load stores is what
``get`` answers), so every format is checked end to end, on the calling
thread (``isolate=False``).
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from legacy_adapter import jsonl_reader, sources
from legacy_adapter.errors import FeedError
from legacy_adapter.feed import FeedStore
from legacy_adapter.records import BATCH, MAX_ITEMS
from legacy_adapter.sources import FeedEntry, open_source
from tests.legacy_adapter.feed_inputs import (
    entry,
    make_db,
    reasons,
    write_csv,
    write_jsonl,
)

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
            entry("u", "home", [str(i) for i in range(MAX_ITEMS + 1)]),  # 11
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
    lines = [entry(f"u{n}", "home", [f"first{n}"]) for n in range(BATCH + 5)]
    lines += [entry("u3", "home", ["second"]), entry("u3", "home", ["third"], [0.1])]
    lines.append(entry(f"u{BATCH + 1}", "home", ["again"]))  # same batch as its first
    path = write_jsonl(tmp_path / "feed.jsonl", lines)

    report = store.load(open_source(str(path)))

    assert store.get("home", "u3") == FeedEntry(items=("third",), scores=(0.1,))
    assert store.get("home", f"u{BATCH + 1}") == FeedEntry(items=("again",))
    assert (report.records, report.entries) == (BATCH + 8, BATCH + 5)


def test_jsonl_line_over_the_length_limit_is_bad_and_skipped_whole(
    tmp_path: Path, store: FeedStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(jsonl_reader, "MAX_LINE_BYTES", 64)
    path = write_jsonl(
        tmp_path / "feed.jsonl",
        [entry("u1", "home", ["x" * 200]), entry("u2", "home", ["a"])],
    )

    report = store.load(open_source(str(path)))

    assert reasons(report) == {"feed.jsonl:1": "line longer than 64 bytes"}
    assert store.get("home", "u2") == FeedEntry(items=("a",))


# -- CSV ----------------------------------------------------------------------------------


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
    rows = [["big", "home", rank, f"i{rank}"] for rank in range(1, MAX_ITEMS + 3)]
    path = write_csv(tmp_path / "feed.csv", [*rows, ["small", "home", 1, "a"]])

    report = store.load(open_source(str(path)))

    assert reasons(report) == {
        "feed.csv:1": "surface 'home' user 'big' has 1002 items; at most 1000"
    }
    assert store.get("home", "big") is None
    assert store.get("home", "small") == FeedEntry(items=("a",))


# -- SQLite -------------------------------------------------------------------------------


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
    rows = [("big", "s", rank, f"i{rank}") for rank in range(1, MAX_ITEMS + 3)]
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
