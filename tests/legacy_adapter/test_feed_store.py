"""The legacy feed store: snapshot swaps, failed loads, damaged entries, loads in a child process.

Most tests load on the calling thread (``isolate=False``); the ``isolated``
ones load in a child process as the server does.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import lmdb
import msgpack
import pytest

from actors import framing
from legacy_adapter import feed_files, sources
from legacy_adapter.errors import FeedError
from legacy_adapter.feed import FeedStatistics, FeedStore
from legacy_adapter.records import BATCH, BadRecord, Record
from legacy_adapter.sources import FeedEntry, LoadReport, open_source
from tests.legacy_adapter.feed_inputs import (
    ListSource,
    entry,
    make_db,
    snapshots,
    write_csv,
    write_jsonl,
)

# -- the store ------------------------------------------------------------------------------


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
        assert again.statistics() == FeedStatistics(
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
    records: list[Record | BadRecord] = [("s", f"u{n}", ("new",), None) for n in range(3 * BATCH)]
    failing = ListSource(records, fail_after=2 * BATCH + 7, error=error)
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
    monkeypatch.setattr(feed_files, "INITIAL_MAP_SIZE", 64 << 10)
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
        for n in range(3 * BATCH):
            if n == BATCH + 1:
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
    counts = feed_files.check_feed_store(store.path, lambda *p: problems.append(p))
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

    counts = feed_files.check_feed_store(store.path, lambda *p: problems.append(p))

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
