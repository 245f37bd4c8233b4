"""Event store contract, for LMDB only: the map grows on demand, and the group-commit writer
shares commits between concurrent appenders."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

import actors
from actors import (
    ITEM,
    USER,
    Event,
    InteractionRecorded,
    LmdbEventStore,
    StoreError,
)
from tests.contract.events import SMALL_MAP, ids, interaction, seqs

# -- map growth (LMDB) -------------------------------------------------------------------


def test_map_grows_on_demand_and_keeps_everything_readable(tmp_path: Path) -> None:
    store = LmdbEventStore(tmp_path / "db", map_size=SMALL_MAP)
    try:
        initial_size = store.statistics().map_size
        padding = "p" * 1000
        batches = 80
        per_batch = 50  # 80 * 50 events * ~1.1 KB ≈ 4.4 MB
        for b in range(batches):
            store.append(
                [
                    InteractionRecorded(
                        id=f"e{b}-{n}",
                        type="view",
                        user=f"u{n % 17}",
                        item=f"i{b}",
                        ts=float(b),
                        props={"padding": padding},
                    )
                    for n in range(per_batch)
                ]
            )

        stats = store.statistics()
        assert stats.resizes > 0
        assert stats.map_size > initial_size
        assert stats.map_size >= 4 * 1024 * 1024
        assert store.last_seq() == batches * per_batch
        everything = store.read_all(limit=batches * per_batch + 1)
        assert seqs(everything) == list(range(1, batches * per_batch + 1))
        assert all(
            isinstance(s.event, InteractionRecorded) and s.event.props == {"padding": padding}
            for s in everything
        )
        assert len(store.read_stream(ITEM, "i79")) == per_batch
        assert store.contains("e0-0")
    finally:
        store.close()

    reopened = LmdbEventStore(tmp_path / "db", map_size=SMALL_MAP)
    try:
        assert reopened.last_seq() == batches * per_batch
        assert (
            len(reopened.read_stream(USER, "u3"))
            == sum(1 for n in range(per_batch) if n % 17 == 3) * batches
        )
    finally:
        reopened.close()


# -- group commit (LMDB) -------------------------------------------------------------------


async def test_concurrent_appenders_share_commits_and_get_a_gapless_log(
    lmdb_store: LmdbEventStore,
) -> None:
    writer = actors.StoreWriter(lmdb_store)
    tasks, rounds, per_batch = 8, 50, 3
    results: list[actors.AppendResult] = []

    async def appender(task: int) -> None:
        for r in range(rounds):
            batch = [
                interaction(f"t{task}-r{r}-{n}", user=f"u{task}", item=f"i{r % 5}")
                for n in range(per_batch)
            ]
            results.append(await writer.append(batch))

    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            async with trio.open_nursery() as appenders:
                for task in range(tasks):
                    appenders.start_soon(appender, task)
            await writer.aclose()
            await writer.wait_stopped()

    total = tasks * rounds * per_batch
    log = lmdb_store.read_all(limit=total + 1)
    assert seqs(log) == list(range(1, total + 1))
    expected_ids = {
        f"t{t}-r{r}-{n}" for t in range(tasks) for r in range(rounds) for n in range(per_batch)
    }
    assert len(ids(log)) == len(set(ids(log))) == total
    assert set(ids(log)) == expected_ids
    assert sorted(s.seq for res in results for s in res.stored) == list(range(1, total + 1))
    assert all(res.duplicates == () for res in results)
    # Each batch is contiguous in the log: batches are atomic units.
    for res in results:
        got = [s.seq for s in res.stored]
        assert got == list(range(got[0], got[0] + per_batch))
    # Per-task order is kept: a task's later batch comes later in the log.
    for t in range(tasks):
        stream = lmdb_store.read_stream(USER, f"u{t}")
        assert ids(stream) == [f"t{t}-r{r}-{n}" for r in range(rounds) for n in range(per_batch)]
    stats = writer.statistics()
    assert stats.batches == tasks * rounds
    assert stats.events == total
    assert stats.commits < tasks * rounds
    assert lmdb_store.statistics().commits == stats.commits


async def test_writer_reports_a_bad_batch_to_its_caller_only(lmdb_store: LmdbEventStore) -> None:
    writer = actors.StoreWriter(lmdb_store)
    outcomes: dict[str, object] = {}

    async def send(name: str, batch: Sequence[Event]) -> None:
        try:
            outcomes[name] = await writer.append(batch)
        except StoreError as exc:
            outcomes[name] = exc

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            async with trio.open_nursery() as senders:
                senders.start_soon(send, "good", [interaction("g1"), interaction("g2")])
                senders.start_soon(send, "bad", [interaction("b1"), interaction("x" * 300)])
            await send("dup", [interaction("g1")])
            await writer.aclose()
            await writer.wait_stopped()

    assert isinstance(outcomes["bad"], StoreError)
    assert isinstance(outcomes["good"], actors.AppendResult)
    assert isinstance(outcomes["dup"], actors.AppendResult)
    assert outcomes["dup"].duplicates == ("g1",)
    assert ids(lmdb_store.read_all()) == ["g1", "g2"]
    assert not lmdb_store.contains("b1")


async def test_writer_refuses_appends_after_close(lmdb_store: LmdbEventStore) -> None:
    writer = actors.StoreWriter(lmdb_store)
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            await writer.append([interaction("a")])
            await writer.aclose()
            await writer.wait_stopped()

    with pytest.raises(actors.SystemClosedError):
        await writer.append([interaction("b")])
    assert lmdb_store.last_seq() == 1
