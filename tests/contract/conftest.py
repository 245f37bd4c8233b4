"""The event store contract, run against every implementation (LMDB and in memory).

In the spirit of Akka's JournalSpec and the ``eventsourcing`` recorder tests:
ordered replay with bounds, atomic batches, idempotency by event id,
snapshots, and snapshot + tail recovery equal to a full replay. The ``store``
fixture is each implementation in turn; tests that only make sense for a
durable store (reopening, map growth, the group-commit writer over LMDB) take
the ``lmdb_store`` fixture. Shared events and shorthands are in ``events.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import actors
from actors import LmdbEventStore, MemoryEventStore


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
    with LmdbEventStore(tmp_path / "db", map_size=1 << 20) as s:
        yield s
