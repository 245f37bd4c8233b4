"""``matchlight bench``: the whole engine end to end, over RPC, from separate client processes.

It starts a real ``matchlight serve`` on a temporary data dir and measures, in order:

1. **memory**: the server's resident set (``VmRSS``) before and after upserting
   ``--items`` items (kind ``pro``; a Zipf topic of 200, a Zipf city of 100, a
   price) in calls of 5,000, scaled to MiB per 100,000 items;
2. **sustained ingest**: ``--ingest-clients`` client processes, each with its own
   connection and 2 calls of ``--batch`` events in flight (Zipf users and items;
   ``view``/``click``/``like``/``save``), until the log holds ``--events``
   interaction events. An event counts once acknowledged: committed with fsync,
   applied by its actors and indexed. Clients encode their calls before the clock starts;
3. **recommend under ingest**: for ``--recommend-seconds``, ``--recommend-clients``
   processes each call ``recommend`` in a closed loop (k=10, default surface, a
   user drawn uniformly from the distinct users of step 2) and time every call,
   while one more process keeps ingesting at full speed. First, for a quarter of
   that time (at least 1 s), the same clients run alone: the baseline that shows
   what the concurrent ingest costs;
4. **freshness**: 500 times, from one client: ask ``recommend`` for a user with
   history, ``ingest`` one ``like`` of an item from that list (new to the user),
   then ``get_user`` (the like must be the latest interaction) and ``recommend``
   again (the liked item must be gone: seen items are excluded). The ingest round
   trip is the event-to-visible latency, since the ack is sent only once the event
   is applied and indexed; the checks count read-your-writes violations;
5. **restart**: SIGTERM (time to a clean exit), start again on the same data dir
   (time to its ``listening`` line, the log holding everything above); then
   ingest a tail, ``kill -9`` and time the recovery start as well, checking that no
   acknowledged event was lost.

Progress goes to stderr; a table (each figure next to its DESIGN.md target where
one exists) to stdout; ``--json FILE`` writes every figure.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import attrs

from matchlight.bench.e2e_clients import (
    CALL_TIMEOUT_S,
    DEPTH,
    HOST,
    ITEM_BATCH,
    RECOMMEND_K,
    catalogue,
    ingest_client,
    recommend_client,
)
from matchlight.bench.harness import RunningServer, collect, latency_summary, start_server
from matchlight.bench.index_workload import note
from matchlight.cli.argtypes import positive_float, positive_int
from matchlight.client import Client

FRESHNESS_PROBES: Final = 500
WAIT_S: Final = 1_800.0
#: DESIGN.md targets on the 2-core dev machine: figure -> (bound, "min" or "max").
TARGETS: Final = {
    "ingest_events_per_s": (50_000.0, "min"),
    "event_to_visible_p99_ms": (10.0, "max"),
    "recommend_p99_ms": (5.0, "max"),
    "recommend_alone_p99_ms": (5.0, "max"),
    "restart_clean_s": (10.0, "max"),
    "restart_kill9_s": (10.0, "max"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``matchlight bench`` (the end-to-end run)."""
    parser.add_argument("--items", type=positive_int, default=100_000, help="catalogue size")
    parser.add_argument("--users", type=positive_int, default=50_000, help="distinct users")
    parser.add_argument(
        "--events",
        type=positive_int,
        default=1_000_000,
        help="events ingested in the sustained phase: the log the restart replays",
    )
    parser.add_argument(
        "--recommend-seconds",
        type=positive_float,
        default=20.0,
        metavar="SECONDS",
        help="how long recommend is timed under concurrent ingest",
    )
    parser.add_argument(
        "--ingest-clients",
        type=positive_int,
        default=1,
        help="ingest client processes in the sustained phase",
    )
    parser.add_argument(
        "--recommend-clients",
        type=positive_int,
        default=2,
        help="recommend client processes, one call in flight each",
    )
    parser.add_argument("--batch", type=positive_int, default=1000, help="events per ingest call")
    parser.add_argument("--seed", type=int, default=1, help="workload seed")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")


# -- the phases --------------------------------------------------------------------------------


