"""Event store contract: batches are atomic (a bad one stores nothing and takes no seq),
and an event id is stored once, even across batches, commits and reopening."""

from __future__ import annotations

from pathlib import Path

import pytest

import actors
from actors import (
    ITEM,
    MAX_KEY_BYTES,
    USER,
    Event,
    LmdbEventStore,
    Snapshot,
    StoredEvent,
    StoreError,
)
from tests.contract.events import SMALL_MAP, ids, interaction, seqs, upsert

BAD_IDS = pytest.mark.parametrize(
    "bad_id", ["x" * 300, "é" * 129, ""], ids=["300-bytes", "258-utf8-bytes", "empty"]
)

# -- atomic batches -------------------------------------------------------------


@BAD_IDS
def test_commit_stores_good_batch_and_reports_bad_batch_as_store_error(
    store: actors.EventStore, bad_id: str
) -> None:
    store.append([interaction("before")])
    good: list[Event] = [interaction("g1"), upsert("g2")]
    bad: list[Event] = [interaction("b1"), interaction(bad_id), interaction("b2")]

    results = store.commit([good, bad])

    assert len(results) == 2
    ok, failed = results
    assert isinstance(ok, actors.AppendResult)
    assert [s.seq for s in ok.stored] == [2, 3]
    assert isinstance(failed, StoreError)
    assert ids(store.read_all()) == ["before", "g1", "g2"]
    assert store.last_seq() == 3
    assert not store.contains("b1")
    assert not store.contains("b2")
    assert ids(store.read_stream(ITEM, "i1")) == ["before", "g1", "g2"]


@BAD_IDS
def test_bad_batch_first_in_commit_does_not_take_a_seq(
    store: actors.EventStore, bad_id: str
) -> None:
    bad = [interaction("b1"), interaction(bad_id)]
    good = [interaction("g1")]

    failed, ok = store.commit([bad, good])

    assert isinstance(failed, StoreError)
    assert isinstance(ok, actors.AppendResult)
    assert seqs(store.read_all()) == [1]
    assert ok.stored == (StoredEvent(seq=1, event=good[0]),)
    # The good id of the failed batch is free: resending it stores it.
    assert store.append([interaction("b1")]).stored[0].seq == 2


@BAD_IDS
def test_append_raises_store_error_and_stores_nothing_of_the_batch(
    store: actors.EventStore, bad_id: str
) -> None:
    store.append([interaction("before")])

    with pytest.raises(StoreError):
        store.append([interaction("b1"), interaction(bad_id)])

    assert store.last_seq() == 1
    assert not store.contains("b1")
    assert ids(store.read_all()) == ["before"]
    assert store.append([interaction("after")]).seq == 2


def test_entity_id_longer_than_limit_fails_the_batch(store: actors.EventStore) -> None:
    with pytest.raises(StoreError):
        store.append([interaction("ok"), interaction("e2", user="u" * (MAX_KEY_BYTES + 1))])

    assert store.last_seq() == 0
    assert not store.contains("ok")


def test_ids_of_exactly_the_limit_are_accepted(store: actors.EventStore) -> None:
    long_id = "x" * MAX_KEY_BYTES
    long_entity = "é" * (MAX_KEY_BYTES // 2)

    store.append([interaction(long_id, user=long_entity, item=long_entity)])

    assert store.contains(long_id)
    assert ids(store.read_stream(USER, long_entity)) == [long_id]
    assert ids(store.read_stream(ITEM, long_entity)) == [long_id]


def test_commit_of_a_single_bad_batch_reports_it_and_still_saves_snapshots(
    store: actors.EventStore,
) -> None:
    snap = Snapshot(kind=USER, entity_id="u1", seq=0, data=b"state")

    results = store.commit([[interaction("b1"), interaction("")]], [snap])

    assert len(results) == 1
    assert isinstance(results[0], StoreError)
    assert store.last_seq() == 0
    assert store.load_snapshot(USER, "u1") == snap


# -- duplicate ids ----------------------------------------------------------------


def test_resent_id_is_reported_as_duplicate_and_not_stored_again(
    store: actors.EventStore,
) -> None:
    store.append([interaction("a"), interaction("b")])

    result = store.append([interaction("b", ts=99.0), interaction("c")])

    assert result.duplicates == ("b",)
    assert ids(list(result.stored)) == ["c"]
    assert result.seq == 3
    assert ids(store.read_all()) == ["a", "b", "c"]
    # The first version of the event is the one kept.
    assert store.read_all()[1].event.ts == 1.0


def test_batch_of_only_duplicates_leaves_seq_unchanged(store: actors.EventStore) -> None:
    store.append([interaction("a"), interaction("b")])

    result = store.append([interaction("a"), interaction("b")])

    assert result.stored == ()
    assert result.duplicates == ("a", "b")
    assert result.seq == 2
    assert store.last_seq() == 2
    assert len(store.read_stream(USER, "u1")) == 2


def test_duplicate_within_one_batch_is_stored_once(store: actors.EventStore) -> None:
    result = store.append([interaction("a"), interaction("b"), interaction("a")])

    assert ids(list(result.stored)) == ["a", "b"]
    assert result.duplicates == ("a",)
    assert seqs(store.read_all()) == [1, 2]


def test_duplicate_across_batches_of_one_commit_is_stored_once(
    store: actors.EventStore,
) -> None:
    first, second = store.commit([[interaction("a")], [interaction("a"), interaction("b")]])

    assert isinstance(first, actors.AppendResult)
    assert isinstance(second, actors.AppendResult)
    assert ids(list(first.stored)) == ["a"]
    assert second.duplicates == ("a",)
    assert ids(list(second.stored)) == ["b"]
    assert ids(store.read_all()) == ["a", "b"]


def test_contains_knows_exactly_the_stored_ids(store: actors.EventStore) -> None:
    store.append([interaction("a")])

    assert store.contains("a")
    assert not store.contains("b")


def test_duplicates_are_detected_after_reopening(tmp_path: Path) -> None:
    path = tmp_path / "db"
    first = LmdbEventStore(path, map_size=SMALL_MAP)
    first.append([interaction("a"), interaction("b")])
    first.append([upsert("c")])
    first.close()

    reopened = LmdbEventStore(path, map_size=SMALL_MAP)
    try:
        assert reopened.last_seq() == 3
        result = reopened.append([interaction("b"), interaction("d"), upsert("c")])
        assert result.duplicates == ("b", "c")
        assert result.stored == (StoredEvent(seq=4, event=interaction("d")),)
        assert ids(reopened.read_all()) == ["a", "b", "c", "d"]
        assert ids(reopened.read_stream(ITEM, "i1")) == ["a", "b", "c", "d"]
    finally:
        reopened.close()


def test_last_seq_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "db"
    first = LmdbEventStore(path, map_size=SMALL_MAP)
    for n in range(5):
        first.append([interaction(f"e{n}")])
    first.close()

    reopened = LmdbEventStore(path)
    try:
        assert reopened.last_seq() == 5
        assert reopened.statistics().last_seq == 5
        assert reopened.append([interaction("next")]).stored[0].seq == 6
    finally:
        reopened.close()


def test_closed_store_refuses_reads_and_writes(store: actors.EventStore) -> None:
    store.append([interaction("a")])
    store.close()

    with pytest.raises(actors.StoreClosedError):
        store.append([interaction("b")])
    with pytest.raises(actors.StoreClosedError):
        store.read_all()
    with pytest.raises(actors.StoreClosedError):
        store.read_stream(USER, "u1")
