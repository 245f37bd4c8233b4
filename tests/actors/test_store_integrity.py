"""Damaged records in the LMDB event store: checksums, what each read path does, and verify.

Records are damaged the way a disk or a careless copy does it: one bit of a
stored value flipped, a value rewritten under another key. The store is
closed while its file is changed (one process may not open an LMDB
environment twice), then reopened.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import lmdb
import pytest
import trio

from actors import (
    ITEM,
    USER,
    ActorError,
    CorruptRecordError,
    Event,
    InteractionRecorded,
    LmdbEventStore,
    Snapshot,
    StoreError,
    framing,
    open_actor_system,
)
from actors import item as item_domain
from actors import user as user_domain
from actors.codec import encode_state
from actors.integrity import check_event_store
from actors.item_actor import item_actor
from actors.item_index import rebuild_index
from actors.lmdb_layout import entity_key
from actors.user_actor import user_actor
from index import parse
from tests.contract.events import recovery_log, upsert

SEQ = struct.Struct(">Q")


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "events"


def interaction(n: int, *, user: str, item: str, type: str = "like") -> InteractionRecorded:
    return InteractionRecorded(id=f"x{n}", type=type, user=user, item=item, ts=float(n))


def two_items() -> list[Event]:
    """i1 and i2 (both searchable), liked by u1 and u2: seqs 1..12."""
    events: list[Event] = [upsert("up1", item="i1"), upsert("up2", item="i2")]
    for n in range(10):
        events.append(interaction(n, user=f"u{1 + n % 2}", item=f"i{1 + n % 2}"))
    return events


def written(path: Path, events: list[Event], snapshots: tuple[str, ...] = ()) -> None:
    """A store at ``path`` holding ``events`` and the current snapshots of the items named."""
    store = LmdbEventStore(path)
    try:
        store.append(events)
        behavior = item_actor(store)
        store.commit([], [behavior.snapshot(behavior.recover(i)[0]) for i in snapshots])
    finally:
        store.close()


def damage(path: Path, table: bytes, key: bytes, change: Callable[[bytearray], Any]) -> None:
    """Rewrite the value stored under ``key`` in ``table`` with ``change`` applied."""
    env = lmdb.open(str(path), max_dbs=8)
    try:
        db = env.open_db(table)
        with env.begin(write=True, db=db) as txn:
            stored = txn.get(key)
            assert stored is not None
            value = bytearray(stored)
            change(value)
            txn.put(key, bytes(value))
    finally:
        env.close()


def flip(offset: int, bit: int = 0) -> Callable[[bytearray], None]:
    def change(value: bytearray) -> None:
        value[offset] ^= 1 << bit

    return change


def put_raw(path: Path, table: bytes, key: bytes, value: bytes) -> None:
    env = lmdb.open(str(path), max_dbs=8)
    try:
        with env.begin(write=True, db=env.open_db(table)) as txn:
            txn.put(key, value)
    finally:
        env.close()


@pytest.fixture
def reopen(path: Path) -> Iterator[Callable[[], LmdbEventStore]]:
    opened: list[LmdbEventStore] = []

    def open_() -> LmdbEventStore:
        store = LmdbEventStore(path)
        opened.append(store)
        return store

    yield open_
    for store in opened:
        store.close()


# -- checksums ----------------------------------------------------------------------------


def test_events_and_snapshots_are_stored_sealed_and_read_back(
    path: Path, reopen: Callable[[], LmdbEventStore]
) -> None:
    written(path, two_items(), snapshots=("i1",))
    env = lmdb.open(str(path), max_dbs=8, readonly=True)
    try:
        events_db = env.open_db(b"events", create=False)
        snapshots_db = env.open_db(b"snapshots", create=False)
        with env.begin() as txn:
            events = list(txn.cursor(db=events_db))
            key = entity_key(ITEM, "i1")
            snapshot = txn.get(key, db=snapshots_db)
    finally:
        env.close()
    assert len(events) == 12
    assert all(framing.is_sealed(value) for _, value in events)
    assert snapshot is not None
    assert framing.is_sealed(snapshot)
    framing.unseal(snapshot, key)  # the key is covered

    store = reopen()
    assert [stored.event for stored in store.read_all()] == two_items()
    loaded = store.load_snapshot(ITEM, "i1")
    assert loaded is not None
    assert loaded.seq == 11


def test_records_written_before_checksums_are_still_read(
    path: Path, reopen: Callable[[], LmdbEventStore]
) -> None:
    events = recovery_log()
    written(path, events, snapshots=("i1",))
    store = reopen()
    expected = (store.read_all(), store.load_entity(ITEM, "i1"), store.load_entity(USER, "u1"))
    store.close()
    # Rewrite every record the way the store wrote it before checksums existed.
    env = lmdb.open(str(path), max_dbs=8)
    with env.begin(write=True) as txn:
        for table in (b"events", b"snapshots"):
            db = env.open_db(table, txn=txn)
            for key, value in list(txn.cursor(db=db)):
                txn.put(
                    key, bytes(framing.unseal(value, b"" if table == b"events" else key)), db=db
                )
    env.close()

    again = reopen()
    assert (again.read_all(), again.load_entity(ITEM, "i1"), again.load_entity(USER, "u1")) == (
        expected
    )
    problems: list[tuple[str, str]] = []
    counts = check_event_store(again, lambda where, what: problems.append((where, what)))
    assert problems == []
    assert counts["events_unsealed"] == counts["events"] == len(events)
    assert counts["snapshots_unsealed"] == counts["snapshots"] == 1


# -- corrupt snapshots --------------------------------------------------------------------


def test_a_corrupt_snapshot_is_absent_to_every_read_path_and_the_state_is_the_fold(
    path: Path, reopen: Callable[[], LmdbEventStore], caplog: pytest.LogCaptureFixture
) -> None:
    events = recovery_log()
    written(path, events[:30], snapshots=("i1",))
    store = reopen()
    store.append(events[30:])
    good, tail = store.load_entity(ITEM, "i1")
    assert good is not None
    assert tail
    store.close()
    # One bit of the state, near the end of the value (inside the msgpack payload).
    damage(path, b"snapshots", entity_key(ITEM, "i1"), flip(-3))

    store = reopen()
    full = store.read_stream(ITEM, "i1")
    assert store.load_snapshot(ITEM, "i1") is None
    assert store.load_entity(ITEM, "i1") == (None, full)
    assert [s.entity_id for s in store.iter_snapshots(ITEM)] == []
    (stream,) = [s for s in store.iter_streams(ITEM, snapshots=True) if s.entity_id == "i1"]
    assert stream.snapshot is None
    state, replayed = item_actor(store).recover("i1")
    assert state == item_domain.fold(item_domain.initial("i1"), full)
    assert replayed == len(full)
    # Counted once however often it was read; logged naming the entity and its seq.
    assert store.statistics().corrupt_snapshots == 1
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert lines
    assert f"the snapshot of item 'i1' (seq {good.seq}) is corrupt" in lines[0]
    assert "checksum mismatch" in lines[0]


def test_a_corrupt_snapshot_is_replaced_by_the_next_one_whatever_seq_it_claims(
    path: Path, reopen: Callable[[], LmdbEventStore]
) -> None:
    written(path, two_items(), snapshots=("i1",))
    # The seq's top bit: the damaged snapshot claims to be far newer than anything.
    damage(path, b"snapshots", entity_key(ITEM, "i1"), flip(framing.HEADER_SIZE, 7))

    store = reopen()
    assert store.load_snapshot(ITEM, "i1") is None
    behavior = item_actor(store)
    state = behavior.recover("i1")[0]
    store.commit([], [behavior.snapshot(state)])

    replaced = store.load_snapshot(ITEM, "i1")
    assert replaced is not None
    assert replaced.seq == state.seq == 11


def test_a_snapshot_that_does_not_decode_to_its_entity_is_reported_and_replaced(
    path: Path, reopen: Callable[[], LmdbEventStore]
) -> None:
    written(path, two_items())
    store = reopen()
    i2 = item_actor(store).recover("i2")[0]
    # Checksums are fine: written through the store, but holding the wrong things.
    store.commit(
        [],
        [
            Snapshot(kind=ITEM, entity_id="i1", seq=11, data=encode_state(i2)),
            Snapshot(kind=USER, entity_id="u1", seq=11, data=b"\x93\xa4user\x01\x80junk"),
        ],
    )

    items, users = item_actor(store), user_actor(store)
    assert items.recover("i1")[0] == item_domain.fold(
        item_domain.initial("i1"), store.read_stream(ITEM, "i1")
    )
    assert users.recover("u1")[0] == user_domain.fold(
        user_domain.initial("u1"), store.read_stream(USER, "u1")
    )
    assert store.statistics().corrupt_snapshots == 2
    # Reported snapshots are replaced by the next one even at an older seq.
    store.commit([], [items.snapshot(item_domain.initial("i1"))])
    replaced = store.load_snapshot(ITEM, "i1")
    assert replaced is not None
    assert replaced.seq == 0


def test_a_corrupt_snapshot_leaves_the_rebuilt_index_as_the_events_make_it(
    path: Path, reopen: Callable[[], LmdbEventStore]
) -> None:
    written(path, two_items(), snapshots=("i1", "i2"))
    first = reopen()
    clean = rebuild_index(first)
    first.close()
    damage(path, b"snapshots", entity_key(ITEM, "i1"), flip(-2, 3))

    store = reopen()
    rebuilt = rebuild_index(store)

    assert rebuilt.postings() == clean.postings()
    five = parse({"range": ["like", 5, 5]})
    assert rebuilt.search(five, limit=10).ids == ["i1", "i2"]
    assert store.statistics().corrupt_snapshots == 1


# -- corrupt events -----------------------------------------------------------------------


def test_a_corrupt_event_raises_naming_its_seq_and_other_entities_still_read(
    path: Path, reopen: Callable[[], LmdbEventStore]
) -> None:
    written(path, two_items())
    # seq 5 is x2: u1 likes i1. One bit in the middle of its record.
    damage(path, b"events", SEQ.pack(5), lambda value: flip(len(value) // 2)(value))

    store = reopen()
    for read in (
        lambda: store.read_all(),
        lambda: store.read_all(after=4, limit=1),
        lambda: store.read_stream(ITEM, "i1"),
        lambda: store.load_entity(USER, "u1"),
    ):
        with pytest.raises(CorruptRecordError, match=r"event seq 5 in .* is corrupt") as caught:
            read()
        assert "checksum mismatch" in str(caught.value)
        assert f"matchlight verify --data {path.parent}" in str(caught.value)
    assert [s.seq for s in store.read_all(limit=4)] == [1, 2, 3, 4]
    assert len(store.read_stream(ITEM, "i1", after=5)) == 3
    assert len(store.read_stream(ITEM, "i2")) == 6
    assert store.load_entity(USER, "u2")[1] == store.read_stream(USER, "u2")
    assert store.statistics().corrupt_events == 1


def test_the_index_rebuild_leaves_out_an_item_whose_stream_is_corrupt(
    path: Path, reopen: Callable[[], LmdbEventStore], caplog: pytest.LogCaptureFixture
) -> None:
    written(path, two_items())
    damage(path, b"events", SEQ.pack(5), flip(20))

    store = reopen()
    index = rebuild_index(store)

    assert index.search(parse({"all": []}), limit=10).ids == ["i2"]
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert errors[0].startswith("item index: item 'i1' left out: event seq 5")
    assert store.statistics().corrupt_events == 1


async def test_requests_for_a_corrupt_entity_fail_clearly_and_are_logged_once(
    path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    written(path, two_items())
    damage(path, b"events", SEQ.pack(5), flip(20))
    store = LmdbEventStore(path)
    try:
        with trio.fail_after(10):
            async with open_actor_system(store) as system:
                for _ in range(5):
                    with pytest.raises(ActorError, match="item 'i1' failed: event seq 5"):
                        await system.get_item("i1")
                assert (await system.get_item("i2")).counters == {"like": 5}
    finally:
        store.close()
    runtime = [r for r in caplog.records if r.name == "actors.runtime"]
    assert len(runtime) == 1
    assert runtime[0].exc_info is None  # a known failure: one line, no traceback
    assert "event seq 5" in runtime[0].getMessage()


def test_lmdb_errors_on_read_become_store_errors_naming_the_store(
    path: Path, reopen: Callable[[], LmdbEventStore]
) -> None:
    written(path, two_items())
    store = reopen()

    class Damaged:
        """A read transaction of a file LMDB finds damaged."""

        def __enter__(self) -> Damaged:
            return self

        def __exit__(self, *exc: object) -> None:
            return None

        def __getattr__(self, name: str) -> Any:
            def fail(*args: Any, **kwargs: Any) -> Any:
                raise lmdb.CorruptedError("mdb_get: MDB_CORRUPTED: Located page was wrong type")

            return fail

    real_env = store._env
    store._env = type("Env", (), {"begin": lambda self, **kw: Damaged()})()
    try:
        for read in (
            lambda: store.read_all(),
            lambda: store.read_stream(ITEM, "i1"),
            lambda: store.load_entity(ITEM, "i1"),
            lambda: store.load_snapshot(ITEM, "i1"),
            lambda: list(store.iter_streams(ITEM)),
            lambda: list(store.iter_snapshots(ITEM)),
            lambda: store.contains("x1"),
        ):
            with pytest.raises(StoreError, match="may be corrupt") as caught:
                read()
            assert str(path) in str(caught.value)
            assert "CorruptedError" in str(caught.value)
    finally:
        store._env = real_env


# -- verify -------------------------------------------------------------------------------


def problems_of(store: LmdbEventStore) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    check_event_store(store, lambda where, what: found.append((where, what)))
    return found


def test_verify_finds_nothing_wrong_in_a_clean_store_and_counts_everything(
    path: Path, reopen: Callable[[], LmdbEventStore]
) -> None:
    written(path, recovery_log(), snapshots=("i1", "i2"))
    found: list[tuple[str, str]] = []

    counts = check_event_store(reopen(), lambda where, what: found.append((where, what)))

    assert found == []
    assert counts["events"] == counts["ids"] == 40
    assert counts["snapshots"] == 2
    assert counts["events_unsealed"] == counts["snapshots_unsealed"] == 0
    interactions = sum(1 for e in recovery_log() if isinstance(e, InteractionRecorded))
    assert counts["stream_entries"] == 40 + interactions


@pytest.mark.parametrize(
    ("damage_it", "expected"),
    [
        (
            lambda path: damage(path, b"events", SEQ.pack(5), flip(20)),
            [("event seq 5", "checksum mismatch")],
        ),
        (
            lambda path: damage(path, b"snapshots", entity_key(ITEM, "i1"), flip(-3)),
            [("snapshot of item 'i1'", "checksum mismatch")],
        ),
        (
            # A record copied under another seq: its checksum holds, the ids table disagrees.
            lambda path: put_raw(
                path, b"events", SEQ.pack(6), _value(path, b"events", SEQ.pack(5))
            ),
            [("ids 'x3'", "names seq 6, whose event has another id")],
        ),
        (
            # A snapshot copied under another entity's key: its checksum covers the key.
            lambda path: put_raw(
                path,
                b"snapshots",
                entity_key(ITEM, "i2"),
                _value(path, b"snapshots", entity_key(ITEM, "i1")),
            ),
            [("snapshot of item 'i2'", "checksum mismatch")],
        ),
        (
            lambda path: put_raw(path, b"streams", entity_key(USER, "u2"), SEQ.pack(5)),
            [("streams user 'u2'", "lists seq 5, which is not one of its events")],
        ),
        (
            lambda path: _delete(path, b"events", SEQ.pack(7)),
            [("events 7..7", "missing: the log has a gap")],
        ),
    ],
    ids=["event", "snapshot", "event-moved", "snapshot-moved", "stream", "gap"],
)
def test_verify_names_each_damaged_record(
    path: Path,
    reopen: Callable[[], LmdbEventStore],
    damage_it: Callable[[Path], None],
    expected: list[tuple[str, str]],
) -> None:
    written(path, two_items(), snapshots=("i1", "i2"))
    damage_it(path)

    found = problems_of(reopen())

    for where, what in expected:
        assert any(w == where and what in text for w, text in found), found


def _value(path: Path, table: bytes, key: bytes) -> bytes:
    env = lmdb.open(str(path), max_dbs=8, readonly=True)
    try:
        db = env.open_db(table, create=False)
        with env.begin(db=db) as txn:
            value = txn.get(key)
            assert value is not None
            return value
    finally:
        env.close()


def _delete(path: Path, table: bytes, key: bytes) -> None:
    env = lmdb.open(str(path), max_dbs=8)
    try:
        with env.begin(write=True, db=env.open_db(table)) as txn:
            txn.delete(key)
    finally:
        env.close()