def _rss_mib(pid: int) -> float:
    """The resident set of process ``pid`` (``VmRSS`` in /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def _collect(results: Any, count: int, procs: list[Any]) -> list[Any]:
    return collect(results, count, procs, WAIT_S)


@attrs.frozen(kw_only=True)
class _Signals:
    """What the orchestrator shares with its client processes (spawn context objects)."""

    start: Any
    stop: Any
    results: Any

    @classmethod
    def make(cls, ctx: Any) -> _Signals:
        return cls(start=ctx.Event(), stop=ctx.Event(), results=ctx.Queue())


def _ingest_process(
    ctx: Any,
    port: int,
    tag: str,
    quota: int | None,
    prepared: int,
    args: argparse.Namespace,
    shared: _Signals,
) -> Any:
    """A (not yet started) :func:`ingest_client` process."""
    config = {"users": args.users, "items": args.items, "batch": args.batch, "seed": args.seed}
    return ctx.Process(
        daemon=True,
        target=ingest_client,
        args=(port, tag, quota, prepared, config, shared.start, shared.stop, shared.results),
    )


def _memory(server: RunningServer, args: argparse.Namespace) -> dict[str, Any]:
    """Upsert the catalogue; the server's RSS before and after."""
    with Client(HOST, server.port, timeout=CALL_TIMEOUT_S) as admin:
        admin.call("health")
        before = _rss_mib(server.pid)
        t0 = time.perf_counter()
        for calls, items in enumerate(catalogue(args.items, args.seed), 1):
            admin.call("upsert_items", {"items": items})
            if calls % 4 == 0:
                note(f"  upserted {calls * ITEM_BATCH:,} items")
        seconds = time.perf_counter() - t0
        after = _rss_mib(server.pid)
        indexed = admin.call("stats")["index_items"]
    if indexed != args.items:
        raise RuntimeError(f"upserted {args.items} items, the index holds {indexed}")
    return {
        "items": args.items,
        "upsert_s": round(seconds, 3),
        "upsert_items_per_s": round(args.items / seconds),
        "rss_before_mib": round(before, 1),
        "rss_after_mib": round(after, 1),
        "mib_per_100k_items": round((after - before) * 100_000 / args.items, 1),
    }


