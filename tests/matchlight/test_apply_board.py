"""The board on which readers post how far they have applied the log and the writer what it
has acknowledged; the writer answering a write once its readers have applied it, and holding
writes while the slowest of them is too far behind (``max_apply_lag``); which reader
snapshots items by age."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from actors import MemoryEventStore, RecordInteraction, SystemConfig, UpsertItem
from actors.write_path import VISIBLE_POLL_S, open_write_path
from matchlight.server import apply_board
from matchlight.server.apply_board import ApplyBoard
from matchlight.server.config import ServeConfig
from matchlight.server.worker_roles import NEVER, WorkerRole, reader_config


def test_the_slowest_live_reader_is_the_lowest_seq_posted(tmp_path: Path) -> None:
    with ApplyBoard(tmp_path / "applied", readers=3) as board:
        assert board.slowest() is None  # nobody has posted yet
        board.post(1, 500)
        board.post(3, 420)
        assert board.slowest() == 420
        board.post(3, 900)
        assert board.slowest() == 500


def test_a_reader_that_stopped_posting_is_not_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1_000.0]
    monkeypatch.setattr("matchlight.server.apply_board.time.monotonic", lambda: now[0])
    with ApplyBoard(tmp_path / "applied", readers=2) as board:
        board.post(1, 10)  # then it died, or is rebuilding after a restart
        now[0] += 0.5
        board.post(2, 90)
        assert board.slowest() == 10
        now[0] += apply_board.STALE_S
        assert board.slowest() == 90
        now[0] += apply_board.STALE_S
        assert board.slowest() is None


def test_other_processes_see_the_posts_and_any_of_them_may_create_the_file(
    tmp_path: Path,
) -> None:
    path = tmp_path / "applied"
    code = (
        "import sys; from pathlib import Path; "
        "from matchlight.server.apply_board import ApplyBoard; "
        "ApplyBoard(Path(sys.argv[1]), 2).post(2, 77)"
    )
    with ApplyBoard(path, readers=2) as board:
        subprocess.run([sys.executable, "-c", code, str(path)], check=True)
        assert board.slowest() == 77
    # A node started again with more readers: the file grows, the earlier slots stay.
    with ApplyBoard(path, readers=4) as board:
        assert os.path.getsize(path) == 5 * 16
        board.post(4, 3)
        assert board.slowest() == 3


def like(n: int) -> RecordInteraction:
    return RecordInteraction(id=f"ev-{n}", type="like", user="u1", item="a", ts=float(n))


async def test_writes_wait_while_the_slowest_reader_is_too_far_behind() -> None:
    """A reader that comes back far behind (it was not posting, so writes were answered
    without it) holds new writes until it is within ``max_apply_lag``; they are answered
    once it has applied them."""
    store = MemoryEventStore()
    applied: list[int | None] = [None]  # no reader is following
    config = SystemConfig(max_apply_lag=3)
    async with open_write_path(store, config, slowest=lambda: applied[0]) as path:
        await path.upsert_items([UpsertItem(event_id="up", item="a", ts=0.0)])
        await path.ingest([like(1), like(2), like(3)])
        done: list[int] = []

        async def write(n: int) -> None:
            await path.ingest([like(n)])
            done.append(n)

        applied[0] = 0  # it posts again, 4 behind
        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, 5)
            await trio.sleep(0.05)
            assert (done, store.last_seq()) == ([], 4)  # held before it was decided
            applied[0] = 1  # 3 behind: no longer held; answered once it is applied
            await trio.sleep(0.05)
            assert (done, store.last_seq()) == ([], 5)
            applied[0] = 5
            path.readers_moved()
        statistics = path.statistics()
    assert done == [5]
    assert statistics.writes_held == 1
    assert statistics.held_s >= 0.04


async def test_max_apply_lag_zero_never_holds_a_write() -> None:
    store = MemoryEventStore()
    config = SystemConfig(max_apply_lag=0)
    async with open_write_path(store, config, slowest=store.last_seq) as path:
        with trio.fail_after(5):
            for n in range(5):
                await path.ingest([like(n)])
        assert path.statistics().writes_held == 0
    assert store.last_seq() == 5


def test_the_writer_posts_the_seq_it_acknowledged_which_never_goes_back(
    tmp_path: Path,
) -> None:
    with ApplyBoard(tmp_path / "applied", readers=2) as board:
        assert board.acknowledged() == 0  # no writer has posted
        board.acknowledge(50)
        board.acknowledge(40)  # a write answered later whose events came earlier
        assert board.acknowledged() == 50
        assert board.slowest() is None  # the writer's slot is not a reader's
        board.restart_acknowledged(30)  # a new writer, on a log whose head is 30
        assert board.acknowledged() == 30


async def test_a_write_is_answered_once_every_reader_following_has_applied_it() -> None:
    """So that a read on any reader sees it without waiting; the seq is posted as
    acknowledged before the answer. A reader's ring makes the writer look at once."""
    store = MemoryEventStore()
    applied: list[int | None] = [0]
    acknowledged: list[int] = []
    async with open_write_path(
        store, SystemConfig(), slowest=lambda: applied[0], acknowledge=acknowledged.append
    ) as path:
        answers: list[int] = []

        async def write(first: int) -> None:
            answers.append((await path.ingest([like(first), like(first + 1)])).seq)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, 1)
            await trio.testing.wait_all_tasks_blocked()
            assert (store.last_seq(), answers, acknowledged) == (2, [], [])  # durable, not yet
            applied[0] = 1
            path.readers_moved()
            await trio.testing.wait_all_tasks_blocked()
            assert answers == []  # one of its events is not applied yet
            applied[0] = 2
            path.readers_moved()
            await trio.testing.wait_all_tasks_blocked()
            assert (answers, acknowledged) == ([2], [2])
            nursery.start_soon(write, 3)
            await trio.testing.wait_all_tasks_blocked()
            applied[0] = 4  # no ring (it was lost): the writer looks again in a while
            await trio.sleep(VISIBLE_POLL_S * 3)
            assert answers == [2, 4]
            applied[0] = None  # no reader is following: nothing to wait for
            with trio.fail_after(1):
                await write(5)
        statistics = path.statistics()
    assert (answers, acknowledged) == ([2, 4, 6], [2, 4, 6])
    assert statistics.writes_answered == 3
    assert statistics.visible_wait_s > 0.0


def reader(reader_id: int) -> WorkerRole:
    return WorkerRole(kind="reader", id=reader_id, writer_socket="w.sock", ready_fd=3, readers=2)


def test_only_the_keeper_reader_snapshots_items_by_age_as_by_count(tmp_path: Path) -> None:
    """Every reader's actors see every event: the others' snapshots would be the same again."""
    config = ServeConfig(data=tmp_path, system=SystemConfig(item_snapshot_within=5_000))
    keeper, other = reader_config(config, reader(1)), reader_config(config, reader(2))
    assert keeper.system.item_snapshot_within == 5_000
    assert keeper.system.runtime.snapshot_every == config.system.runtime.snapshot_every
    assert other.system.item_snapshot_within == 0
    assert other.system.runtime.snapshot_every == NEVER
