"""The event store on LMDB: :class:`LmdbEventStore` (layout in :mod:`actors.lmdb_layout`).

A corrupt event read raises :class:`~actors.errors.CorruptRecordError` naming
its ``seq``; a corrupt snapshot is logged, counted and treated as absent (the
entity is rebuilt from its events), and the next snapshot of that entity
replaces it. An LMDB error while reading becomes a
:class:`~actors.errors.StoreError` naming the store. ``matchlight verify``
checks a whole store (:mod:`actors.integrity`).

All writes go through :meth:`LmdbEventStore.commit`, called from one writer
thread at a time (:class:`actors.writer.StoreWriter` does group commit); reads
may come from any thread. A commit is durable when it returns (``sync=True``).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import lmdb

from actors.closing import Closing
from actors.codec import decode_event
from actors.disk import describe_write_error, is_disk_full
from actors.errors import CodecError, CorruptRecordError, StoreClosedError, StoreError
from actors.events import Event, StoredEvent, streams_of
from actors.framing import seal, unseal
from actors.lmdb_layout import (
    KIND_BYTE,
    SEQ,
    check_size,
    entity_id_of,
    entity_key,
    open_snapshot,
    seal_event,
    stored_seq,
)
from actors.lmdb_map import GrowingMap
from actors.ratelimit import RateLimitedLog
from actors.store import (
    MAX_KEY_BYTES,
    CommitMixin,
    PreparedBatch,
    Snapshot,
    StoreStatistics,
    StreamInfo,
    Written,
)

log = logging.getLogger(__name__)
#: Corrupt snapshots are logged once per entity per minute.
_corrupt_log = RateLimitedLog(log)


#: In the ``meta`` table: the upstream position of the last batch written (see
#: :attr:`~actors.store.PreparedBatch.position`).
_POSITION = b"position"


def _bytes(value: object) -> bytes:
    return value  # type: ignore[return-value]


class RawView:
    """The stored records of every table as they are, read in one transaction (consistent).

    What ``matchlight verify`` walks (:mod:`actors.integrity`); keys and values are bytes.
    An LMDB error while walking raises :class:`StoreError`.
    """

    def __init__(self, store: LmdbEventStore, txn: lmdb.Transaction) -> None:
        self._store = store
        self._txn = txn

    def entries(self) -> dict[str, int]:
        """Entries per table (``streams`` counts every ``seq`` listed)."""
        s = self._store
        dbs = {"events": s._events, "ids": s._ids, "streams": s._streams, "snapshots": s._snapshots}
        with s._translated():
            return {name: self._txn.stat(db)["entries"] for name, db in dbs.items()}

    def _walk(self, db: Any) -> Iterator[tuple[bytes, bytes]]:
        with self._store._translated():
            cursor = self._txn.cursor(db=db)
            if cursor.first():
                # Read transactions use buffers=False: keys and values are bytes.
                yield from cursor.iternext(keys=True, values=True)  # type: ignore[misc]

    def events(self) -> Iterator[tuple[bytes, bytes]]:
        """``(seq key, record)`` in ``seq`` order."""
        return self._walk(self._store._events)

    def ids(self) -> Iterator[tuple[bytes, bytes]]:
        """``(event id, seq key)``."""
        return self._walk(self._store._ids)

    def streams(self) -> Iterator[tuple[bytes, bytes]]:
        """``(entity key, seq key)`` for every event of every stream, by key then ``seq``."""
        return self._walk(self._store._streams)

    def snapshots(self) -> Iterator[tuple[bytes, bytes]]:
        """``(entity key, snapshot value)``."""
        return self._walk(self._store._snapshots)


class LmdbEventStore(CommitMixin, Closing):
    """The event log in an LMDB environment at ``path`` (a directory, created if missing).

    ``map_size`` is the initial map size; it doubles whenever a commit finds
    the map full, so a store starts small and grows with its data.
    ``readonly`` opens an existing store for reading only (beside a server
    writing it: LMDB allows readers in other processes).
    """

    def __init__(
        self, path: str | os.PathLike[str], *, map_size: int = 8 << 20, readonly: bool = False
    ) -> None:
        """Open or create the store. Raises :class:`StoreError` if the directory is unusable."""
        self.path = Path(path)
        try:
            if not readonly:
                self.path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(
                str(self.path),
                map_size=map_size,
                max_dbs=8,
                sync=True,
                metasync=True,
                readahead=False,
                meminit=False,
                readonly=readonly,
                create=not readonly,
            )
        except (OSError, lmdb.Error) as exc:
            raise StoreError(f"cannot open the event store in {self.path}: {exc}") from exc
        try:
            self._events = self._env.open_db(b"events", create=not readonly)
            self._ids = self._env.open_db(b"ids", create=not readonly)
            self._streams = self._env.open_db(
                b"streams", dupsort=True, dupfixed=True, create=not readonly
            )
            self._snapshots = self._env.open_db(b"snapshots", create=not readonly)
            # Where this log stands in an upstream one (a cluster node's stream sequence).
            self._meta = self._open_optional(b"meta", readonly=readonly)
            with self._env.begin(db=self._events) as txn:
                cursor = txn.cursor()
                self._last_seq = SEQ.unpack(cursor.key())[0] if cursor.last() else 0
        except lmdb.Error as exc:
            self._env.close()
            raise self._read_error(exc) from exc
        # set_mapsize needs no transaction open in this process: readers hold
        # this lock for the length of their transaction, the resizer to resize.
        self._lock = threading.Lock()
        self._closed = False
        self._commits = 0
        self._events_committed = 0
        self._map = GrowingMap(self._env, "event store", lock=self._lock)
        #: (kind, entity id) -> its key in `streams`; used on the caller's thread only.
        self._stream_keys: dict[tuple[str, str], bytes] = {}
        #: Keys of snapshots found corrupt: the next snapshot of the entity replaces them.
        self._corrupt_keys: set[bytes] = set()
        self._corrupt_snapshots = 0
        self._corrupt_seqs: set[int] = set()

    def _open_optional(self, name: bytes, *, readonly: bool) -> Any:
        """A table created on demand: ``None`` when a read-only store has none yet."""
        try:
            return self._env.open_db(name, create=not readonly)
        except lmdb.NotFoundError:
            return None

    # -- writing --------------------------------------------------------------

    def prepare(self, batch: Sequence[Event]) -> PreparedBatch:
        ids: list[bytes] = []
        streams: list[tuple[bytes, ...]] = []
        keys = self._stream_keys
        if len(keys) > 1_000_000:
            keys.clear()  # a cache: bounded, refilled on demand
        try:
            for event in batch:
                id_key = event.id.encode()
                if not id_key or len(id_key) > MAX_KEY_BYTES:
                    check_size("event id", id_key)
                ids.append(id_key)
                entity_keys = []
                for entity in streams_of(event):
                    key = keys.get(entity)
                    if key is None:
                        key = keys[entity] = entity_key(*entity)
                    entity_keys.append(key)
                streams.append(tuple(entity_keys))
        except StoreError as exc:
            return PreparedBatch(events=batch, error=exc)
        return PreparedBatch(
            events=batch, ids=ids, records=list(map(seal_event, batch)), streams=streams
        )

    def write(
        self, batches: Sequence[PreparedBatch], snapshots: Sequence[Snapshot] = ()
    ) -> list[Written | StoreError]:
        self._check_open()
        try:
            return self._write_with_growth(batches, snapshots)
        except StoreError:
            if len(batches) <= 1:
                raise
        # One bad batch must not fail the others sharing its transaction:
        # write each on its own so only the culprit reports the error.
        results: list[Written | StoreError] = []
        for batch in batches:
            try:
                results.extend(self._write_with_growth([batch], ()))
            except StoreError as exc:
                results.append(exc)
        if snapshots:
            self._write_with_growth([], snapshots)
        return results

    def _write_with_growth(
        self, batches: Sequence[PreparedBatch], snapshots: Sequence[Snapshot]
    ) -> list[Written | StoreError]:
        try:
            return self._map.write(lambda: self._write(batches, snapshots))
        except lmdb.Error as exc:
            if is_disk_full(self.path, exc):
                reason = describe_write_error(self.path, exc)
                raise StoreError(f"{reason}: nothing written") from exc
            raise StoreError(f"the event log write failed, nothing written: {exc}") from exc

    def _write(
        self, batches: Sequence[PreparedBatch], snapshots: Sequence[Snapshot]
    ) -> list[Written | StoreError]:
        seq = self._last_seq
        results: list[Written | StoreError] = []
        seen_ids: set[bytes] = set()
        with self._env.begin(write=True) as txn:
            ids = txn.cursor(db=self._ids)
            log_ = txn.cursor(db=self._events)
            streams = txn.cursor(db=self._streams)
            for batch in batches:
                if batch.error is not None:
                    results.append(batch.error)
                    continue
                batch_ids = set(batch.ids)
                if (
                    len(batch_ids) == len(batch.ids)
                    and seen_ids.isdisjoint(batch_ids)
                    and not ids.getmulti(batch.ids)
                ):
                    written = _append_new(ids, log_, streams, batch, seq)
                else:
                    written = _append_checked(ids, log_, streams, batch, seq)
                results.append(written)
                seq = written.last_seq
                seen_ids |= batch_ids
            replaced = self._save_snapshots(txn, snapshots)
            positions = [
                b.position
                for b, r in zip(batches, results, strict=True)
                if b.position is not None and not isinstance(r, StoreError)
            ]
            if positions and max(positions) > self._position_in(txn):
                txn.put(_POSITION, SEQ.pack(max(positions)), db=self._meta)
        # Committed (and synced) once the with-block exits without error.
        if self._corrupt_keys:
            self._corrupt_keys.difference_update(replaced)
        self._commits += 1
        self._events_committed += seq - self._last_seq
        self._last_seq = seq
        return results

    def _save_snapshots(self, txn: lmdb.Transaction, snapshots: Sequence[Snapshot]) -> list[bytes]:
        """Store each snapshot unless a newer one is stored; the keys of those stored."""
        replaced: list[bytes] = []
        for snap in snapshots:
            key = entity_key(snap.kind, snap.entity_id)
            current = txn.get(key, db=self._snapshots)
            if current is None or self._replaceable(key, _bytes(current), snap.seq):
                txn.put(key, seal(SEQ.pack(snap.seq) + snap.data, key), db=self._snapshots)
                replaced.append(key)
        return replaced

    # -- reading --------------------------------------------------------------

    def _verify_command(self) -> str:
        data = self.path.parent if self.path.name == "events" else self.path
        return f"matchlight verify --data {data}"

    def _read_error(self, exc: lmdb.Error) -> StoreError:
        return StoreError(
            f"cannot read the event store in {self.path}; its file may be corrupt "
            f"(run `{self._verify_command()}`): {type(exc).__name__}: {exc}"
        )

    @contextlib.contextmanager
    def _translated(self) -> Iterator[None]:
        """LMDB errors in the block become a :class:`StoreError` naming the store."""
        try:
            yield
        except lmdb.Error as exc:
            raise self._read_error(exc) from exc

    def _corrupt_event(self, seq: int, exc: Exception) -> CorruptRecordError:
        self._corrupt_seqs.add(seq)
        return CorruptRecordError(
            f"event seq {seq} in {self.path} is corrupt: {exc}; "
            f"run `{self._verify_command()}` to check the whole store"
        )

    def _snapshot_from(self, kind: str, entity_id: str, key: bytes, raw: bytes) -> Snapshot | None:
        """The snapshot stored as ``raw``, or ``None`` (logged and counted) if it is corrupt."""
        try:
            seq, data = open_snapshot(key, raw)
        except CorruptRecordError as exc:
            self._found_corrupt_snapshot(kind, entity_id, key, stored_seq(raw), str(exc))
            return None
        return Snapshot(kind, entity_id, seq, data)

    def _found_corrupt_snapshot(
        self, kind: str, entity_id: str, key: bytes, seq: int | None, reason: str
    ) -> None:
        if key not in self._corrupt_keys:
            self._corrupt_keys.add(key)
            self._corrupt_snapshots += 1
        # One line per entity (per minute), and past 100 entities one line for all the others.
        limit_key = f"{kind}:{entity_id}" if self._corrupt_snapshots <= 100 else "many"
        _corrupt_log.error(
            f"snapshot:{self.path}:{limit_key}",
            "event store %s: the snapshot of %s %r (seq %s) is corrupt: %s; ignored, the %s "
            "is rebuilt from its events (run `%s`)",
            self.path,
            kind,
            entity_id,
            "unknown" if seq is None else seq,
            reason,
            kind,
            self._verify_command(),
        )

    def report_corrupt_snapshot(self, snapshot: Snapshot, reason: str) -> None:
        key = entity_key(snapshot.kind, snapshot.entity_id)
        self._found_corrupt_snapshot(snapshot.kind, snapshot.entity_id, key, snapshot.seq, reason)

    def _replaceable(self, key: bytes, current: bytes, seq: int) -> bool:
        """Whether a snapshot at ``seq`` may replace the stored ``current`` (older or corrupt).

        An older one is replaced on its stored ``seq`` alone (the writer thread would pay
        a CRC of every replaced snapshot). One that is not older is checked: an entity's
        snapshot is found corrupt when it is activated, and in a node of worker processes
        that happens in a reader, whose snapshot of the same ``seq`` must replace it here.
        """
        if key in self._corrupt_keys:
            return True
        stored = stored_seq(current)
        if stored is None or stored < seq:
            return True
        try:
            open_snapshot(key, current)
        except CorruptRecordError:
            return True
        return False

    # Read transactions use buffers=False, so every value read is `bytes`;
    # `_bytes` only tells the type checker so.
    def _read_txn(self) -> lmdb.Transaction:
        self._check_open()
        try:
            return self._env.begin(buffers=False)
        except lmdb.MapResizedError:
            # Another process (the server, while `train` reads) grew the map.
            self._env.set_mapsize(0)
            return self._env.begin(buffers=False)

    @contextlib.contextmanager
    def raw_view(self) -> Iterator[RawView]:
        """Every table's stored records, read in one transaction for the block (see
        :class:`RawView`). Holds the store's read lock meanwhile: for tools, not a server."""
        with self._lock, self._translated(), self._read_txn() as txn:
            yield RawView(self, txn)

    def last_seq(self) -> int:
        return self._last_seq

    def head(self) -> int:
        """The log's last ``seq`` as stored now, including what another process wrote since
        this store opened (a reader worker follows the writer's log this way).

        Raises:
            StoreError: the store cannot be read.
        """
        try:
            with self._lock, self._read_txn() as txn:
                cursor = txn.cursor(db=self._events)
                seq = SEQ.unpack(_bytes(cursor.key()))[0] if cursor.last() else 0
        except lmdb.Error as exc:
            raise self._read_error(exc) from exc
        if seq > self._last_seq:
            self._last_seq = seq
        return seq

    def position(self) -> int:
        try:
            with self._lock, self._read_txn() as txn:
                return self._position_in(txn)
        except lmdb.Error as exc:
            raise self._read_error(exc) from exc

    def _position_in(self, txn: lmdb.Transaction) -> int:
        raw = None if self._meta is None else txn.get(_POSITION, db=self._meta)
        return 0 if raw is None else int(SEQ.unpack(raw)[0])

    def contains(self, event_id: str) -> bool:
        try:
            with self._lock, self._read_txn() as txn:
                return txn.get(event_id.encode(), db=self._ids) is not None
        except lmdb.Error as exc:
            raise self._read_error(exc) from exc

    def read_all(self, after: int = 0, limit: int = 10_000) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        if limit <= 0:
            return out
        seq = after
        try:
            with self._lock, self._read_txn() as txn:
                cursor = txn.cursor(db=self._events)
                if not cursor.set_range(SEQ.pack(after + 1)):
                    return out
                for key, value in cursor:
                    seq = SEQ.unpack(key)[0]
                    out.append(StoredEvent(seq, decode_event(unseal(_bytes(value)))))
                    if len(out) >= limit:
                        break
        except lmdb.Error as exc:
            raise self._read_error(exc) from exc
        except CodecError as exc:
            raise self._corrupt_event(seq, exc) from exc
        return out

    def read_stream(
        self, kind: str, entity_id: str, after: int = 0, until: int | None = None
    ) -> list[StoredEvent]:
        key = entity_key(kind, entity_id)
        try:
            with self._lock, self._read_txn() as txn:
                return self._stream_in(txn, key, after, until)
        except lmdb.Error as exc:
            raise self._read_error(exc) from exc

    def _stream_in(
        self, txn: lmdb.Transaction, key: bytes, after: int, until: int | None
    ) -> list[StoredEvent]:
        out: list[StoredEvent] = []
        cursor = txn.cursor(db=self._streams)
        if not cursor.set_range_dup(key, SEQ.pack(after + 1)):
            return out
        get_event = txn.get
        events = self._events
        seq = after
        try:
            for seq_key in cursor.iternext_dup(keys=False, values=True):
                seq = SEQ.unpack(seq_key)[0]
                if until is not None and seq > until:
                    break
                value = get_event(seq_key, db=events)
                if value is None:
                    raise CorruptRecordError("its stream lists it but the log does not hold it")
                out.append(StoredEvent(seq, decode_event(unseal(_bytes(value)))))
        except CodecError as exc:
            raise self._corrupt_event(seq, exc) from exc
        return out

    def load_entity(
        self, kind: str, entity_id: str, until: int | None = None
    ) -> tuple[Snapshot | None, list[StoredEvent]]:
        key = entity_key(kind, entity_id)
        try:
            with self._lock, self._read_txn() as txn:
                raw = txn.get(key, db=self._snapshots)
                snapshot = None
                if raw is not None:
                    snapshot = self._snapshot_from(kind, entity_id, key, _bytes(raw))
                after = snapshot.seq if snapshot else 0
                if until is not None and until <= after:
                    return snapshot, []
                return snapshot, self._stream_in(txn, key, after, until)
        except lmdb.Error as exc:
            raise self._read_error(exc) from exc

    def load_snapshot(self, kind: str, entity_id: str) -> Snapshot | None:
        key = entity_key(kind, entity_id)
        try:
            with self._lock, self._read_txn() as txn:
                raw = txn.get(key, db=self._snapshots)
        except lmdb.Error as exc:
            raise self._read_error(exc) from exc
        return None if raw is None else self._snapshot_from(kind, entity_id, key, _bytes(raw))

    def iter_snapshots(self, kind: str) -> Iterator[Snapshot]:
        kind_byte = KIND_BYTE[kind]
        start = kind_byte
        while True:
            page: list[tuple[bytes, bytes]] = []
            with self._lock, self._translated(), self._read_txn() as txn:
                cursor = txn.cursor(db=self._snapshots)
                if not cursor.set_range(start):
                    return
                for raw_key, raw in cursor:
                    key = _bytes(raw_key)
                    if not key.startswith(kind_byte):
                        break
                    page.append((key, _bytes(raw)))
                    if len(page) >= 10_000:
                        break
            if not page:
                return
            for key, raw in page:
                snapshot = self._snapshot_from(kind, entity_id_of(key), key, raw)
                if snapshot is not None:
                    yield snapshot
            # The smallest key after the page's last one.
            start = page[-1][0] + b"\x00"

    def iter_streams(self, kind: str, *, snapshots: bool = False) -> Iterator[StreamInfo]:
        # Three walks driven by LMDB's own iterators (a rebuild reads every item):
        # first duplicates forwards, last duplicates backwards, snapshots forwards.
        prefix = KIND_BYTE[kind]
        after = bytes([prefix[0] + 1])
        with self._lock, self._translated(), self._read_txn() as txn:
            cursor = txn.cursor(db=self._streams)
            firsts: list[tuple[bytes, bytes]] = []
            # Read transactions use buffers=False: keys and values are bytes.
            pairs: Iterator[tuple[bytes, bytes]]
            if cursor.set_range(prefix):
                pairs = cursor.iternext_nodup(keys=True, values=True)  # type: ignore[assignment]
                for key, value in pairs:
                    if not key.startswith(prefix):
                        break
                    firsts.append((key, value))
            lasts: dict[bytes, bytes] = {}
            if firsts and (cursor.prev() if cursor.set_range(after) else cursor.last()):
                pairs = cursor.iterprev_nodup(keys=True, values=True)  # type: ignore[assignment]
                for key, value in pairs:
                    if not key.startswith(prefix):
                        break
                    lasts[key] = value
            raw_snapshots: dict[bytes, bytes] = {}
            if snapshots and firsts:
                snapshot_cursor = txn.cursor(db=self._snapshots)
                if snapshot_cursor.set_range(prefix):
                    pairs = snapshot_cursor.iternext(keys=True, values=True)  # type: ignore[assignment]
                    for key, value in pairs:
                        if not key.startswith(prefix):
                            break
                        raw_snapshots[key] = value
        unpack_seq = SEQ.unpack_from
        snapshot_from = self._snapshot_from
        for key, first in firsts:
            entity_id = key[3:].decode()
            snapshot = None
            raw = raw_snapshots.get(key)
            if raw is not None:
                snapshot = snapshot_from(kind, entity_id, key, raw)
            yield StreamInfo(entity_id, unpack_seq(first)[0], unpack_seq(lasts[key])[0], snapshot)

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            last_seq=self._last_seq,
            commits=self._commits,
            events_committed=self._events_committed,
            map_size=self._env.info()["map_size"] if not self._closed else 0,
            resizes=self._map.resizes,
            corrupt_snapshots=self._corrupt_snapshots,
            corrupt_events=len(self._corrupt_seqs),
        )

    # -- lifecycle ------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the event store is closed")

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with self._lock:
                self._env.close()