def _sustained_ingest(port: int, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    """Phase 2: ``--events`` events from ``--ingest-clients`` processes; the figures and the
    users the events came from."""
    ctx = mp.get_context("spawn")
    shared = _Signals.make(ctx)
    start, results = shared.start, shared.results
    n = args.ingest_clients
    quotas = [args.events // n + (1 if i < args.events % n else 0) for i in range(n)]
    procs = [
        _ingest_process(ctx, port, f"e2e-ingest-{i}", quota, sys.maxsize, args, shared)
        for i, quota in enumerate(quotas)
    ]
    for p in procs:
        p.start()
    with Client(HOST, port, timeout=CALL_TIMEOUT_S) as admin:
        note(f"  {n} client(s) encoding {args.events:,} events")
        _collect(results, n, procs)
        before = admin.call("stats")
        t0 = time.perf_counter()
        start.set()
        done = _collect(results, n, procs)
        wall = time.perf_counter() - t0
        after = admin.call("stats")
    for p in procs:
        p.join(timeout=60)
    accepted = sum(d[2] for d in done)
    grew = after["log_seq"] - before["log_seq"]
    if accepted != args.events or grew != accepted:
        raise RuntimeError(f"sent {args.events} events: {accepted} accepted, the log grew {grew}")
    commits = after["commits"] - before["commits"]
    users = sorted({u for d in done for u in d[4]})
    return {
        "clients": n,
        "calls_in_flight_per_client": DEPTH,
        "batch": args.batch,
        "events": accepted,
        "seconds": round(wall, 3),
        "events_per_s": round(accepted / wall),
        "events_per_commit": round(accepted / commits, 1) if commits else 0.0,
        "distinct_users": len(users),
    }, [f"user-{u}" for u in users]


def _recommend(
    port: int, args: argparse.Namespace, users: list[str], seconds: float, ingest_rate: float
) -> dict[str, Any]:
    """Time ``recommend`` from ``--recommend-clients`` processes for ``seconds``; with
    ``ingest_rate`` > 0, one more process ingests at full speed meanwhile."""
    ctx = mp.get_context("spawn")
    shared = _Signals.make(ctx)
    start, stop, results = shared.start, shared.stop, shared.results
    procs = [
        ctx.Process(
            daemon=True,
            target=recommend_client,
            args=(port, i, users, seconds, args.seed, start, results),
        )
        for i in range(args.recommend_clients)
    ]
    if ingest_rate > 0:
        # Encode ahead what the ingest client should need (it makes more if it runs out).
        prepared = max(2, round(ingest_rate * seconds * 1.2 / args.batch))
        procs.append(_ingest_process(ctx, port, "e2e-concurrent", None, prepared, args, shared))
    for p in procs:
        p.start()
    _collect(results, len(procs), procs)
    start.set()
    finished = _collect(results, args.recommend_clients, procs)
    stop.set()
    ingest = _collect(results, len(procs) - args.recommend_clients, procs)
    for p in procs:
        p.join(timeout=60)
    samples = [s for r in finished for s in r[2]]
    out = {
        "clients": args.recommend_clients,
        "seconds": seconds,
        "calls": len(samples),
        "calls_per_s": round(sum(len(r[2]) / r[1] for r in finished), 1),
        "errors": sum(r[3] for r in finished),
        **latency_summary(samples),
    }
    for _, elapsed, accepted, _, _ in ingest:
        out["concurrent_ingest_events"] = accepted
        out["concurrent_ingest_events_per_s"] = round(accepted / elapsed)
    return out


def _freshness(port: int, users: list[str], items: int, seed: int) -> dict[str, Any]:
    """Phase 4: like an item from a user's list; is it visible at once, and gone from the list?"""
    rng = random.Random(f"e2e-freshness-{seed}")
    acks: list[float] = []
    reads: list[float] = []
    not_visible = still_recommended = 0
    with Client(HOST, port, timeout=CALL_TIMEOUT_S) as client:
        for n in range(FRESHNESS_PROBES):
            user = rng.choice(users)
            listed = client.call("recommend", {"user": user, "k": RECOMMEND_K})["items"]
            # An item from the user's own list: new to them, and one recommend would show.
            liked = listed[n % len(listed)]["id"] if listed else f"item-{rng.randrange(items)}"
            event = {"id": f"e2e-fresh-{n}", "type": "like", "user": user, "item": liked}
            t0 = time.perf_counter()
            ack = client.call("ingest", {"events": [event | {"ts": time.time()}]})
            t1 = time.perf_counter()
            view = client.call("get_user", {"id": user})
            reads.append(time.perf_counter() - t1)
            acks.append(t1 - t0)
            latest = view["recent"][0] if view["recent"] else {}
            if ack["accepted"] != 1 or (latest.get("item"), latest.get("type")) != (liked, "like"):
                not_visible += 1
            after = client.call("recommend", {"user": user, "k": RECOMMEND_K})["items"]
            if any(entry["id"] == liked for entry in after):
                still_recommended += 1
    ack_ms, read_ms = latency_summary(acks), latency_summary(reads)
    return {
        "probes": FRESHNESS_PROBES,
        "event_to_visible_p50_ms": ack_ms["p50_ms"],
        "event_to_visible_p99_ms": ack_ms["p99_ms"],
        "event_to_visible_max_ms": ack_ms["max_ms"],
        "get_user_p50_ms": read_ms["p50_ms"],
        "get_user_violations": not_visible,
        "recommend_violations": still_recommended,
    }


def _stop(server: RunningServer, sig: signal.Signals) -> float:
    """Send ``sig`` and wait for the process to exit; the seconds it took."""
    t0 = time.perf_counter()
    code = server.stop(sig, timeout=WAIT_S)
    seconds = time.perf_counter() - t0
    if sig == signal.SIGTERM and code != 0:
        raise RuntimeError(f"the server exited with {code} after SIGTERM")
    return seconds


def _timed_start(data: Path) -> tuple[RunningServer, float]:
    """Start a server on ``data``; it and the seconds until its ``listening`` line."""
    t0 = time.perf_counter()
    server = start_server(data, log_level="WARNING", timeout=WAIT_S)
    return server, time.perf_counter() - t0


def _log_seq(port: int) -> int:
    with Client(HOST, port, timeout=CALL_TIMEOUT_S) as admin:
        seq: int = admin.call("stats")["log_seq"]
    return seq


# -- the run -----------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    """Run the five phases, print the table, write ``--json``; 0 if every check passed."""
    began = time.perf_counter()
    report: dict[str, Any] = {"config": _config(args)}
    with tempfile.TemporaryDirectory(prefix="matchlight-bench-e2e-") as tmp:
        data = Path(tmp) / "data"
        server, empty_start = _timed_start(data)
        try:
            note(f"1/5 memory: upserting {args.items:,} items")
            report["memory"] = _memory(server, args)
            report["memory"]["start_empty_s"] = round(empty_start, 3)
            users = _ingest_phase(server, args, report)
            _recommend_phase(server.port, args, users, report)
            note(f"4/5 freshness: {FRESHNESS_PROBES} like → get_user → recommend probes")
            report["freshness"] = _freshness(server.port, users, args.items, args.seed)
            note("5/5 restart: SIGTERM, start; ingest a tail, kill -9, start")
            server, report["restart"] = _restart_phase(server, data, args, users)
        finally:
            if server.poll() is None:
                _stop(server, signal.SIGTERM)
    report["wall_s"] = round(time.perf_counter() - began, 1)
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    failures = _failures(report)
    for failure in failures:
        print(f"ERROR: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "items": args.items,
        "users": args.users,
        "events": args.events,
        "recommend_seconds": args.recommend_seconds,
        "ingest_clients": args.ingest_clients,
        "recommend_clients": args.recommend_clients,
        "batch": args.batch,
        "seed": args.seed,
        "cores": os.cpu_count(),
    }


def _ingest_phase(
    server: RunningServer, args: argparse.Namespace, report: dict[str, Any]
) -> list[str]:
    """Phase 2 into ``report["ingest"]``; the users the events came from."""
    note(f"2/5 sustained ingest: {args.events:,} events, {args.ingest_clients} client(s)")
    report["ingest"], users = _sustained_ingest(server.port, args)
    report["ingest"]["rss_after_mib"] = round(_rss_mib(server.pid), 1)
    note(f"  {report['ingest']['events_per_s']:,} events/s")
    return users


def _recommend_phase(
    port: int, args: argparse.Namespace, users: list[str], report: dict[str, Any]
) -> None:
    """Phase 3 into ``report``: recommend alone, then beside an ingest client."""
    alone = max(1.0, args.recommend_seconds / 4)
    note(
        f"3/5 recommend: {args.recommend_clients} client(s), {alone:g} s alone, then "
        f"{args.recommend_seconds:g} s beside 1 ingest client"
    )
    report["recommend_alone"] = _recommend(port, args, users, alone, 0.0)
    note(
        f"  alone: {report['recommend_alone']['calls_per_s']:,} calls/s, "
        f"p99 {report['recommend_alone']['p99_ms']} ms"
    )
    rate = report["ingest"]["events_per_s"]
    report["recommend"] = _recommend(port, args, users, args.recommend_seconds, rate)
    note(
        f"  {report['recommend']['calls_per_s']:,} calls/s, p99 {report['recommend']['p99_ms']} ms"
    )


def _restart_phase(
    server: RunningServer, data: Path, args: argparse.Namespace, users: list[str]
) -> tuple[RunningServer, dict[str, Any]]:
    """Phase 5: a clean stop and start, then a tail, kill -9 and start; the running server
    and the figures."""
    log_events = _log_seq(server.port)
    stop_s = _stop(server, signal.SIGTERM)
    server, clean_s = _timed_start(data)
    note(f"  clean restart in {clean_s:.2f} s")
    restart = _after_restart(server, args)
    server, kill9_s = _timed_start(data)
    lost = restart.pop("log_events_before_kill") - _log_seq(server.port)
    note(f"  kill -9 restart in {kill9_s:.2f} s")
    return server, {
        "log_events": log_events,
        "stop_clean_s": round(stop_s, 3),
        "restart_clean_s": round(clean_s, 3),
        **restart,
        "restart_kill9_s": round(kill9_s, 3),
        "lost_events": lost,
    }


def _after_restart(server: RunningServer, args: argparse.Namespace) -> dict[str, Any]:
    """Ingest a tail on the restarted server (so actors have unsnapshotted events), kill -9 it."""
    tail = max(args.batch, args.events // 20)
    ctx = mp.get_context("spawn")
    shared = _Signals.make(ctx)
    client = _ingest_process(ctx, server.port, "e2e-tail", tail, sys.maxsize, args, shared)
    client.start()
    _collect(shared.results, 1, [client])
    shared.start.set()
    (done,) = _collect(shared.results, 1, [client])
    client.join(timeout=60)
    seq = _log_seq(server.port)
    _stop(server, signal.SIGKILL)
    return {"tail_events": done[2], "log_events_before_kill": seq}


def _failures(report: dict[str, Any]) -> list[str]:
    out = []
    fresh = report["freshness"]
    if fresh["get_user_violations"]:
        out.append(f"{fresh['get_user_violations']} likes were not visible in get_user after ack")
    if fresh["recommend_violations"]:
        out.append(f"{fresh['recommend_violations']} liked items were recommended right after")
    if report["restart"]["lost_events"]:
        out.append(f"kill -9 lost {report['restart']['lost_events']} acknowledged events")
    for key in ("recommend_alone", "recommend"):
        if report[key]["errors"]:
            out.append(f"{report[key]['errors']} recommend calls failed ({key})")
    return out


def _verdict(key: str, value: float) -> tuple[str, str]:
    if key not in TARGETS:
        return "", ""
    bound, kind = TARGETS[key]
    met = value >= bound if kind == "min" else value <= bound
    return f"{'≥' if kind == 'min' else '≤'} {bound:,.0f}", "met" if met else "NOT met"


def print_table(report: dict[str, Any]) -> None:
    """The report on stdout: one line per figure, its unit, its target and whether it is met."""
    c, mem, ing, rec = report["config"], report["memory"], report["ingest"], report["recommend"]
    alone, fresh, rs = report["recommend_alone"], report["freshness"], report["restart"]
    print(
        f"\nmatchlight bench (end to end over RPC): {c['items']:,} items, {c['users']:,} users, "
        f"{c['events']:,} events, {c['cores']} cores; wall {report['wall_s']} s"
    )
    rows: list[tuple[str, str, float | int, str]] = [
        ("memory per 100k items (server RSS)", "", mem["mib_per_100k_items"], "MiB"),
        (f"durable ingest, {ing['clients']} client(s)", "ingest_events_per_s",
         ing["events_per_s"], "events/s"),
        ("recommend alone: throughput", "", alone["calls_per_s"], "calls/s"),
        ("recommend alone: latency p50", "", alone["p50_ms"], "ms"),
        ("recommend alone: latency p99", "recommend_alone_p99_ms", alone["p99_ms"], "ms"),
        ("recommend under ingest: throughput", "", rec["calls_per_s"], "calls/s"),
        ("recommend under ingest: latency p50", "", rec["p50_ms"], "ms"),
        ("recommend under ingest: latency p99", "recommend_p99_ms", rec["p99_ms"], "ms"),
        ("recommend under ingest: latency p99.9", "", rec["p999_ms"], "ms"),
        ("concurrent ingest during recommend", "", rec["concurrent_ingest_events_per_s"],
         "events/s"),
        ("event → visible (ingest ack) p50", "", fresh["event_to_visible_p50_ms"], "ms"),
        ("event → visible (ingest ack) p99", "event_to_visible_p99_ms",
         fresh["event_to_visible_p99_ms"], "ms"),
        ("read-your-writes violations, get_user", "", fresh["get_user_violations"],
         f"of {fresh['probes']}"),
        ("seen-item violations, recommend", "", fresh["recommend_violations"],
         f"of {fresh['probes']}"),
        ("clean stop (SIGTERM → exit)", "", rs["stop_clean_s"], "s"),
        (f"restart, clean, {rs['log_events']:,} events in the log", "restart_clean_s",
         rs["restart_clean_s"], "s"),
        (f"restart after kill -9 ({rs['tail_events']:,}-event tail)", "restart_kill9_s",
         rs["restart_kill9_s"], "s"),
        ("acknowledged events lost by kill -9", "", rs["lost_events"], "events"),
    ]  # fmt: skip
    header = f"{'figure':<52} {'value':>12} {'unit':<10} {'target':>10} {'':<8}"
    print(header)
    print("-" * len(header))
    for label, key, value, unit in rows:
        target, verdict = _verdict(key, float(value))
        print(f"{label:<52} {_fmt(value):>12} {unit:<10} {target:>10} {verdict:<8}")


def _fmt(value: float) -> str:
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.3f}" if value < 10 else f"{value:,.1f}"
