"""``matchlight bench shadow-cost``: what shadow mode costs the serving path.

Starts a real server on a temporary data dir with a legacy feed for every user,
loads a catalogue and a history, then times ``recommend`` over RPC on one
surface in alternating blocks: ``legacy`` (the feed's list is served, nothing
else runs) and ``shadow`` (the feed's list is served and the real-time answer
is computed off the request path and recorded). Both serve the same list; the
difference is what the shadow work takes from the serving path on the same
2 cores.
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import numpy as np

from matchlight.bench.harness import percentiles, start_server
from matchlight.client import Client
from matchlight.server.node import default_workers

MODES: Final = ("legacy", "shadow")
#: Items per ``upsert_items`` call, events per ``ingest`` call while loading.
LOAD_BATCH: Final = 5000
HISTORY_EVENTS: Final = 50_000


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``matchlight bench shadow-cost``."""
    parser.add_argument("--items", type=int, default=20_000, help="catalogue size")
    parser.add_argument("--users", type=int, default=2_000, help="users in the legacy feed")
    parser.add_argument("--requests", type=int, default=4_000, help="timed per mode")
    parser.add_argument("--block", type=int, default=500, help="requests per alternating block")
    parser.add_argument("--seed", type=int, default=1, help="workload seed")
    parser.add_argument(
        "--shadow-share", type=float, default=1.0, help="share of shadow-mode requests shadowed"
    )
    parser.add_argument(
        "--workers",
        default=f"1,{default_workers()}",
        help="comma-separated `serve --workers` counts, each timed on a fresh server (with "
        "two readers or more, a reader hands its shadow work to another)",
    )


def main(args: argparse.Namespace) -> int:
    """Time both modes on a server per ``--workers`` count; print their latency and the shadow
    work done."""
    for workers in (int(w) for w in args.workers.split(",")):
        rng = random.Random(args.seed)
        with tempfile.TemporaryDirectory(prefix="matchlight-shadow-") as tmp:
            feed = Path(tmp) / "feed.jsonl"
            _write_feed(feed, args, rng)
            server = start_server(
                Path(tmp) / "data",
                *("--legacy-feed", str(feed), "--workers", str(workers)),
                log_level="WARNING",
            )
            try:
                with Client("127.0.0.1", server.port, timeout=60) as c:
                    _load(c, args, rng)
                    samples = _time_modes(c, args, rng)
                    stats = _after_the_last_shadow(c)
            finally:
                server.stop()
        print_report(args, samples, stats, workers)
    return 0


def _write_feed(feed: Path, args: argparse.Namespace, rng: random.Random) -> None:
    """A legacy feed line of 20 random items on surface ``home`` for every user."""
    with open(feed, "w") as f:
        for u in range(args.users):
            items = rng.sample(range(args.items), 20)
            line = {"user": f"u{u}", "surface": "home", "items": [f"i{i}" for i in items]}
            f.write(json.dumps(line) + "\n")


def _load(c: Client, args: argparse.Namespace, rng: random.Random) -> None:
    """The catalogue (a topic of 50 per item), then :data:`HISTORY_EVENTS` events."""
    topics = [f"t{n}" for n in range(50)]
    for lo in range(0, args.items, LOAD_BATCH):
        batch = [
            {"id": f"i{i}", "kind": "pro", "terms": {"topic": rng.choice(topics)}}
            for i in range(lo, min(lo + LOAD_BATCH, args.items))
        ]
        c.call("upsert_items", {"items": batch})
    events = [
        {
            "id": f"e{n}",
            "type": rng.choice(("view", "like", "save")),
            "user": f"u{rng.randrange(args.users)}",
            "item": f"i{int(rng.paretovariate(1.0)) % args.items}",
            "ts": 1.7e9 + n,
        }
        for n in range(HISTORY_EVENTS)
    ]
    for lo in range(0, len(events), LOAD_BATCH):
        c.call("ingest", {"events": events[lo : lo + LOAD_BATCH]})


def _time_modes(c: Client, args: argparse.Namespace, rng: random.Random) -> dict[str, list[float]]:
    """``recommend`` timings (s) per mode, switching mode every ``--block`` requests.

    The first tenth of each block warms up and is not kept.
    """
    samples: dict[str, list[float]] = {mode: [] for mode in MODES}
    n = 0
    while min(len(s) for s in samples.values()) < args.requests:
        mode = MODES[(n // args.block) % 2]
        if n % args.block == 0:
            change: dict[str, Any] = {"surface": "home", "mode": mode}
            if mode == "shadow":
                change["shadow_share"] = args.shadow_share
            c.call("set_migration", change)
        user = f"u{rng.randrange(args.users)}"
        t0 = time.perf_counter()
        answer = c.call("recommend", {"user": user, "surface": "home", "k": 10})
        elapsed = time.perf_counter() - t0
        assert answer["source"] == "legacy", answer["source"]
        if n % args.block >= args.block // 10:
            samples[mode].append(elapsed)
        n += 1
    return samples


def _after_the_last_shadow(c: Client, limit_s: float = 30.0) -> dict[str, Any]:
    """``stats`` once the comparison records stop growing (shadows handed to another
    reader may still be running when the last request is answered)."""
    stats: dict[str, Any] = c.call("stats")
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        time.sleep(0.5)
        now: dict[str, Any] = c.call("stats")
        if now["comparisons_kept"] == stats["comparisons_kept"]:
            return now
        stats = now
    return stats


def print_report(
    args: argparse.Namespace, samples: dict[str, list[float]], stats: dict[str, Any], workers: int
) -> None:
    """p50, p99 and mean per mode, the ratios, and the server's shadow counters."""
    print(
        f"\n--workers {workers}: recommend over RPC, {args.items:,} items, {args.users:,} users "
        f"in the feed, {args.requests:,} requests per mode in alternating blocks of {args.block}"
    )
    print(f"{'mode':<8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    figures = {}
    for mode, values in samples.items():
        ms = np.array(values[: args.requests]) * 1000
        p50, p99 = percentiles(ms, (50, 99))
        figures[mode] = (p50, p99, float(ms.mean()))
        print(f"{mode:<8} {p50:>8.3f} {p99:>8.3f} {figures[mode][2]:>8.3f}")
    p50_ratio = figures["shadow"][0] / figures["legacy"][0]
    p99_ratio = figures["shadow"][1] / figures["legacy"][1]
    print(f"shadow / legacy p50: {p50_ratio:.2f}x (target ≤ 1.10x); p99: {p99_ratio:.2f}x")
    print(
        f"shadow computations {stats['shadows']:,}, skipped when 64 were running: "
        f"{stats['shadows_skipped']:,}; comparisons kept {stats['comparisons_kept']:,}"
    )