def _append_new(
    ids: lmdb.Cursor, log_: lmdb.Cursor, streams: lmdb.Cursor, batch: PreparedBatch, seq: int
) -> Written:
    """Append a batch whose ids are all new after ``seq``: a few C-level bulk puts, no
    Python loop (the common case)."""
    n = len(batch.ids)
    seq_keys = list(map(SEQ.pack, range(seq + 1, seq + n + 1)))
    ids.putmulti(zip(batch.ids, seq_keys, strict=True))
    log_.putmulti(zip(seq_keys, batch.records, strict=True), append=True)
    streams.putmulti(
        [
            (key, seq_key)
            for keys, seq_key in zip(batch.streams, seq_keys, strict=True)
            for key in keys
        ]
    )
    return Written(first_seq=seq + 1, kept=None, duplicates=[], last_seq=seq + n)


def _append_checked(
    ids: lmdb.Cursor, log_: lmdb.Cursor, streams: lmdb.Cursor, batch: PreparedBatch, seq: int
) -> Written:
    """Append a batch after ``seq`` event by event, skipping the ids already stored."""
    first = seq + 1
    kept: list[int] = []
    duplicates: list[int] = []
    for i, id_key in enumerate(batch.ids):
        seq_key = SEQ.pack(seq + 1)
        if not ids.put(id_key, seq_key, overwrite=False):
            duplicates.append(i)
            continue
        seq += 1
        kept.append(i)
        log_.put(seq_key, batch.records[i], append=True)
        for key in batch.streams[i]:
            streams.put(key, seq_key)
    return Written(first_seq=first, kept=kept, duplicates=duplicates, last_seq=seq)
