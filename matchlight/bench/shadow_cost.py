"""What shadow mode costs the serving path: ``recommend`` latency over RPC, legacy vs shadow.

Starts a real server on a temporary data dir with a legacy feed for every user,
loads a catalogue and a history, then times ``recommend`` on one surface in
alternating blocks: ``legacy`` (the feed's list is served, nothing else runs)
and ``shadow`` (the feed's list is served and the real-time answer is computed
off the request path and recorded). Both serve the same list; the difference
is what the shadow work takes from the serving path on the same 2 cores.

    python matchlight/bench/shadow_cost.py [--items 20000] [--users 2000] [--requests 4000]
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from matchlight.bench.ingest import start_server
from matchlight.client import Client


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--requests", type=int, default=4_000, help="timed per mode")
    parser.add_argument("--block", type=int, default=500, help="requests per alternating block")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--shadow-share", type=float, default=1.0, help="share of shadow-mode requests shadowed"
    )
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="matchlight-shadow-") as tmp:
        feed = Path(tmp) / "feed.jsonl"
        with open(feed, "w") as f:
            for u in range(args.users):
                items = rng.sample(range(args.items), 20)
                line = {"user": f"u{u}", "surface": "home", "items": [f"i{i}" for i in items]}
                f.write(json.dumps(line) + "\n")
        proc, port = start_server(Path(tmp) / "data", "--legacy-feed", str(feed))
        try:
            with Client("127.0.0.1", port, timeout=60) as c:
                topics = [f"t{n}" for n in range(50)]
                for lo in range(0, args.items, 5000):
                    batch = [
                        {"id": f"i{i}", "kind": "pro", "terms": {"topic": rng.choice(topics)}}
                        for i in range(lo, min(lo + 5000, args.items))
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
                    for n in range(50_000)
                ]
                for lo in range(0, len(events), 5000):
                    c.call("ingest", {"events": events[lo : lo + 5000]})
                samples: dict[str, list[float]] = {"legacy": [], "shadow": []}
                modes = ("legacy", "shadow")
                n = 0
                while min(len(s) for s in samples.values()) < args.requests:
                    mode = modes[(n // args.block) % 2]
                    if n % args.block == 0:
                        change = {"surface": "home", "mode": mode}
                        if mode == "shadow":
                            change["shadow_share"] = args.shadow_share
                        c.call("set_migration", change)
                    user = f"u{rng.randrange(args.users)}"
                    t0 = time.perf_counter()
                    answer = c.call("recommend", {"user": user, "surface": "home", "k": 10})
                    elapsed = time.perf_counter() - t0
                    assert answer["source"] == "legacy", answer["source"]
                    if n % args.block >= args.block // 10:  # skip each block's warm-up
                        samples[mode].append(elapsed)
                    n += 1
                stats = c.call("stats")
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=60)
    print(
        f"recommend over RPC, {args.items:,} items, {args.users:,} users in the feed, "
        f"{args.requests:,} requests per mode in alternating blocks of {args.block}"
    )
    print(f"{'mode':<8} {'p50 ms':>8} {'p99 ms':>8} {'mean ms':>8}")
    figures = {}
    for mode, values in samples.items():
        ms = np.array(values[: args.requests]) * 1000
        figures[mode] = (np.percentile(ms, 50), np.percentile(ms, 99), ms.mean())
        p50, p99, mean = figures[mode]
        print(f"{mode:<8} {p50:>8.3f} {p99:>8.3f} {mean:>8.3f}")
    p50_ratio = figures["shadow"][0] / figures["legacy"][0]
    p99_ratio = figures["shadow"][1] / figures["legacy"][1]
    print(f"shadow / legacy p50: {p50_ratio:.2f}x; p99: {p99_ratio:.2f}x")
    print(
        f"shadow computations {stats['shadows']:,}, skipped when 64 were running: "
        f"{stats['shadows_skipped']:,}; comparisons kept {stats['comparisons_kept']:,}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
