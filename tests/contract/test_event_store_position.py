"""Event store contract: the upstream position (a cluster node's stream sequence) is stored
in the same write as its batch, only if the batch is, never moves back, and survives
reopening; so a node resumes exactly after what it stored."""

from __future__ import annotations

from pathlib import Path

import attrs
import trio

import actors
from actors import LmdbEventStore, StoreError
from actors.writer import StoreWriter
from tests.contract.events import interaction


def _with_position(store: actors.EventStore, events: list[actors.Event], position: int) -> object:
    prepared = attrs.evolve(store.prepare(events), position=position)
    (result,) = store.write([prepared])
    return result


def test_a_new_store_is_at_position_0(store: actors.EventStore) -> None:
    assert store.position() == 0


def test_position_is_stored_with_its_batch_and_never_moves_back(store: actors.EventStore) -> None:
    _with_position(store, [interaction("a")], 7)
    assert store.position() == 7
    # A batch of only duplicates still moves it (the message was taken in).
    _with_position(store, [interaction("a")], 9)
    assert store.position() == 9
    assert store.last_seq() == 1
    _with_position(store, [interaction("b")], 8)
    assert store.position() == 9
    # An empty batch moves it too (a message that held no event).
    _with_position(store, [], 12)
    assert store.position() == 12


def test_a_batch_that_fails_does_not_move_the_position(store: actors.EventStore) -> None:
    _with_position(store, [interaction("a")], 3)
    good = attrs.evolve(store.prepare([interaction("g")]), position=4)
    bad = attrs.evolve(store.prepare([interaction("x" * 300)]), position=5)
    results = store.write([good, bad])
    assert isinstance(results[1], StoreError)
    assert store.position() == 4


def test_position_survives_reopening(tmp_path: Path) -> None:
    with LmdbEventStore(tmp_path / "db") as first:
        _with_position(first, [interaction("a"), interaction("b")], 42)
    with LmdbEventStore(tmp_path / "db") as reopened:
        assert reopened.position() == 42
    # A reader opening a store written before positions existed sees 0.
    with LmdbEventStore(tmp_path / "old") as old:
        old.append([interaction("a")])
    with LmdbEventStore(tmp_path / "old", readonly=True) as reader:
        assert reader.position() == 0


async def test_the_writer_stores_the_highest_position_of_a_group(
    lmdb_store: LmdbEventStore,
) -> None:
    writer = StoreWriter(lmdb_store)
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)

        async def append(n: int) -> None:
            await writer.append([interaction(f"e{n}")], position=10 + n)

        async with trio.open_nursery() as appenders:
            for n in range(5):
                appenders.start_soon(append, n)
        await writer.aclose()
    assert lmdb_store.position() == 14
    assert lmdb_store.last_seq() == 5
