"""The event store contract: what the actor runtime needs from a log, and its values.

The log is append-only. Each event gets a global sequence number ``seq``
(1, 2, 3, … with no gaps) and is indexed under every entity stream it belongs
to; an entity's stream position *is* the global ``seq`` of its latest event,
so "read the stream from a version" means "events of this entity with
``seq > after``".

Two implementations keep this contract (``tests/contract`` runs one suite
against both): :class:`actors.lmdb_store.LmdbEventStore`, durable, and
:class:`actors.memory_store.MemoryEventStore`, for tests and tools.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Final, NamedTuple, Protocol

import attrs

from actors.errors import StoreError
from actors.events import Event, StoredEvent

MAX_KEY_BYTES: Final = 256
"""Longest event or entity id, in utf-8 bytes (LMDB keys are at most 511 bytes)."""


@attrs.frozen(kw_only=True)
class AppendResult:
    """What one atomic batch did: the events newly stored, the ids already known."""

    stored: tuple[StoredEvent, ...]
    duplicates: tuple[str, ...]
    #: The log's last sequence number once this batch was applied.
    seq: int


# A NamedTuple rather than attrs: a startup rebuild reads one per item.
class Snapshot(NamedTuple):
    """An actor's encoded state covering its stream up to and including ``seq``."""

    kind: str
    entity_id: str
    seq: int
    data: bytes


class StreamInfo(NamedTuple):
    """One entity stream: its id, the ``seq`` of its first and latest events, its snapshot."""

    entity_id: str
    first_seq: int
    last_seq: int
    #: The entity's latest snapshot, when asked for (``iter_streams(…, snapshots=True)``).
    snapshot: Snapshot | None = None


@attrs.frozen(kw_only=True)
class StoreStatistics:
    last_seq: int
    commits: int
    events_committed: int
    map_size: int
    resizes: int
    #: Snapshots found corrupt (checksum or decoding) and ignored; each entity once until
    #: a good snapshot replaces it.
    corrupt_snapshots: int = 0
    #: Events found corrupt when read (distinct ``seq``).
    corrupt_events: int = 0


@attrs.frozen(kw_only=True, eq=False)
class PreparedBatch:
    """A batch made ready for writing on the caller's thread.

    Encoding happens here, not on the writer thread, so that the thread that
    holds the write transaction runs almost no Python (it would otherwise
    contend for the GIL with the event loop). ``error`` is set if the batch
    can never be written (an id of the wrong size); such a batch is skipped.
    """

    events: Sequence[Event]
    ids: list[bytes] = attrs.field(factory=list)
    records: list[bytes] = attrs.field(factory=list)
    #: Per event, the stream keys it is indexed under.
    streams: list[tuple[bytes, ...]] = attrs.field(factory=list)
    error: StoreError | None = None
    #: Where in an upstream log these events come from (a cluster node's JetStream
    #: stream sequence): stored in the same transaction as the events, read back by
    #: :meth:`EventStore.position`, so a node resumes exactly after what it stored.
    position: int | None = None


@attrs.frozen(kw_only=True)
class Written:
    """What a write did to one batch: its stored events got ``first_seq``, ``first_seq + 1``, …"""

    first_seq: int
    #: Indices of the events stored, in order; ``None`` when all were.
    kept: list[int] | None
    #: Indices of the events whose id was already known.
    duplicates: list[int]
    last_seq: int


def to_result(prepared: PreparedBatch, written: Written) -> AppendResult:
    """The :class:`AppendResult` of a written batch (built on the caller's thread)."""
    events = prepared.events
    first = written.first_seq
    if written.kept is None:
        stored = tuple(map(StoredEvent, range(first, first + len(events)), events))
    else:
        stored = tuple(StoredEvent(first + j, events[i]) for j, i in enumerate(written.kept))
    return AppendResult(
        stored=stored,
        duplicates=tuple(events[i].id for i in written.duplicates),
        seq=written.last_seq,
    )


