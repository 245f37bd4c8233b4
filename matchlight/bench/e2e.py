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
import itertools
import json
import multiprocessing as mp
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

import msgpack

from matchlight.bench.index_workload import CITIES, TOPICS, note
from matchlight.bench.ingest import start_server
from matchlight.cli.argtypes import positive_float, positive_int
from matchlight.client import Client, RpcError

HOST: Final = "127.0.0.1"
#: Ingest calls each ingest client keeps in flight (as ``bench ingest``'s default).
DEPTH: Final = 2
ITEM_BATCH: Final = 5_000
EVENT_TYPES: Final = ("view", "view", "view", "view", "click", "click", "like", "save")
ZIPF_S: Final = 1.1
FRESHNESS_PROBES: Final = 500
RECOMMEND_K: Final = 10
CALL_TIMEOUT_S: Final = 120.0
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
    parser.add_argument(
        "--items", type=positive_int, default=100_000, help="catalogue size (default 100000)"
    )
    parser.add_argument(
        "--users", type=positive_int, default=50_000, help="distinct users (default 50000)"
    )
    parser.add_argument(
        "--events",
        type=positive_int,
        default=1_000_000,
        help="events ingested in the sustained phase: the log the restart replays "
        "(default 1000000)",
    )
    parser.add_argument(
        "--recommend-seconds",
        type=positive_float,
        default=20.0,
        metavar="SECONDS",
        help="how long recommend is timed under concurrent ingest (default 20)",
    )
    parser.add_argument(
        "--ingest-clients",
        type=positive_int,
        default=1,
        help="ingest client processes in the sustained phase (default 1)",
    )
    parser.add_argument(
        "--recommend-clients",
        type=positive_int,
        default=2,
        help="recommend client processes, one call in flight each (default 2)",
    )
    parser.add_argument(
        "--batch", type=positive_int, default=1000, help="events per ingest call (default 1000)"
    )
    parser.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")


# -- the workload (shared with the client processes) ------------------------------------------


def _zipf_cum(n: int, s: float = ZIPF_S) -> list[float]:
    return list(itertools.accumulate(1.0 / (k + 1) ** s for k in range(n)))


def _items(n: int, seed: int) -> Iterator[list[dict[str, Any]]]:
    """The catalogue in ``upsert_items`` calls of :data:`ITEM_BATCH`."""
    rng = random.Random(f"e2e-items-{seed}")
    topic_cum, city_cum = _zipf_cum(TOPICS, 1.0), _zipf_cum(CITIES, 1.0)
    for lo in range(0, n, ITEM_BATCH):
        size = min(ITEM_BATCH, n - lo)
        topics = rng.choices(range(TOPICS), cum_weights=topic_cum, k=size)
        cities = rng.choices(range(CITIES), cum_weights=city_cum, k=size)
        yield [
            {
                "id": f"item-{lo + j}",
                "kind": "pro",
                "terms": {"topic": f"topic{topics[j]:03d}", "city": f"city{cities[j]:03d}"},
                "numbers": {"price": float(rng.randrange(2_000, 50_000)) / 100.0},
            }
            for j in range(size)
        ]


