"""The legacy feed watcher: loads each new snapshot while serving, swaps never serve neither.

The watcher tests run on real time with short polls: loads run on worker
threads, which a fake clock does not wait for.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from legacy_adapter.feed import FeedStore, watch_feed
from legacy_adapter.records import BadRecord
from legacy_adapter.sources import FeedEntry, open_source
from tests.legacy_adapter.feed_inputs import (
    ListSource,
    entry,
    snapshots,
    write_jsonl,
)

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
