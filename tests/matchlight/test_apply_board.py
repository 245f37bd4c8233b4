"""The board on which readers post how far they have applied the log, and the writer holding
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
from actors.write_path import open_write_path
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
    store = MemoryEventStore()
    applied: list[int | None] = [0]
    config = SystemConfig(max_apply_lag=3)
    async with open_write_path(store, config, slowest=lambda: applied[0]) as path:
        await path.upsert_items([UpsertItem(event_id="up", item="a", ts=0.0)])
        await path.ingest([like(1), like(2)])
        await path.ingest([like(3)])  # the log was at 3, 3 behind (not more): not held
        done: list[int] = []

        async def write(n: int) -> None:
            await path.ingest([like(n)])
            done.append(n)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, 4)  # the log is at 4, 4 behind: held
            await trio.sleep(0.05)
            assert done == []
            assert store.last_seq() == 4  # held before it was decided and appended
            applied[0] = 1
            await trio.sleep(0.05)
            assert done == [4]
            applied[0] = None  # no reader is following: nothing to wait for
            nursery.start_soon(write, 5)
        statistics = path.statistics()
    assert done == [4, 5]
    assert statistics.writes_held == 1
    assert statistics.held_s >= 0.04


async def test_max_apply_lag_zero_never_holds_a_write() -> None:
    store = MemoryEventStore()
    config = SystemConfig(max_apply_lag=0)
    async with open_write_path(store, config, slowest=lambda: 0) as path:
        with trio.fail_after(5):
            for n in range(5):
                await path.ingest([like(n)])
        assert path.statistics().writes_held == 0
    assert store.last_seq() == 5


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
