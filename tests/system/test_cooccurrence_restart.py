"""A restart reads the co-occurrence snapshot written at the last clean stop (or, after a
crash, the last one written while serving) and replays only the log after it, and serves
exactly what it served before (one process, and a node of worker processes, whose reader
1 writes the snapshot)."""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from actors.cooccurrence import CoOccurrence, decode_snapshot
from matchlight.server.engine import COOCCURRENCE_FILE

if TYPE_CHECKING:
    from matchlight.client import Client
    from tests.system.conftest import StartServer

pytestmark = pytest.mark.system

ITEMS = [f"item-{n}" for n in range(40)]
USERS = [f"user-{n}" for n in range(12)]
T0 = 1_700_000_000.0


def likes(rng: random.Random, first: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "id": f"like-{k}",
            "type": "like",
            "user": rng.choice(USERS),
            "item": rng.choice(ITEMS),
            "ts": T0 + k,
        }
        for k in range(first, first + n)
    ]


def answers(client: Client) -> list[list[tuple[str, float]]]:
    """Every user's list with its scores (the default surface blends co-occurrence in)."""
    return [
        [
            (entry["id"], entry["score"])
            for entry in client.call("recommend", {"user": user, "k": 8, "explain": True})["items"]
        ]
        for user in USERS
    ]


@pytest.mark.parametrize("workers", ["1", "3"])
def test_a_restart_replays_only_the_log_after_the_snapshot_and_answers_the_same(
    start_server: StartServer, workers: str
) -> None:
    rng = random.Random(11)
    server = start_server("--workers", workers)
    with server.client() as client:
        client.call("upsert_items", {"items": [{"id": i, "kind": "pro"} for i in ITEMS]})
        client.call("ingest", {"events": likes(rng, 0, 300)})
        before = answers(client)
    assert any(before)

    server.restart()  # SIGTERM: the snapshot is written as the node stops
    assert (server.data / COOCCURRENCE_FILE).exists()
    with server.client() as client:
        assert answers(client) == before
        client.call("ingest", {"events": likes(rng, 300, 50)})  # a tail after the snapshot
        tail = answers(client)
    assert "co-occurrence rebuilt from 0 events after seq 340" in server.stderr_text()

    server.kill9()  # no new snapshot: the next start replays the 50 events after it
    server.start()
    with server.client() as client:
        assert answers(client) == tail
    assert "co-occurrence rebuilt from 50 events after seq 340" in server.stderr_text()


def snapshot_seq(path: Path) -> int:
    return decode_snapshot(path.read_bytes(), CoOccurrence())[1] if path.exists() else 0


@pytest.mark.parametrize("workers", ["1", "3"])
def test_after_a_crash_a_start_replays_only_the_log_after_the_last_periodic_snapshot(
    start_server: StartServer, workers: str
) -> None:
    rng = random.Random(12)
    server = start_server("--workers", workers, "--cooccurrence-snapshot-every", "100")
    path = server.data / COOCCURRENCE_FILE
    with server.client() as client:
        client.call("upsert_items", {"items": [{"id": i, "kind": "pro"} for i in ITEMS]})
        client.call("ingest", {"events": likes(rng, 0, 300)})
        deadline = time.monotonic() + 30
        while snapshot_seq(path) != 340:  # written while serving, by a forked child
            assert time.monotonic() < deadline, "no co-occurrence snapshot while serving"
            time.sleep(0.05)
        client.call("ingest", {"events": likes(rng, 300, 50)})  # too few for another
        tail = answers(client)
    assert "co-occurrence snapshot at seq 340 written by child pid" in server.stderr_text()

    server.kill9()  # nothing written at the end: the start uses the one written while serving
    server.start()
    with server.client() as client:
        assert answers(client) == tail
    assert "co-occurrence rebuilt from 50 events after seq 340" in server.stderr_text()
