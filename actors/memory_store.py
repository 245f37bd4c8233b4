"""An in-memory :class:`~actors.store.EventStore` for tests and tools.

It keeps the same contract as :class:`~actors.lmdb_store.LmdbEventStore` (the
contract suite in ``tests/contract`` runs against both) but nothing survives
the process.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence

from actors.errors import StoreClosedError, StoreError
from actors.events import Event, StoredEvent, streams_of
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


def _check_id(what: str, value: str) -> None:
    size = len(value.encode())
    if not size or size > MAX_KEY_BYTES:
        raise StoreError(f"{what} must be 1..{MAX_KEY_BYTES} utf-8 bytes, got {size}")


class MemoryEventStore(CommitMixin):
    def __init__(self) -> None:
        self._log: list[StoredEvent] = []
        self._ids: set[str] = set()
        self._streams: dict[tuple[str, str], list[int]] = {}
        self._snapshots: dict[tuple[str, str], Snapshot] = {}
        self._commits = 0
        self._closed = False
        self._corrupt_snapshots = 0
        self._position = 0

    def prepare(self, batch: Sequence[Event]) -> PreparedBatch:
        try:
            for event in batch:
                _check_id("event id", event.id)
                for _, entity_id in streams_of(event):
                    _check_id("entity id", entity_id)
        except StoreError as exc:
            return PreparedBatch(events=batch, error=exc)
        return PreparedBatch(events=batch)

    def write(
        self, batches: Sequence[PreparedBatch], snapshots: Sequence[Snapshot] = ()
    ) -> list[Written | StoreError]:
        self._check_open()
        results: list[Written | StoreError] = []
        for batch in batches:
            if batch.error is not None:
                results.append(batch.error)
                continue
            first = len(self._log) + 1
            kept: list[int] = []
            duplicates: list[int] = []
            for i, event in enumerate(batch.events):
                if event.id in self._ids:
                    duplicates.append(i)
                    continue
                self._ids.add(event.id)
                entry = StoredEvent(len(self._log) + 1, event)
                self._log.append(entry)
                for key in streams_of(event):
                    self._streams.setdefault(key, []).append(entry.seq)
                kept.append(i)
            if batch.position is not None:
                self._position = max(self._position, batch.position)
            results.append(
                Written(first_seq=first, kept=kept, duplicates=duplicates, last_seq=len(self._log))
            )
        for snap in snapshots:
            key = (snap.kind, snap.entity_id)
            current = self._snapshots.get(key)
            if current is None or current.seq < snap.seq:
                self._snapshots[key] = snap
        self._commits += 1
        return results

    def last_seq(self) -> int:
        return len(self._log)

    def head(self) -> int:
        return self.last_seq()

    def position(self) -> int:
        return self._position

    def contains(self, event_id: str) -> bool:
        self._check_open()
        return event_id in self._ids

    def read_all(self, after: int = 0, limit: int = 10_000) -> list[StoredEvent]:
        self._check_open()
        return self._log[after : after + max(limit, 0)]

    def read_stream(
        self, kind: str, entity_id: str, after: int = 0, until: int | None = None
    ) -> list[StoredEvent]:
        self._check_open()
        _check_id("entity id", entity_id)
        return [
            self._log[seq - 1]
            for seq in self._streams.get((kind, entity_id), ())
            if seq > after and (until is None or seq <= until)
        ]

    def load_snapshot(self, kind: str, entity_id: str) -> Snapshot | None:
        self._check_open()
        return self._snapshots.get((kind, entity_id))

    def load_entity(
        self, kind: str, entity_id: str, until: int | None = None
    ) -> tuple[Snapshot | None, list[StoredEvent]]:
        snapshot = self.load_snapshot(kind, entity_id)
        after = snapshot.seq if snapshot else 0
        return snapshot, self.read_stream(kind, entity_id, after=after, until=until)

    def iter_snapshots(self, kind: str) -> Iterator[Snapshot]:
        self._check_open()
        for key in sorted(k for k in self._snapshots if k[0] == kind):
            yield self._snapshots[key]

    def iter_streams(self, kind: str, *, snapshots: bool = False) -> Iterator[StreamInfo]:
        self._check_open()
        for (stream_kind, entity_id), seqs in list(self._streams.items()):
            if stream_kind == kind:
                snapshot = self._snapshots.get((kind, entity_id)) if snapshots else None
                yield StreamInfo(entity_id, seqs[0], seqs[-1], snapshot)

    def report_corrupt_snapshot(self, snapshot: Snapshot, reason: str) -> None:
        if self._snapshots.pop((snapshot.kind, snapshot.entity_id), None) is not None:
            self._corrupt_snapshots += 1
        log.error(
            "the snapshot of %s %r (seq %d) is corrupt: %s; ignored",
            snapshot.kind,
            snapshot.entity_id,
            snapshot.seq,
            reason,
        )

    def statistics(self) -> StoreStatistics:
        return StoreStatistics(
            last_seq=len(self._log),
            commits=self._commits,
            events_committed=len(self._log),
            map_size=0,
            resizes=0,
            corrupt_snapshots=self._corrupt_snapshots,
        )

    def _check_open(self) -> None:
        if self._closed:
            raise StoreClosedError("the event store is closed")

    def close(self) -> None:
        self._closed = True