class EventStore(Protocol):
    """What the actor runtime needs from a log. Implemented on LMDB and in memory.

    Writes: :meth:`prepare` each batch (any thread), then :meth:`write` them
    together (the writer thread; durable on return), then :func:`to_result`.
    :meth:`commit` does all three.
    """

    def prepare(self, batch: Sequence[Event]) -> PreparedBatch: ...

    def write(
        self, batches: Sequence[PreparedBatch], snapshots: Sequence[Snapshot] = ()
    ) -> list[Written | StoreError]:
        """Append several batches, each atomically, and save snapshots; durable on return.

        A batch's events whose id is already stored (or appears earlier in the
        same write) are reported as duplicates and not stored. A batch that
        cannot be written is reported by a :class:`StoreError` in its place and
        leaves nothing behind; the other batches are unaffected. A snapshot
        never replaces a newer one of the same entity.
        """
        ...

    def commit(
        self, batches: Sequence[Sequence[Event]], snapshots: Sequence[Snapshot] = ()
    ) -> list[AppendResult | StoreError]:
        """:meth:`prepare`, :meth:`write` and :func:`to_result` in one call."""
        ...

    def append(self, batch: Sequence[Event]) -> AppendResult:
        """Append one atomic batch. Raises :class:`StoreError` if it cannot."""
        ...

    def last_seq(self) -> int: ...

    def position(self) -> int:
        """The highest upstream ``position`` of a batch written (0 if none): see
        :attr:`PreparedBatch.position`."""
        ...

    def head(self) -> int:
        """The last ``seq`` stored now, whoever wrote it (:meth:`last_seq` may be older in a
        process that only reads)."""
        ...

    def contains(self, event_id: str) -> bool: ...

    def read_all(self, after: int = 0, limit: int = 10_000) -> list[StoredEvent]:
        """Events with ``seq > after`` in order, at most ``limit``."""
        ...

    def read_stream(
        self, kind: str, entity_id: str, after: int = 0, until: int | None = None
    ) -> list[StoredEvent]:
        """An entity's events with ``after < seq <= until``, in order."""
        ...

    def load_snapshot(self, kind: str, entity_id: str) -> Snapshot | None: ...

    def load_entity(
        self, kind: str, entity_id: str, until: int | None = None
    ) -> tuple[Snapshot | None, list[StoredEvent]]:
        """An entity's latest snapshot and the events after it (up to ``until``), read
        consistently. The snapshot may cover more than ``until``."""
        ...

    def iter_snapshots(self, kind: str) -> Iterator[Snapshot]: ...

    def iter_streams(self, kind: str, *, snapshots: bool = False) -> Iterator[StreamInfo]:
        """Every stream of entities of ``kind`` (each entity once), in no promised order,
        with each entity's latest snapshot if ``snapshots`` (one pass: what a rebuild reads)."""
        ...

    def report_corrupt_snapshot(self, snapshot: Snapshot, reason: str) -> None:
        """Tell the store a snapshot it returned does not decode: logged (rate-limited) and
        counted; the next snapshot of that entity replaces it whatever its ``seq``."""
        ...

    def statistics(self) -> StoreStatistics: ...

    def close(self) -> None: ...


class CommitMixin:
    """``commit`` and ``append`` in terms of ``prepare`` and ``write``."""

    def prepare(self, batch: Sequence[Event]) -> PreparedBatch:
        raise NotImplementedError

    def write(
        self, batches: Sequence[PreparedBatch], snapshots: Sequence[Snapshot] = ()
    ) -> list[Written | StoreError]:
        raise NotImplementedError

    def commit(
        self, batches: Sequence[Sequence[Event]], snapshots: Sequence[Snapshot] = ()
    ) -> list[AppendResult | StoreError]:
        prepared = [self.prepare(batch) for batch in batches]
        return [
            w if isinstance(w, StoreError) else to_result(p, w)
            for p, w in zip(prepared, self.write(prepared, snapshots), strict=True)
        ]

    def append(self, batch: Sequence[Event]) -> AppendResult:
        (result,) = self.commit([batch])
        if isinstance(result, StoreError):
            raise result
        return result
