"""``matchlight bench cluster``: cluster mode on this machine against the embedded mode.

For the embedded mode (``serve --workers 1``, the LMDB log) and then for a cluster of
1, 2 and 3 Matchlight nodes over a fresh 3-server NATS JetStream cluster (stream with 3
replicas, every write fsynced), each on fresh data directories:

1. load a catalogue, then ingest from client *processes* (each to its own node, round
   robin) and count acknowledged events/s: in cluster mode an event is acknowledged once
   the stream's replicas stored it and the node that took it applied it;
2. wait until every node has applied everything: the rate over the whole phase is what
   the cluster absorbs;
3. time ``recommend`` through each node (users of every partition, so through a node
   that does not serve them the call is forwarded), sequentially: p50 and p99;
4. read each process's CPU time (``/proc``), so the cost per event of a Matchlight node
   and of the NATS servers is measured, not guessed: first idle for a few seconds (what
   heartbeats and lease reads cost), then each phase's CPU less what idling as long
   costs, per event or per call.

From the per-node costs it prints a scaling table for 10 and 100 nodes. That table is
arithmetic on the measurements, with its assumptions printed beside it: every node
applies every event to its items (so ingest does not grow with nodes), users' state and
reads are partitioned (they do).

Everything runs on this one machine (2 cores here): with 3 NATS servers, N nodes and the
clients sharing them, the absolute figures are what a laptop gives, the per-event costs
are what carries over.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from matchlight.bench.harness import RunningServer, latency_summary, process_stat, start_server
from matchlight.bench.ingest import ITEM_BATCH, drive_clients
from matchlight.cli.argtypes import positive_int
from matchlight.client import Client
from matchlight.cluster.nats_servers import NatsCluster

PARTITIONS = 64
#: Seconds the idle CPU of the nodes and of NATS is measured over.
IDLE_S = 5.0
_TICK = os.sysconf("SC_CLK_TCK")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``matchlight bench cluster``."""
    parser.add_argument("--events", type=positive_int, default=100_000, help="events ingested")
    parser.add_argument("--items", type=positive_int, default=10_000, help="catalogue items")
    parser.add_argument("--users", type=positive_int, default=50_000, help="distinct users")
    parser.add_argument("--batch", type=positive_int, default=500, help="events per ingest call")
    parser.add_argument("--clients", type=positive_int, default=4, help="ingest client processes")
    parser.add_argument("--nodes", default="1,2,3", help="comma-separated node counts")
    parser.add_argument(
        "--recommends", type=positive_int, default=1000, help="recommend calls per node"
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def main(args: argparse.Namespace) -> int:
    counts = [int(n) for n in args.nodes.split(",")]
    results: dict[str, Any] = {"config": vars(args) | {"func": None}, "runs": []}
    print(
        f"cluster bench: {args.events:,} events from {args.clients} clients, "
        f"{args.items:,} items, {args.recommends:,} recommend calls per node"
    )
    for nodes in [0, *counts]:
        label = "embedded" if nodes == 0 else f"{nodes} node{'s' if nodes > 1 else ''}"
        print(f"\n== {label} ==", flush=True)
        with tempfile.TemporaryDirectory(prefix="ml-bench-cluster-") as tmp:
            run = _run(Path(tmp), nodes, args)
        run["mode"] = label
        results["runs"].append(run)
        _print_run(run)
    results["scaling"] = scaling(results["runs"])
    _print_scaling(results["scaling"])
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


def _run(root: Path, nodes: int, args: argparse.Namespace) -> dict[str, Any]:
    nats = None if nodes == 0 else NatsCluster(root / "nats")
    servers: list[RunningServer] = []
    try:
        if nats is not None:
            nats.start()
        for n in range(max(nodes, 1)):
            extra = (
                ("--workers", "1")
                if nats is None
                else ("--log", nats.log_url, "--node-id", f"n{n}", "--partitions", str(PARTITIONS))
            )
            servers.append(
                start_server(root / f"data-{n}", *extra, stderr=root / f"n{n}.log", timeout=120)
            )
        ports = [s.port for s in servers]
        _load_items(ports[0], args.items)
        if nats is not None:
            _wait_shared(ports)
        node_pids = [s.pid for s in servers]
        nats_pids = [] if nats is None else [s.process.pid for s in nats.servers if s.process]
        # What a node and NATS cost doing nothing (leases renewed every second …).
        idle0 = _cpu(node_pids), _cpu(nats_pids)
        time.sleep(IDLE_S)
        idle1 = _cpu(node_pids), _cpu(nats_pids)
        idle = (idle1[0] - idle0[0]) / IDLE_S, (idle1[1] - idle0[1]) / IDLE_S  # cores
        cpu0, t0 = (_cpu(node_pids), _cpu(nats_pids)), time.monotonic()
        ingest = _ingest(ports, args)
        cpu1, t1 = (_cpu(node_pids), _cpu(nats_pids)), time.monotonic()
        recommend = _recommend(ports, args)
        cpu2, t2 = (_cpu(node_pids), _cpu(nats_pids)), time.monotonic()
        events = ingest["events"]
        # Per event and per call: what the phase cost beyond what idling for as long does.
        node_ingest = cpu1[0] - cpu0[0] - idle[0] * (t1 - t0)
        nats_ingest = cpu1[1] - cpu0[1] - idle[1] * (t1 - t0)
        node_recommend = cpu2[0] - cpu1[0] - idle[0] * (t2 - t1)
        return {
            "nodes": nodes,
            "ingest": ingest,
            "recommend": recommend,
            "node_cpu_us_per_event": round(node_ingest / max(nodes, 1) / events * 1e6, 1),
            "nats_cpu_us_per_event": round(nats_ingest / events * 1e6, 1),
            "idle_node_cpu_percent": round((idle1[0] - idle0[0]) / max(nodes, 1) / IDLE_S * 100, 1),
            "idle_nats_cpu_percent": round((idle1[1] - idle0[1]) / IDLE_S * 100, 1),
            "node_cpu_ms_per_recommend": round(node_recommend / recommend["calls"] * 1e3, 3),
        }
    finally:
        for server in servers:
            server.stop()
        if nats is not None:
            nats.stop()


def _cpu(pids: Sequence[int]) -> float:
    """CPU seconds (user + system) the processes used so far."""
    total = 0
    for pid in pids:
        fields = process_stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


def _load_items(port: int, items: int) -> None:
    rng = random.Random(5)
    with Client("127.0.0.1", port, timeout=120) as client:
        for start in range(0, items, ITEM_BATCH):
            batch = [
                {
                    "id": f"i{i}",
                    "terms": {
                        "category": [f"c{rng.randrange(50)}"],
                        "city": [f"t{rng.randrange(20)}"],
                    },
                    "numbers": {"price": round(rng.uniform(10, 500), 2)},
                }
                for i in range(start, min(start + ITEM_BATCH, items))
            ]
            client.call("upsert_items", {"items": batch})


def _stats(port: int) -> dict[str, Any]:
    with Client("127.0.0.1", port, timeout=60) as client:
        stats: dict[str, Any] = client.call("stats")
        return stats


def _wait_shared(ports: list[int], within: float = 30.0) -> None:
    """Until every node serves some partitions and together all of them."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        owned = [_stats(p)["cluster_partitions_owned"] for p in ports]
        if all(owned) and sum(owned) == PARTITIONS:
            return
        time.sleep(0.25)
    raise RuntimeError(f"partitions not shared within {within} s")


def _ingest(ports: list[int], args: argparse.Namespace) -> dict[str, Any]:
    accepted, t0, acked = drive_clients(
        ports, args.clients, args.events, args.batch, 2, args.users, args.items, "c"
    )
    # Until every node applied it all (a read on each catches up to the stream's head).
    for port in ports:
        with Client("127.0.0.1", port, timeout=600) as client:
            client.call("search", {"filter": {"range": ["price", None, None]}, "limit": 1})
    everywhere = time.perf_counter() - t0
    return {
        "events": accepted,
        "acked_per_s": round(accepted / acked),
        "applied_everywhere_per_s": round(accepted / everywhere),
    }


def _recommend(ports: list[int], args: argparse.Namespace) -> dict[str, Any]:
    rng = random.Random(9)
    per_node: list[dict[str, Any]] = []
    calls = 0
    for port in ports:
        with Client("127.0.0.1", port, timeout=60) as client:
            before = client.call("stats").get("cluster_forwarded", 0)
            samples = []
            for _ in range(args.recommends):
                user = f"u{rng.randrange(args.users)}"
                t0 = time.perf_counter()
                client.call("recommend", {"user": user, "k": 10})
                samples.append(time.perf_counter() - t0)
            forwarded = client.call("stats").get("cluster_forwarded", 0) - before
        calls += len(samples)
        per_node.append(
            {"port": port, "forwarded": forwarded, **latency_summary(samples, stats=("p50", "p99"))}
        )
    every = [n["p99_ms"] for n in per_node]
    return {"calls": calls, "per_node": per_node, "worst_p99_ms": max(every)}


def _fit(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """``a, b`` of ``y = a + b * x`` by least squares, each at least 0 (one distinct ``x``:
    ``b`` is 0)."""
    xs, ys = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(set(xs)) < 2:
        return float(ys.mean()), 0.0
    design = np.column_stack([np.ones_like(xs), xs])
    (a, b), *_ = np.linalg.lstsq(design, ys, rcond=None)
    return max(float(a), 0.0), max(float(b), 0.0)


def scaling(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The 10- and 100-node table from the measured costs (see the module doc).

    Fitted over the measured node counts N: a node's CPU per event as
    ``items + users / N`` (every node applies every event to its items, a user's only on
    its owner); the NATS servers' CPU per event as ``stream + N * delivery`` (one consumer
    per node); the nodes' CPU per recommend call as ``serve + f * forward``, ``f`` the
    share of calls forwarded, ``(N - 1) / N`` with clients spread over the nodes.
    """
    cluster = [r for r in runs if r["nodes"] > 0]
    if not cluster:
        return {}
    n = [float(r["nodes"]) for r in cluster]
    items, users = _fit([1 / k for k in n], [r["node_cpu_us_per_event"] for r in cluster])
    stream, delivery = _fit(n, [r["nats_cpu_us_per_event"] for r in cluster])
    idle_base, idle_per_node = _fit(n, [r["idle_nats_cpu_percent"] / 100 for r in cluster])
    forwarded = [_forwarded_share(r) for r in cluster]
    serve, forward = _fit(forwarded, [r["node_cpu_ms_per_recommend"] for r in cluster])
    table = []
    for nodes in (1, 2, 3, 10, 100):
        per_event = items + users / nodes
        nats = stream + delivery * nodes
        # Cores the NATS servers spend on heartbeats and lease reads with nobody ingesting.
        idle = idle_base + idle_per_node * nodes
        per_call = serve + forward * (nodes - 1) / nodes
        table.append(
            {
                "nodes": nodes,
                "node_cpu_us_per_event": round(per_event, 1),
                "nats_cpu_us_per_event": round(nats, 1),
                "nats_idle_cores": round(idle, 2),
                # One core per node (one process); three NATS servers of one core each, less
                # what the leases take.
                "ingest_ceiling_per_s": round(min(1e6 / per_event, max(3 - idle, 0) * 1e6 / nats)),
                "recommend_ceiling_per_s": round(nodes * 1e3 / per_call),
                "user_state_share": round(1 / nodes, 3),
            }
        )
    return {
        "items_us_per_event": round(items, 1),
        "users_us_per_event": round(users, 1),
        "nats_stream_us_per_event": round(stream, 1),
        "nats_delivery_us_per_event_per_node": round(delivery, 1),
        "nats_idle_cores": round(idle_base, 3),
        "nats_idle_cores_per_node": round(idle_per_node, 3),
        "recommend_serve_ms": round(serve, 3),
        "recommend_forward_ms": round(forward, 3),
        "assumptions": [
            "each node one core (one process); NATS three servers of one core each",
            "every node watches the whole lease bucket: each heartbeat reaches every node",
            "every node applies every event to its items; a user's events only on its owner",
            "clients spread over the nodes: (N-1)/N of recommend calls are forwarded",
            "per-event costs as measured here, everything on one machine",
        ],
        "table": table,
    }


def _forwarded_share(run: dict[str, Any]) -> float:
    rec = run["recommend"]
    return float(sum(node["forwarded"] for node in rec["per_node"]) / rec["calls"])


def _print_run(run: dict[str, Any]) -> None:
    ingest, rec = run["ingest"], run["recommend"]
    print(
        f"  ingest: {ingest['acked_per_s']:,} events/s acknowledged, "
        f"{ingest['applied_everywhere_per_s']:,}/s applied on every node"
    )
    print(
        f"  CPU per event beyond idle: {run['node_cpu_us_per_event']} µs per Matchlight node, "
        f"{run['nats_cpu_us_per_event']} µs in the NATS servers"
    )
    for node in rec["per_node"]:
        print(
            f"  recommend via :{node['port']}: p50 {node['p50_ms']} ms, p99 {node['p99_ms']} ms "
            f"({node['forwarded']} of {rec['calls'] // len(rec['per_node'])} forwarded)"
        )
    print(f"  CPU per recommend beyond idle (all nodes): {run['node_cpu_ms_per_recommend']} ms")
    print(
        f"  idle: {run['idle_node_cpu_percent']} % of a core per node, "
        f"{run['idle_nats_cpu_percent']} % for NATS",
        flush=True,
    )


def _print_scaling(model: dict[str, Any]) -> None:
    if not model:
        return
    print("\n== scaling, derived from the per-event costs above (on paper) ==")
    print(
        f"  a node per event: {model['items_us_per_event']} µs (items, every event) + "
        f"{model['users_us_per_event']} µs / N (users); NATS per event: "
        f"{model['nats_stream_us_per_event']} µs + {model['nats_delivery_us_per_event_per_node']}"
        f" µs * N; a recommend: {model['recommend_serve_ms']} ms + "
        f"{model['recommend_forward_ms']} ms if forwarded; NATS idle: "
        f"{model['nats_idle_cores']} + {model['nats_idle_cores_per_node']} * N cores"
    )
    for assumption in model["assumptions"]:
        print(f"  assuming {assumption}")
    print(
        f"  {'nodes':>5} {'node µs/event':>14} {'NATS µs/event':>14} {'NATS idle cores':>16} "
        f"{'ingest ceiling/s':>17} {'recommend/s':>12} {'user state/node':>16}"
    )
    for row in model["table"]:
        print(
            f"  {row['nodes']:>5} {row['node_cpu_us_per_event']:>14} "
            f"{row['nats_cpu_us_per_event']:>14} {row['nats_idle_cores']:>16} "
            f"{row['ingest_ceiling_per_s']:>17,} {row['recommend_ceiling_per_s']:>12,} "
            f"{row['user_state_share']:>16.1%}"
        )
