"""``matchlight bench ingest``: durable, acknowledged ingest throughput over RPC, with peers.

It starts a real ``matchlight serve`` on a temporary data dir, loads a catalogue,
then for each client count runs that many separate client *processes*, each
with its own connection, sending ``ingest`` batches with up to ``depth``
requests in flight (pipelining). An event counts once the server acknowledged
it, which it does only after the LMDB commit (with fsync) and after the actors
applied it. Clients encode their requests before the clock starts so the
figure measures the server, not the load generator.

For scale, the same run measures two storage-only peers in-process on the
same disk: LMDB with one synced commit per event (what durability costs
without group commit) and SQLite in WAL mode with ``synchronous=FULL``, one
transaction per 1,000-event batch, inserting into an indexed events table.
They only store bytes; Matchlight's figure includes validation, the actors'
state updates and the RPC round trip.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack

from matchlight.bench.harness import IngestConnection, pack_ingest, start_server, zipf_cum
from matchlight.cli.argtypes import positive_int
from matchlight.client import Client
from matchlight.server.node import default_workers

EVENT_TYPES = ("view", "view", "view", "click", "like", "save", "dismiss", "hire")
#: Zipf exponent of user activity and item popularity.
ZIPF_S = 1.1
#: Users and items each client draws from (Zipf-distributed) to make its events.
POOL = 200_000
#: Items per ``upsert_items`` call when loading the catalogue.
ITEM_BATCH = 5000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``matchlight bench ingest``."""
    parser.add_argument("--events", type=positive_int, default=200_000, help="events per run")
    parser.add_argument("--batch", type=positive_int, default=1000, help="events per ingest call")
    parser.add_argument("--clients", default="1,4", help="comma-separated client process counts")
    parser.add_argument("--users", type=positive_int, default=100_000, help="distinct users")
    parser.add_argument("--items", type=positive_int, default=20_000, help="distinct items")
    parser.add_argument(
        "--depth",
        type=positive_int,
        default=2,
        help="ingest calls each client keeps in flight",
    )
    parser.add_argument(
        "--workers",
        default=f"1,{default_workers()}",
        help="comma-separated `serve --workers` counts: each gets a fresh server",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def _zipf_pool(n: int, rng: random.Random) -> list[int]:
    """:data:`POOL` ranks of ``0..n-1`` drawn Zipf-like: a client picks its events from it."""
    return rng.choices(range(n), cum_weights=zipf_cum(n, ZIPF_S), k=POOL)


def _requests(run: str, index: int, events: int, batch: int, users: int, items: int) -> list[bytes]:
    """Client ``index``'s ``ingest`` calls of run ``run``, encoded."""
    rng = random.Random(f"{run}-{index}")
    user_pool = _zipf_pool(users, rng)
    item_pool = _zipf_pool(items, rng)
    ts = 1_700_000_000.0
    payloads = []
    for b in range(0, events, batch):
        evs = [
            {
                "id": f"{run}-{index}-{i}",
                "type": rng.choice(EVENT_TYPES),
                "user": f"u{rng.choice(user_pool)}",
                "item": f"i{rng.choice(item_pool)}",
                "ts": ts + i * 0.01,
            }
            for i in range(b, min(b + batch, events))
        ]
        payloads.append(evs)
    return [pack_ingest(k + 1, evs) for k, evs in enumerate(payloads)]


def _client(
    port: int,
    run: str,
    index: int,
    events: int,
    batch: int,
    depth: int,
    users: int,
    items: int,
    start: Any,
    results: Any,
) -> None:
    """A client process: encode its calls, say ready, then send them ``depth`` in flight.

    Puts ``("ready", index)``, then ``(index, seconds, accepted)``.
    """
    packed = _requests(run, index, events, batch, users, items)
    connection = IngestConnection("127.0.0.1", port)
    results.put(("ready", index))
    start.wait()
    t0 = time.perf_counter()
    accepted, _ = connection.pipeline(iter(packed), depth)
    results.put((index, time.perf_counter() - t0, accepted))
    connection.close()


def drive_clients(
    ports: Sequence[int],
    clients: int,
    events: int,
    batch: int,
    depth: int,
    users: int,
    items: int,
    run: str,
) -> tuple[int, float, float]:
    """Run ``clients`` client processes (client ``i`` on ``ports[i % len(ports)]``), each
    sending its share of ``events``; the clock starts once every one has encoded its
    requests. Returns the events acknowledged, when the clock started
    (``time.perf_counter``) and the seconds until the last client finished."""
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    results = ctx.Queue()
    per_client = events // clients
    procs = [
        ctx.Process(
            target=_client,
            args=(
                ports[i % len(ports)],
                run,
                i,
                per_client,
                batch,
                depth,
                users,
                items,
                start,
                results,
            ),
        )
        for i in range(clients)
    ]
    for p in procs:
        p.start()
    for _ in procs:
        assert results.get(timeout=600)[0] == "ready"
    t0 = time.perf_counter()
    start.set()
    done = [results.get(timeout=1200) for _ in procs]
    wall = time.perf_counter() - t0
    for p in procs:
        p.join()
    return sum(a for _, _, a in done), t0, wall


def run_ingest(
    port: int, clients: int, events: int, batch: int, depth: int, users: int, items: int, run: str
) -> dict[str, Any]:
    with Client("127.0.0.1", port) as admin:
        before = admin.call("stats")
        accepted, _, wall = drive_clients([port], clients, events, batch, depth, users, items, run)
        after = admin.call("stats")
        # How long the first read after the burst waits for the projections to catch up
        # (reader workers apply the log after the writer acknowledged it).
        t1 = time.perf_counter()
        admin.call("search", {"filter": {"range": ["price", None, None]}, "limit": 1})
        caught_up = time.perf_counter() - t1
    commits = after["commits"] - before["commits"]
    committed = after["events_committed"] - before["events_committed"]
    batches = after["batches_committed"] - before["batches_committed"]
    return {
        "clients": clients,
        "events": accepted,
        "seconds": round(wall, 3),
        "events_per_s": round(accepted / wall),
        "commits": commits,
        "events_per_commit": round(committed / commits, 1) if commits else 0,
        "batches_per_commit": round(batches / commits, 2) if commits else 0,
        "log_seq_delta": after["log_seq"] - before["log_seq"],
        "first_read_s": round(caught_up, 3),
    }


def _peer_events(n: int) -> list[tuple[str, str, str, str, float, bytes]]:
    rng = random.Random(3)
    return [
        (
            f"p-{i}",
            rng.choice(EVENT_TYPES),
            f"u{rng.randrange(100_000)}",
            f"i{rng.randrange(20_000)}",
            1_700_000_000.0 + i,
            msgpack.packb({"props": {}}),
        )
        for i in range(n)
    ]


def peer_lmdb_commit_per_event(tmp: Path, n: int = 2_000) -> float:
    """Events/s storing each event in its own synced LMDB transaction."""
    import lmdb

    env = lmdb.open(str(tmp / "peer-lmdb"), map_size=1 << 30, sync=True)
    events = _peer_events(n)
    t0 = time.perf_counter()
    for e in events:
        with env.begin(write=True) as txn:
            txn.put(e[0].encode(), msgpack.packb(e))
    rate = n / (time.perf_counter() - t0)
    env.close()
    return rate


def peer_sqlite(tmp: Path, n: int = 50_000, batch: int = 1000) -> float:
    """Events/s storing batches in SQLite (WAL, synchronous=FULL, indexed by user and item)."""
    import sqlite3

    db = sqlite3.connect(tmp / "peer.sqlite", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute(
        "CREATE TABLE events (seq INTEGER PRIMARY KEY, id TEXT UNIQUE, type TEXT, user TEXT,"
        " item TEXT, ts REAL, props BLOB)"
    )
    db.execute("CREATE INDEX events_user ON events (user, seq)")
    db.execute("CREATE INDEX events_item ON events (item, seq)")
    events = _peer_events(n)
    t0 = time.perf_counter()
    for k in range(0, n, batch):
        db.execute("BEGIN")
        db.executemany(
            "INSERT OR IGNORE INTO events (id, type, user, item, ts, props) VALUES (?,?,?,?,?,?)",
            events[k : k + batch],
        )
        db.execute("COMMIT")
    rate = n / (time.perf_counter() - t0)
    db.close()
    return rate


def main(args: argparse.Namespace) -> int:
    """Run every client count against one server, then the peers; print the table."""
    clients = [int(c) for c in args.clients.split(",")]
    rows = []
    with tempfile.TemporaryDirectory(prefix="matchlight-bench-") as tmp:
        for workers in (int(w) for w in args.workers.split(",")):
            print(f"  --workers {workers}", file=sys.stderr, flush=True)
            data = Path(tmp) / f"data-{workers}"
            server = start_server(data, "--workers", str(workers), log_level="WARNING")
            try:
                _load_catalogue(server.port, args.items)
                rows += [{"workers": workers, **row} for row in _runs(server.port, clients, args)]
            finally:
                server.stop()
        print("  peers: LMDB commit per event, SQLite batches", file=sys.stderr, flush=True)
        peers = {
            "lmdb_commit_per_event": round(peer_lmdb_commit_per_event(Path(tmp))),
            "sqlite_wal_full_batch_1000": round(peer_sqlite(Path(tmp))),
        }
    print_report(args, rows, peers)
    for r in rows:
        if r["log_seq_delta"] != r["events"]:
            print(
                f"ERROR: {r['clients']} clients: log grew by {r['log_seq_delta']}, "
                f"acknowledged {r['events']}",
                file=sys.stderr,
            )
            return 1
    if args.json:
        Path(args.json).write_text(json.dumps({"ingest": rows, "peers": peers}, indent=2))
    return 0


def _load_catalogue(port: int, items: int) -> None:
    """Upsert ``items`` pros (a category, a city, a price) in calls of :data:`ITEM_BATCH`."""
    with Client("127.0.0.1", port) as c:
        rng = random.Random(7)
        for k in range(0, items, ITEM_BATCH):
            c.call(
                "upsert_items",
                {
                    "items": [
                        {
                            "id": f"i{i}",
                            "kind": "pro",
                            "terms": {
                                "category": f"cat{rng.randrange(40)}",
                                "city": f"city{rng.randrange(50)}",
                            },
                            "numbers": {"price": float(rng.randrange(20, 500))},
                        }
                        for i in range(k, min(k + ITEM_BATCH, items))
                    ]
                },
            )


def _runs(port: int, clients: list[int], args: argparse.Namespace) -> list[dict[str, Any]]:
    """One :func:`run_ingest` row per client count, each reported on stderr as it ends."""
    rows = []
    for run, n in enumerate(clients):
        # Ids unique per run, so repeating a client count still sends new events.
        row = run_ingest(
            port, n, args.events, args.batch, args.depth, args.users, args.items, f"r{run}"
        )
        rows.append(row)
        print(f"  {n} client(s): {row['events_per_s']:,} events/s", file=sys.stderr, flush=True)
    return rows


def print_report(
    args: argparse.Namespace, rows: list[dict[str, Any]], peers: dict[str, int]
) -> None:
    """The runs' table, then the peers' with the best run's ratio to each, on stdout."""
    print(
        f"\nmatchlight bench ingest — {args.events:,} events per run, {args.batch} per call, "
        f"{args.depth} calls in flight per client, {args.users:,} users, {args.items:,} items, "
        f"{os.cpu_count()} cores"
    )
    print(
        f"{'workers':>8} {'clients':>8} {'events/s':>10} {'seconds':>8} {'commits':>8} "
        f"{'events/commit':>14} {'calls/commit':>13} {'first read, s':>14}"
    )
    for r in rows:
        print(
            f"{r['workers']:>8} {r['clients']:>8} {r['events_per_s']:>10,} {r['seconds']:>8} "
            f"{r['commits']:>8} {r['events_per_commit']:>14} {r['batches_per_commit']:>13} "
            f"{r['first_read_s']:>14}"
        )
    best = max(r["events_per_s"] for r in rows)
    print("\nstorage-only peers on the same disk, same run (no validation, no actors, no RPC):")
    print(f"{'peer':>40} {'events/s':>10} {'Matchlight best / peer':>24}")
    for name, label in (
        ("lmdb_commit_per_event", "LMDB, one synced commit per event"),
        ("sqlite_wal_full_batch_1000", "SQLite WAL sync=FULL, 1,000 per txn"),
    ):
        print(f"{label:>40} {peers[name]:>10,} {best / peers[name]:>23.2f}x")