class _Events:
    """Packed ``ingest`` requests of Zipf-distributed events, with ids unique per ``tag``."""

    def __init__(self, tag: str, users: int, items: int, batch: int, seed: int) -> None:
        self.tag = tag
        self.batch = batch
        self.rng = random.Random(f"e2e-events-{seed}-{tag}")
        self.users = range(users)
        self.items = range(items)
        self.user_cum = _zipf_cum(users)
        self.item_cum = _zipf_cum(items)
        self.seen_users: set[int] = set()
        self.made = 0

    def next(self, size: int) -> bytes:
        rng, n0 = self.rng, self.made
        us = rng.choices(self.users, cum_weights=self.user_cum, k=size)
        its = rng.choices(self.items, cum_weights=self.item_cum, k=size)
        types = rng.choices(EVENT_TYPES, k=size)
        self.seen_users.update(us)
        ts = time.time()
        events = [
            {
                "id": f"{self.tag}-{n0 + j}",
                "type": types[j],
                "user": f"user-{us[j]}",
                "item": f"item-{its[j]}",
                "ts": ts,
            }
            for j in range(size)
        ]
        self.made += size
        packed: bytes = msgpack.packb([0, n0 // self.batch + 1, "ingest", [{"events": events}]])
        return packed

    def calls(self, quota: int | None, prepared: int) -> Iterator[bytes]:
        """Up to ``quota`` events (``None``: no end), the first ``prepared`` calls encoded now."""
        total = quota if quota is not None else sys.maxsize
        sizes = (min(self.batch, total - lo) for lo in range(0, total, self.batch))
        ready = [self.next(size) for size in itertools.islice(sizes, prepared)]
        return itertools.chain(ready, (self.next(size) for size in sizes))


def _ingest_client(
    port: int,
    tag: str,
    quota: int | None,
    prepared: int,
    config: dict[str, int],
    start: Any,
    stop: Any,
    results: Any,
) -> None:
    """A client process: ingest ``quota`` events (or until ``stop``), ``DEPTH`` calls in flight.

    Puts ``("ready", tag)`` once its first ``prepared`` calls are encoded, then
    ``(tag, seconds, accepted, calls, sorted user numbers)`` when done.
    """
    source = _Events(tag, config["users"], config["items"], config["batch"], config["seed"])
    calls = source.calls(quota, prepared)
    # A raw socket rather than Client: the loop below keeps DEPTH calls in flight.
    sock = socket.create_connection((HOST, port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    unpacker = msgpack.Unpacker(raw=False)
    results.put(("ready", tag))
    start.wait()
    t0 = time.perf_counter()
    sent = acked = accepted = 0
    more = True
    while more or acked < sent:
        while more and sent - acked < DEPTH:
            call = None if stop.is_set() else next(calls, None)
            if call is None:
                more = False
                break
            sock.sendall(call)
            sent += 1
        if acked == sent:
            break
        data = sock.recv(1 << 16)
        if not data:
            raise RuntimeError("the server closed the connection")
        unpacker.feed(data)
        for _, _, error, result in unpacker:
            if error is not None:
                raise RuntimeError(f"ingest failed: {error}")
            accepted += result["accepted"]
            acked += 1
    seconds = time.perf_counter() - t0
    sock.close()
    results.put((tag, seconds, accepted, acked, sorted(source.seen_users)))


def _recommend_client(
    port: int, index: int, users: list[str], seconds: float, seed: int, start: Any, results: Any
) -> None:
    """A client process: ``recommend`` in a closed loop for ``seconds``, timing every call.

    Puts ``("ready", index)``, then ``(index, elapsed, latencies in s, errors)``.
    """
    rng = random.Random(f"e2e-recommend-{seed}-{index}")
    with Client(HOST, port, timeout=CALL_TIMEOUT_S) as client:
        client.call("recommend", {"user": users[0], "k": RECOMMEND_K})  # connect and warm up
        results.put(("ready", index))
        start.wait()
        samples: list[float] = []
        errors = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        now = t0
        while now < deadline:
            params = {"user": rng.choice(users), "k": RECOMMEND_K}
            began = time.perf_counter()
            try:
                client.call("recommend", params)
            except RpcError:
                errors += 1
            now = time.perf_counter()
            samples.append(now - began)
        results.put((index, now - t0, samples, errors))


# -- the phases --------------------------------------------------------------------------------


def _rss_mib(pid: int) -> float:
    """The resident set of process ``pid`` (``VmRSS`` in /proc), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


def _ms(samples: list[float]) -> dict[str, float]:
    import numpy as np

    ms = np.asarray(samples) * 1000.0
    return {
        "p50_ms": round(float(np.percentile(ms, 50)), 3),
        "p99_ms": round(float(np.percentile(ms, 99)), 3),
        "p999_ms": round(float(np.percentile(ms, 99.9)), 3),
        "max_ms": round(float(ms.max()), 3),
        "mean_ms": round(float(ms.mean()), 3),
    }


def collect(results: Any, count: int, procs: list[Any], wait_s: float = WAIT_S) -> list[Any]:
    """The next ``count`` messages from the client processes ``procs``.

    Raises RuntimeError if one of them fails first, or they do not all come within ``wait_s``.
    """
    out: list[Any] = []
    deadline = time.monotonic() + wait_s
    while len(out) < count:
        try:
            out.append(results.get(timeout=0.5))
        except queue.Empty:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"a client process failed (exit code {failed[0]})") from None
            if time.monotonic() > deadline:
                raise RuntimeError(f"no word from the clients within {wait_s:g} s") from None
    return out


def _memory(proc: subprocess.Popen[str], port: int, args: argparse.Namespace) -> dict[str, Any]:
    with Client(HOST, port, timeout=CALL_TIMEOUT_S) as admin:
        admin.call("health")
        before = _rss_mib(proc.pid)
        t0 = time.perf_counter()
        for calls, items in enumerate(_items(args.items, args.seed), 1):
            admin.call("upsert_items", {"items": items})
            if calls % 4 == 0:
                note(f"  upserted {calls * ITEM_BATCH:,} items")
        seconds = time.perf_counter() - t0
        after = _rss_mib(proc.pid)
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


def _workload(args: argparse.Namespace) -> dict[str, int]:
    return {"users": args.users, "items": args.items, "batch": args.batch, "seed": args.seed}


def _sustained_ingest(port: int, args: argparse.Namespace) -> tuple[dict[str, Any], list[str]]:
    ctx = mp.get_context("spawn")
    start, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    n = args.ingest_clients
    quotas = [args.events // n + (1 if i < args.events % n else 0) for i in range(n)]
    procs = [
        ctx.Process(
            daemon=True,
            target=_ingest_client,
            args=(
                port,
                f"e2e-ingest-{i}",
                quota,
                sys.maxsize,
                _workload(args),
                start,
                stop,
                results,
            ),
        )
        for i, quota in enumerate(quotas)
    ]
    for p in procs:
        p.start()
    with Client(HOST, port, timeout=CALL_TIMEOUT_S) as admin:
        note(f"  {n} client(s) encoding {args.events:,} events")
        collect(results, n, procs)
        before = admin.call("stats")
        t0 = time.perf_counter()
        start.set()
        done = collect(results, n, procs)
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
    start, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            daemon=True,
            target=_recommend_client,
            args=(port, i, users, seconds, args.seed, start, results),
        )
        for i in range(args.recommend_clients)
    ]
    if ingest_rate > 0:
        # Encode ahead what the ingest client should need (it makes more if it runs out).
        prepared = max(2, round(ingest_rate * seconds * 1.2 / args.batch))
        procs.append(
            ctx.Process(
                daemon=True,
                target=_ingest_client,
                args=(
                    port,
                    "e2e-concurrent",
                    None,
                    prepared,
                    _workload(args),
                    start,
                    stop,
                    results,
                ),
            )
        )
    for p in procs:
        p.start()
    collect(results, len(procs), procs)
    start.set()
    finished = collect(results, args.recommend_clients, procs)
    stop.set()
    ingest = collect(results, len(procs) - args.recommend_clients, procs)
    for p in procs:
        p.join(timeout=60)
    samples = [s for r in finished for s in r[2]]
    out = {
        "clients": args.recommend_clients,
        "seconds": seconds,
        "calls": len(samples),
        "calls_per_s": round(sum(len(r[2]) / r[1] for r in finished), 1),
        "errors": sum(r[3] for r in finished),
        **_ms(samples),
    }
    for _, elapsed, accepted, _, _ in ingest:
        out["concurrent_ingest_events"] = accepted
        out["concurrent_ingest_events_per_s"] = round(accepted / elapsed)
    return out


def _freshness(port: int, users: list[str], items: int, seed: int) -> dict[str, Any]:
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
    ack_ms, read_ms = _ms(acks), _ms(reads)
    return {
        "probes": FRESHNESS_PROBES,
        "event_to_visible_p50_ms": ack_ms["p50_ms"],
        "event_to_visible_p99_ms": ack_ms["p99_ms"],
        "event_to_visible_max_ms": ack_ms["max_ms"],
        "get_user_p50_ms": read_ms["p50_ms"],
        "get_user_violations": not_visible,
        "recommend_violations": still_recommended,
    }


def _stop(proc: subprocess.Popen[str], sig: signal.Signals) -> float:
    """Send ``sig`` and wait for the process to exit; the seconds it took."""
    t0 = time.perf_counter()
    proc.send_signal(sig)
    proc.wait(timeout=WAIT_S)
    seconds = time.perf_counter() - t0
    if proc.stdout is not None:
        proc.stdout.close()
    if sig == signal.SIGTERM and proc.returncode != 0:
        raise RuntimeError(f"the server exited with {proc.returncode} after SIGTERM")
    return seconds


def _timed_start(data: Path) -> tuple[subprocess.Popen[str], int, float]:
    t0 = time.perf_counter()
    proc, port = start_server(data)
    return proc, port, time.perf_counter() - t0


def _log_seq(port: int) -> int:
    with Client(HOST, port, timeout=CALL_TIMEOUT_S) as admin:
        seq: int = admin.call("stats")["log_seq"]
    return seq


# -- the run -----------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    """Run the five phases, print the table, write ``--json``; 0 if every check passed."""
    began = time.perf_counter()
    report: dict[str, Any] = {
        "config": {
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
    }
    with tempfile.TemporaryDirectory(prefix="matchlight-bench-e2e-") as tmp:
        data = Path(tmp) / "data"
        proc, port, empty_start = _timed_start(data)
        try:
            note(f"1/5 memory: upserting {args.items:,} items")
            report["memory"] = _memory(proc, port, args)
            report["memory"]["start_empty_s"] = round(empty_start, 3)

            note(f"2/5 sustained ingest: {args.events:,} events, {args.ingest_clients} client(s)")
            report["ingest"], users = _sustained_ingest(port, args)
            report["ingest"]["rss_after_mib"] = round(_rss_mib(proc.pid), 1)
            note(f"  {report['ingest']['events_per_s']:,} events/s")

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
                f"  {report['recommend']['calls_per_s']:,} calls/s, "
                f"p99 {report['recommend']['p99_ms']} ms"
            )

            note(f"4/5 freshness: {FRESHNESS_PROBES} like → get_user → recommend probes")
            report["freshness"] = _freshness(port, users, args.items, args.seed)

            note("5/5 restart: SIGTERM, start; ingest a tail, kill -9, start")
            log_events = _log_seq(port)
            stop_s = _stop(proc, signal.SIGTERM)
            proc, port, clean_s = _timed_start(data)
            note(f"  clean restart in {clean_s:.2f} s")
            restart = _after_restart(proc, port, args, users)
            proc, port, kill9_s = _timed_start(data)
            lost = restart.pop("log_events_before_kill") - _log_seq(port)
            report["restart"] = {
                "log_events": log_events,
                "stop_clean_s": round(stop_s, 3),
                "restart_clean_s": round(clean_s, 3),
                **restart,
                "restart_kill9_s": round(kill9_s, 3),
                "lost_events": lost,
            }
            note(f"  kill -9 restart in {kill9_s:.2f} s")
        finally:
            if proc.poll() is None:
                _stop(proc, signal.SIGTERM)
    report["wall_s"] = round(time.perf_counter() - began, 1)
    print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    failures = _failures(report)
    for failure in failures:
        print(f"ERROR: {failure}", file=sys.stderr)
    return 1 if failures else 0


def _after_restart(
    proc: subprocess.Popen[str], port: int, args: argparse.Namespace, users: list[str]
) -> dict[str, Any]:
    """Ingest a tail on the restarted server (so actors have unsnapshotted events), kill -9 it."""
    tail = max(args.batch, args.events // 20)
    ctx = mp.get_context("spawn")
    start, stop, results = ctx.Event(), ctx.Event(), ctx.Queue()
    client = ctx.Process(
        daemon=True,
        target=_ingest_client,
        args=(port, "e2e-tail", tail, sys.maxsize, _workload(args), start, stop, results),
    )
    client.start()
    collect(results, 1, [client])
    start.set()
    (done,) = collect(results, 1, [client])
    client.join(timeout=60)
    seq = _log_seq(port)
    _stop(proc, signal.SIGKILL)
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


def run_cli(argv: list[str] | None = None) -> int:
    """``python -m matchlight.bench.e2e [flags]``: the same run without the ``matchlight`` CLI."""
    parser = argparse.ArgumentParser(
        prog="python -m matchlight.bench.e2e",
        description="End-to-end benchmark over RPC: ingest, recommend under ingest, "
        "freshness, restart and memory.",
    )
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    # Through the importable module, so the spawned clients find its functions by name.
    from matchlight.bench import e2e

    sys.exit(e2e.run_cli())
