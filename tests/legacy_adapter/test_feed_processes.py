"""One feed store directory served by several processes: one loader, followers that serve
every snapshot it publishes and write nothing.

The loader runs in a child process here, as in the server: LMDB opens an
environment once per process, so a loader and a follower of one directory
cannot share a process while it serves a snapshot.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Iterator
from multiprocessing.connection import Connection
from pathlib import Path

import pytest
import trio

from legacy_adapter.errors import FeedError
from legacy_adapter.feed import FeedStore, watch_feed
from legacy_adapter.records import Record
from legacy_adapter.sources import FeedEntry
from tests.legacy_adapter.feed_inputs import ListSource, snapshots

#: A bound on each wait for the loader process (starting it imports LMDB and the adapter).
WAIT_S = 60.0


def serve_loads(path: str, jobs: Connection) -> None:
    """The loader process: load each ``(version, records)`` received; answer its snapshot id."""
    with FeedStore(path, isolate=False) as store:
        jobs.send("ready")
        while (job := jobs.recv()) is not None:
            version, records = job
            source = ListSource(records)
            source.version = version
            jobs.send(store.load(source).snapshot)


class Loader:
    """A loader process over a store directory, loading what it is told to."""

    def __init__(self, path: Path) -> None:
        self._jobs, child_end = multiprocessing.get_context("spawn").Pipe()
        self._process = multiprocessing.get_context("spawn").Process(
            target=serve_loads, args=(str(path), child_end)
        )
        self._process.start()
        assert self._receive() == "ready"

    def load(self, version: str, records: list[Record]) -> None:
        self._jobs.send((version, records))
        assert self._receive() == version

    def stop(self) -> None:
        self._jobs.send(None)
        self._process.join(WAIT_S)
        assert self._process.exitcode == 0

    def _receive(self) -> object:
        assert self._jobs.poll(WAIT_S), "the loader process did not answer"
        return self._jobs.recv()


@pytest.fixture
def loader(tmp_path: Path) -> Iterator[Loader]:
    running = Loader(tmp_path / "legacy")
    yield running
    running.stop()


def test_a_follower_serves_each_snapshot_the_loader_publishes(
    tmp_path: Path, loader: Loader
) -> None:
    follower = FeedStore(tmp_path / "legacy", loader=False)
    try:
        assert follower.get("s", "u") is None  # nothing loaded yet
        loader.load("v1", [("s", "u", ("a",), None)])
        assert follower.get("s", "u") == FeedEntry(items=("a",))
        assert follower.snapshot == "v1"

        loader.load("v2", [("s", "u", ("b", "c"), None), ("s", "w", ("d",), None)])
        assert follower.get("s", "u") == FeedEntry(items=("b", "c"))
        statistics = follower.statistics()
        assert (statistics.snapshot, statistics.entries, statistics.loads) == ("v2", 2, 2)
        # The loader deleted the environment the follower had open; the follower deleted nothing.
        assert snapshots(follower) == ["snap-2"]
    finally:
        follower.close()


def test_a_follower_opened_after_a_load_serves_it_and_refresh_finds_nothing_new(
    tmp_path: Path, loader: Loader
) -> None:
    loader.load("v1", [("s", "u", ("a",), None)])
    with FeedStore(tmp_path / "legacy", loader=False) as follower:
        assert follower.snapshot == "v1"
        assert follower.refresh() is False
        assert follower.get("s", "u") == FeedEntry(items=("a",))


def test_a_follower_loads_nothing_and_needs_no_watcher(tmp_path: Path, loader: Loader) -> None:
    loader.load("v1", [("s", "u", ("a",), None)])
    with FeedStore(tmp_path / "legacy", loader=False) as follower:
        with pytest.raises(FeedError, match="follows its loader"):
            follower.load(ListSource([("s", "u", ("x",), None)]))
        with pytest.raises(FeedError, match="follows its loader"):
            trio.run(watch_feed, follower, ListSource([]))
        assert follower.get("s", "u") == FeedEntry(items=("a",))


def test_followers_may_open_beside_the_loader_but_a_second_loader_may_not(
    tmp_path: Path, loader: Loader
) -> None:
    with pytest.raises(FeedError, match="in use"):
        FeedStore(tmp_path / "legacy", isolate=False)
    with (
        FeedStore(tmp_path / "legacy", loader=False) as first,
        FeedStore(tmp_path / "other", loader=False) as elsewhere,
    ):
        assert (first.snapshot, elsewhere.snapshot) == (None, None)


def test_a_follower_keeps_serving_when_current_is_replaced_by_a_bad_one(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with FeedStore(tmp_path / "legacy", isolate=False) as first:
        first.load(ListSource([("s", "u", ("a",), None)]))
    with FeedStore(tmp_path / "legacy", loader=False) as follower:
        (tmp_path / "legacy" / "CURRENT").write_text('{"env": "snap-7", "snapshot": "v2"}')
        with caplog.at_level(logging.ERROR, logger="legacy_adapter.feed"):
            assert follower.get("s", "u") == FeedEntry(items=("a",))
        assert "CURRENT: env: names snap-7, which does not exist" in caplog.text
        with pytest.raises(FeedError, match="snap-7"):  # as a loader refuses it
            FeedStore(tmp_path / "legacy", loader=False)
