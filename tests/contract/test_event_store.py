"""The event store contract, run against every implementation (LMDB and in memory).

In the spirit of Akka's JournalSpec and the ``eventsourcing`` recorder tests:
ordered replay with bounds, atomic batches, idempotency by event id,
snapshots, and snapshot + tail recovery equal to a full replay. Tests that only
make sense for a durable store (reopening, map growth, the group-commit writer
over LMDB) take the ``lmdb_store`` fixture.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import trio

import actors
from actors import (
    ITEM,
    MAX_KEY_BYTES,
    USER,
    Event,
    InteractionRecorded,
    ItemRemoved,
    ItemUpserted,
    LmdbEventStore,
    MemoryEventStore,
    Snapshot,
    StoredEvent,
    StoreError,
)
from actors import item as item_domain
from actors import user as user_domain
from actors.codec import decode_state, encode_state
from actors.store import StreamInfo

SMALL_MAP = 64 * 1024
BAD_IDS = pytest.mark.parametrize(
    "bad_id", ["x" * 300, "é" * 129, ""], ids=["300-bytes", "258-utf8-bytes", "empty"]
)


def interaction(
    event_id: str,
    *,
    user: str = "u1",
    item: str = "i1",
    type: str = "like",
    ts: float = 1.0,
    weight: float = 1.0,
) -> InteractionRecorded:
    return InteractionRecorded(
        id=event_id,
        type=type,
        user=user,
        item=item,
        ts=ts,
        weight=weight,
        item_terms={"city": ("austin",)},
    )


def upsert(event_id: str, *, item: str = "i1", ts: float = 1.0, **changes: object) -> ItemUpserted:
    fields: dict[str, object] = {
        "kind": "pro",
        "terms": {"city": ("austin",)},
        "numbers": {"price": 10.0},
        "active": True,
    }
    fields.update(changes)
    return ItemUpserted(id=event_id, item=item, ts=ts, **fields)  # type: ignore[arg-type]


def removal(event_id: str, *, item: str = "i1", ts: float = 1.0) -> ItemRemoved:
    return ItemRemoved(id=event_id, item=item, ts=ts)


def ids(stored: list[StoredEvent]) -> list[str]:
    return [s.event.id for s in stored]


def seqs(stored: list[StoredEvent]) -> list[int]:
    return [s.seq for s in stored]


@pytest.fixture(params=["lmdb", "memory"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[actors.EventStore]:
    if request.param == "lmdb":
        s: actors.EventStore = LmdbEventStore(tmp_path / "db", map_size=1 << 20)
    else:
        s = MemoryEventStore()
    yield s
    s.close()


@pytest.fixture
def lmdb_store(tmp_path: Path) -> Iterator[LmdbEventStore]:
    s = LmdbEventStore(tmp_path / "db", map_size=1 << 20)
    yield s
    s.close()


def mixed_log() -> list[Event]:
    """Ten events over two users and two items, interleaved."""
    return [
        upsert("e1", item="i1"),
        interaction("e2", user="u1", item="i1"),
        interaction("e3", user="u2", item="i2"),
        upsert("e4", item="i2"),
        interaction("e5", user="u1", item="i2", type="click"),
        removal("e6", item="i1"),
        interaction("e7", user="u2", item="i1", type="view"),
        upsert("e8", item="i1", terms={"city": ("boston",)}),
        interaction("e9", user="u1", item="i1", type="save"),
        interaction("e10", user="u2", item="i2", type="dismiss"),
    ]


# -- ordered replay -----------------------------------------------------------


def test_empty_store_has_no_events(store: actors.EventStore) -> None:
    assert store.last_seq() == 0
    assert store.read_all() == []
    assert store.read_stream(USER, "u1") == []


def test_read_all_returns_events_in_seq_order_without_gaps(store: actors.EventStore) -> None:
    log = mixed_log()
    for start in range(0, len(log), 3):
        store.append(log[start : start + 3])

    stored = store.read_all()

    assert seqs(stored) == list(range(1, len(log) + 1))
    assert [s.event for s in stored] == log
    assert store.last_seq() == len(log)


def test_append_reports_stored_events_with_their_seqs(store: actors.EventStore) -> None:
    store.append([interaction("a")])
    result = store.append([interaction("b"), interaction("c")])

    assert [s.seq for s in result.stored] == [2, 3]
    assert [s.event.id for s in result.stored] == ["b", "c"]
    assert result.duplicates == ()
    assert result.seq == 3


@pytest.mark.parametrize(("after", "limit"), [(0, 3), (3, 4), (8, 100), (10, 5), (25, 5)])
def test_read_all_honours_after_and_limit(store: actors.EventStore, after: int, limit: int) -> None:
    store.append(mixed_log())

    stored = store.read_all(after=after, limit=limit)

    expected = list(range(after + 1, min(after + limit, 10) + 1))
    assert seqs(stored) == expected


def test_read_all_with_zero_limit_returns_nothing(store: actors.EventStore) -> None:
    store.append(mixed_log())

    assert store.read_all(limit=0) == []


def test_read_all_pages_through_the_whole_log(store: actors.EventStore) -> None:
    for n in range(25):
        store.append([interaction(f"e{n}")])

    pages: list[list[StoredEvent]] = []
    after = 0
    while page := store.read_all(after=after, limit=7):
        pages.append(page)
        after = page[-1].seq

    assert [len(p) for p in pages] == [7, 7, 7, 4]
    assert [s.seq for p in pages for s in p] == list(range(1, 26))


def test_read_stream_returns_only_that_entitys_events_in_order(
    store: actors.EventStore,
) -> None:
    store.append(mixed_log())

    assert ids(store.read_stream(ITEM, "i1")) == ["e1", "e2", "e6", "e7", "e8", "e9"]
    assert ids(store.read_stream(ITEM, "i2")) == ["e3", "e4", "e5", "e10"]
    assert ids(store.read_stream(USER, "u1")) == ["e2", "e5", "e9"]
    assert ids(store.read_stream(USER, "u2")) == ["e3", "e7", "e10"]
    assert seqs(store.read_stream(ITEM, "i1")) == [1, 2, 6, 7, 8, 9]


def test_an_interaction_belongs_to_its_user_and_its_item_stream(
    store: actors.EventStore,
) -> None:
    event = interaction("e1", user="alice", item="job-7")
    store.append([event])

    assert actors.streams_of(event) == ((USER, "alice"), (ITEM, "job-7"))
    assert store.read_stream(USER, "alice") == [StoredEvent(seq=1, event=event)]
    assert store.read_stream(ITEM, "job-7") == [StoredEvent(seq=1, event=event)]
    # The user and item namespaces are separate even for equal ids.
    assert store.read_stream(ITEM, "alice") == []
    assert store.read_stream(USER, "job-7") == []


@pytest.mark.parametrize(
    ("after", "until", "expected"),
    [
        (0, None, [1, 2, 6, 7, 8, 9]),
        (1, None, [2, 6, 7, 8, 9]),
        (2, 7, [6, 7]),
        (5, 6, [6]),
        (2, 5, []),
        (0, 0, []),
        (9, None, []),
        (0, 1, [1]),
        (3, 100, [6, 7, 8, 9]),
    ],
)
def test_read_stream_returns_events_after_exclusive_until_inclusive(
    store: actors.EventStore, after: int, until: int | None, expected: list[int]
) -> None:
    store.append(mixed_log())

    assert seqs(store.read_stream(ITEM, "i1", after=after, until=until)) == expected


def test_read_stream_of_unknown_entity_is_empty(store: actors.EventStore) -> None:
    store.append(mixed_log())

    assert store.read_stream(USER, "nobody") == []
    assert store.read_stream(ITEM, "nothing", after=3) == []
    # A prefix of a known id is a different entity.
    store.append([interaction("e11", user="u10")])
    assert ids(store.read_stream(USER, "u1")) == ["e2", "e5", "e9"]


def test_read_stream_handles_non_ascii_ids(store: actors.EventStore) -> None:
    store.append([interaction("ü-1", user="Zoë", item="café")])

    assert ids(store.read_stream(USER, "Zoë")) == ["ü-1"]
    assert ids(store.read_stream(ITEM, "café")) == ["ü-1"]
    assert store.contains("ü-1")


def test_events_round_trip_through_the_store_unchanged(store: actors.EventStore) -> None:
    events: list[Event] = [
        InteractionRecorded(
            id="x1",
            type="custom",
            user="u",
            item="i",
            ts=1_700_000_000.125,
            weight=-2.5,
            props={"source": "feed", "position": 3, "tags": ["a", "b"]},
            item_terms={"skills": ("go", "python"), "city": ()},
        ),
        ItemUpserted(
            id="x2",
            item="i",
            ts=2.0,
            kind=None,
            terms={"city": None, "skills": ("rust",)},
            numbers={"price": None, "rate": 1.5},
            active=None,
        ),
        ItemUpserted(id="x3", item="i", ts=3.0),
        ItemRemoved(id="x4", item="i", ts=4.0),
    ]
    store.append(events)

    assert [s.event for s in store.read_all()] == events


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


# -- snapshot + tail recovery ----------------------------------------------------------


def recovery_log() -> list[Event]:
    """Upserts, interactions (some out of time order) and a removal around item i1 and user u1."""
    events: list[Event] = [upsert("e0", item="i1", ts=100.0)]
    types = ["view", "click", "like", "save", "hire", "dismiss", "accept", "decline", "custom"]
    for n in range(1, 40):
        ts = 100.0 + (n * 7919 % 40) * 3600.0  # a permutation of hours: out of order
        if n == 13:
            events.append(
                upsert(
                    f"e{n}",
                    item="i1",
                    ts=ts,
                    terms={"city": None, "skills": ("go", "rust")},
                    numbers={"price": None, "rate": 2.5},
                    active=False,
                    kind=None,
                )
            )
        elif n == 25:
            events.append(removal(f"e{n}", item="i1", ts=ts))
        elif n == 27:
            events.append(upsert(f"e{n}", item="i1", ts=ts, terms={"city": ("dallas",)}))
        else:
            events.append(
                InteractionRecorded(
                    id=f"e{n}",
                    type=types[n % len(types)],
                    user="u1" if n % 3 else "u2",
                    item="i1" if n % 4 else "i2",
                    ts=ts,
                    weight=1.0 + n / 10,
                    item_terms={"city": ("austin", "boston")[: 1 + n % 2], "level": ("senior",)},
                )
            )
    return events


@pytest.mark.parametrize(
    ("kind", "entity_id", "fold", "initial"),
    [
        (ITEM, "i1", item_domain.fold, item_domain.initial),
        (USER, "u1", user_domain.fold, user_domain.initial),
    ],
)
def test_snapshot_plus_tail_equals_full_replay(
    store: actors.EventStore,
    kind: str,
    entity_id: str,
    fold: Callable[[Any, list[StoredEvent]], Any],
    initial: Callable[[str], Any],
) -> None:
    events = recovery_log()
    for start in range(0, len(events), 5):
        store.append(events[start : start + 5])
    stream = store.read_stream(kind, entity_id)
    full = fold(initial(entity_id), stream)
    assert full.seq == stream[-1].seq

    # Every cut point, including "before anything" and "after everything".
    for cut in [0, *seqs(stream)]:
        prefix = store.read_stream(kind, entity_id, until=cut)
        state = fold(initial(entity_id), prefix)
        snap = Snapshot(kind=kind, entity_id=entity_id, seq=cut, data=encode_state(state))
        store.commit([], [snap])
        loaded = store.load_snapshot(kind, entity_id)
        assert loaded is not None
        assert loaded.seq == cut
        restored = decode_state(loaded.data)
        assert restored == state

        recovered = fold(restored, store.read_stream(kind, entity_id, after=loaded.seq))

        assert recovered == full, f"cut at seq {cut}"


def test_recovering_through_the_actor_behaviours_equals_full_replay(
    store: actors.EventStore,
) -> None:
    events = recovery_log()
    store.append(events[:20])
    items = actors.item_actor.item_actor(store)
    users = actors.user_actor.user_actor(store)
    store.commit(
        [], [items.snapshot(items.recover("i1")[0]), users.snapshot(users.recover("u1")[0])]
    )
    store.append(events[20:])

    item_state, item_replayed = items.recover("i1")
    user_state, user_replayed = users.recover("u1")

    item_stream = store.read_stream(ITEM, "i1")
    user_stream = store.read_stream(USER, "u1")
    assert item_state == item_domain.fold(item_domain.initial("i1"), item_stream)
    assert user_state == user_domain.fold(user_domain.initial("u1"), user_stream)
    assert item_replayed == sum(1 for s in item_stream if s.seq > 20)
    assert user_replayed == sum(1 for s in user_stream if s.seq > 20)


def test_load_entity_without_snapshot_is_the_whole_stream(store: actors.EventStore) -> None:
    store.append(mixed_log())

    assert store.load_entity(ITEM, "i1") == (None, store.read_stream(ITEM, "i1"))
    assert store.load_entity(USER, "u2") == (None, store.read_stream(USER, "u2"))


def test_load_entity_is_the_latest_snapshot_and_the_events_after_it(
    store: actors.EventStore,
) -> None:
    store.append(mixed_log())
    snap = Snapshot(kind=ITEM, entity_id="i1", seq=6, data=b"as of 6")
    store.commit([], [snap])

    loaded, tail = store.load_entity(ITEM, "i1")

    assert loaded == snap
    assert seqs(tail) == [7, 8, 9]
    assert tail == store.read_stream(ITEM, "i1", after=6)


def test_load_entity_of_unknown_entity_is_empty(store: actors.EventStore) -> None:
    store.append(mixed_log())

    assert store.load_entity(USER, "nobody") == (None, [])


def test_load_entity_with_snapshot_at_the_head_has_no_tail(store: actors.EventStore) -> None:
    store.append(mixed_log())
    store.commit([], [Snapshot(kind=USER, entity_id="u1", seq=9, data=b"")])

    loaded, tail = store.load_entity(USER, "u1")

    assert loaded is not None
    assert loaded.seq == 9
    assert tail == []


def test_load_entity_until_stops_the_tail_there(store: actors.EventStore) -> None:
    store.append(mixed_log())
    store.commit([], [Snapshot(kind=ITEM, entity_id="i1", seq=6, data=b"as of 6")])

    _, up_to_8 = store.load_entity(ITEM, "i1", until=8)
    loaded, before_snapshot = store.load_entity(ITEM, "i1", until=4)

    assert up_to_8 == store.read_stream(ITEM, "i1", after=6, until=8)
    assert loaded is not None
    assert loaded.seq == 6  # the snapshot may cover more than `until`
    assert before_snapshot == []


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
        assert all(s.event.props == {"padding": padding} for s in everything)  # type: ignore[union-attr]
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
