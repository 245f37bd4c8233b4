"""Event store contract: snapshots (saved, replaced only by newer ones, iterated by kind)
and the listing of streams."""

from __future__ import annotations

import itertools

import pytest

import actors
from actors import (
    ITEM,
    USER,
    Snapshot,
)
from actors.store import StreamInfo
from tests.contract.events import interaction, mixed_log, upsert

# -- snapshots ----------------------------------------------------------------------


def test_snapshot_is_saved_and_loaded(store: actors.EventStore) -> None:
    snap = Snapshot(kind=USER, entity_id="u1", seq=7, data=b"\x00state\xff")

    assert store.commit([], [snap]) == []

    assert store.load_snapshot(USER, "u1") == snap
    assert store.load_snapshot(ITEM, "u1") is None
    assert store.load_snapshot(USER, "u2") is None


def test_newer_snapshot_replaces_older(store: actors.EventStore) -> None:
    store.commit([], [Snapshot(kind=ITEM, entity_id="i1", seq=3, data=b"three")])
    store.commit([], [Snapshot(kind=ITEM, entity_id="i1", seq=9, data=b"nine")])

    loaded = store.load_snapshot(ITEM, "i1")

    assert loaded is not None
    assert (loaded.seq, loaded.data) == (9, b"nine")


@pytest.mark.parametrize("older_seq", [0, 4, 8])
def test_older_snapshot_never_replaces_newer(store: actors.EventStore, older_seq: int) -> None:
    newer = Snapshot(kind=ITEM, entity_id="i1", seq=9, data=b"nine")
    store.commit([], [newer])

    store.commit([], [Snapshot(kind=ITEM, entity_id="i1", seq=older_seq, data=b"old")])

    assert store.load_snapshot(ITEM, "i1") == newer


def test_snapshot_rides_along_with_a_batch(store: actors.EventStore) -> None:
    snap = Snapshot(kind=USER, entity_id="u1", seq=1, data=b"s")

    (result,) = store.commit([[interaction("a")]], [snap])

    assert isinstance(result, actors.AppendResult)
    assert result.seq == 1
    assert store.load_snapshot(USER, "u1") == snap


@pytest.mark.parametrize("count", [3, 10_000, 10_001, 20_005])
def test_iter_snapshots_yields_every_snapshot_of_the_kind_only(
    store: actors.EventStore, count: int
) -> None:
    users = [Snapshot(kind=USER, entity_id=f"u{n}", seq=n, data=b"u%d" % n) for n in range(count)]
    # Item ids sort before and after the user ids to catch a pager running into them.
    items = [Snapshot(kind=ITEM, entity_id=name, seq=1, data=b"i") for name in ("a", "u5", "zzzz")]
    store.commit([], items + users)

    # islice: a pager that fails to advance must fail the test, not hang it.
    found = list(itertools.islice(store.iter_snapshots(USER), count + 1))

    assert len(found) == count
    assert sorted(found, key=lambda s: s.seq) == users
    assert sorted(s.entity_id for s in store.iter_snapshots(ITEM)) == ["a", "u5", "zzzz"]


def test_iter_snapshots_of_a_kind_without_snapshots_is_empty(store: actors.EventStore) -> None:
    store.commit([], [Snapshot(kind=USER, entity_id="u1", seq=1, data=b"")])

    assert list(store.iter_snapshots(ITEM)) == []


# -- stream listing ----------------------------------------------------------------------


def test_iter_streams_lists_each_entity_once_with_its_first_and_latest_seq(
    store: actors.EventStore,
) -> None:
    store.append(mixed_log())

    items = sorted(store.iter_streams(ITEM))
    users = sorted(store.iter_streams(USER))

    assert items == [StreamInfo("i1", 1, 9), StreamInfo("i2", 3, 10)]
    assert users == [StreamInfo("u1", 2, 9), StreamInfo("u2", 3, 10)]


@pytest.mark.parametrize("count", [10_000, 10_003])
def test_iter_streams_pages_through_many_entities(store: actors.EventStore, count: int) -> None:
    """Listing crosses page boundaries without losing, repeating or leaking into other kinds."""
    store.append([upsert(f"e{n}", item=f"item-{n}") for n in range(count)])
    store.append([interaction("last", user="a-user", item="item-0")])

    found = list(itertools.islice(store.iter_streams(ITEM), count + 1))

    assert len(found) == count
    by_id = {info.entity_id: info for info in found}
    assert by_id["item-0"] == StreamInfo("item-0", 1, count + 1)
    assert by_id[f"item-{count - 1}"] == StreamInfo(f"item-{count - 1}", count, count)
    assert list(store.iter_streams(USER)) == [StreamInfo("a-user", count + 1, count + 1)]


def test_iter_streams_can_bring_each_entitys_latest_snapshot(store: actors.EventStore) -> None:
    store.append(mixed_log())
    snap = Snapshot(kind=ITEM, entity_id="i2", seq=5, data=b"state")
    store.commit([], [snap, Snapshot(kind=USER, entity_id="i1", seq=9, data=b"a user")])

    items = sorted(store.iter_streams(ITEM, snapshots=True))

    assert items == [StreamInfo("i1", 1, 9, None), StreamInfo("i2", 3, 10, snap)]
    assert all(info.snapshot is None for info in store.iter_streams(ITEM))


def test_iter_streams_of_an_empty_store_is_empty(store: actors.EventStore) -> None:
    assert list(store.iter_streams(ITEM)) == []
