"""``matchlight demo``: real time against the nightly batch, on the synthetic marketplace.

What ``make demo`` runs, in about a minute on a 2-core machine:

1. Replay the synthetic home-services marketplace in time order through the
   engine (:mod:`matchlight.replay`): train on the first 70%, then for every
   positive event ask each system for its top 10 *before* revealing the event.
   Print real time vs the nightly batch vs frozen popularity, overall, by user
   activity and for users who arrived after the nightly run.
2. Start a real server on a temporary data dir, load the same marketplace over
   msgpack-RPC, train a model with ``matchlight train`` beside it (the server
   swaps it in), and show a few recommendations with their explanations: a
   consumer with history, a newcomer before and after one like, and a job's
   two-sided match (pros who take that kind of job rise, those who decline sink).
3. ``kill -9`` the server, restart it, and check that every acknowledged event
   survived exactly once.

It writes the comparison and the examples to an HTML report (``--html``,
default ``matchlight-demo.html``).
"""

from __future__ import annotations

import argparse
import html
import json
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Final

import trio

from matchlight.bench import start_server
from matchlight.client import Client
from matchlight.replay import BUCKETS, SYSTEMS, ReplayConfig, format_table, replay
from matchlight.synthetic import MarketplaceConfig, generate
from ranker import TrainingConfig

TRAIN: Final = (sys.executable, "-m", "matchlight.cli", "--log-level", "WARNING", "train")
SURFACES: Final = """
[surfaces.home]
k = 5
blend = { model = 1.0, affinity = 0.3 }
diversity = { field = "category", max_per_value = 3 }

[surfaces.pro_match]
k = 5
retrieval = { all = [ { term = ["kind", "pro"] }, { term = ["city", "$context.city"] } ] }
reciprocal = { job = "job", prior = 0.5, strength = 3.0 }
"""


def _say(message: str) -> None:
    print(message, flush=True)


def _progress(message: str) -> None:
    print(f"   … {message}", file=sys.stderr, flush=True)


def _replay(market: Any) -> dict[str, Any]:
    config = ReplayConfig(training=TrainingConfig(epochs=20, seed=7, threads=1))
    results: dict[str, Any] = trio.run(lambda: replay(market.records, config, progress=_progress))
    return results


def _load(c: Client, market: Any) -> int:
    items = [body for kind, body in market.records if kind == "item"]
    events = [body for kind, body in market.records if kind == "event"]
    for lo in range(0, len(items), 2000):
        c.call("upsert_items", {"items": items[lo : lo + 2000]})
    started = time.perf_counter()
    for lo in range(0, len(events), 2000):
        c.call("ingest", {"events": events[lo : lo + 2000]})
    rate = len(events) / (time.perf_counter() - started)
    _progress(f"{len(events):,} events acknowledged (durable) at {rate:,.0f}/s")
    return len(events)


def _terms(c: Client, item_id: str) -> str:
    state = c.call("get_item", {"id": item_id})
    terms = state["terms"]
    return "/".join(v for field in ("category", "city") for v in terms.get(field, []))


def _example(c: Client, title: str, params: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = c.call("recommend", {**params, "explain": True})
    _say(f"   {title}  [{answer['ranker']}, model {answer['model']}]")
    rows = []
    for item in answer["items"]:
        reasons = item["reasons"]
        why = ", ".join(f"{k} {v:+.2f}" for k, v in reasons["parts"].items())
        extra = ""
        if "reciprocal" in reasons:
            r = reasons["reciprocal"]
            extra = f"; interest {r['interest']:.2f}, willingness {r['willingness']:.2f}"
        matched = ",".join(reasons["matched"]) or "-"
        line = f"{item['id']:<9} {_terms(c, item['id']):<22} {why}{extra}; matched {matched}"
        _say(f"     {line}")
        rows.append(line)
    return {"title": title, "rows": rows, "model": answer["model"]}


def _tour(data: Path, market: Any) -> tuple[bool, list[dict[str, Any]]]:
    config = data.parent / "surfaces.toml"
    config.write_text(SURFACES)
    proc, port = start_server(data, "--config", str(config), "--model-poll", "0.5")
    examples: list[dict[str, Any]] = []
    try:
        with Client("127.0.0.1", port, timeout=60) as c:
            count = _load(c, market)
            _say("   training a model beside the running server (matchlight train)")
            subprocess.run([*TRAIN, "--data", str(data), "--epochs", "20"], check=True)
            deadline = time.monotonic() + 30
            while c.call("stats")["model"] is None and time.monotonic() < deadline:
                time.sleep(0.2)
            consumers = Counter(
                body["user"]
                for kind, body in market.records
                if kind == "event" and body["user"].startswith("consumer-")
            )
            busiest = consumers.most_common(1)[0][0]
            examples.append(
                _example(c, f"home for {busiest}", {"user": busiest, "surface": "home"})
            )
            examples.append(
                _example(c, "home for a newcomer", {"user": "newcomer", "surface": "home"})
            )
            liked = next(
                body["id"]
                for kind, body in market.records
                if kind == "item" and body["kind"] == "pro"
            )
            event = {"id": "demo-like", "type": "like", "user": "newcomer", "item": liked}
            c.call("ingest", {"events": [{**event, "ts": time.time()}]})
            examples.append(
                _example(
                    c,
                    f"home for the newcomer right after liking {liked} ({_terms(c, liked)})",
                    {"user": "newcomer", "surface": "home"},
                )
            )
            # The kind of job most answered: its pros have a history to learn willingness from.
            answered = Counter(
                body["item"]
                for kind, body in market.records
                if kind == "event" and body["type"] in ("accept", "decline")
            )
            jobs = {
                body["id"]: body
                for kind, body in market.records
                if kind == "item" and body["kind"] == "job"
            }
            job = jobs[max(jobs, key=lambda j: (answered[j], j))]
            city = job["terms"]["city"]
            examples.append(
                _example(
                    c,
                    f"pros for {job['id']} ({job['terms']['category']} in {city}), two-sided",
                    {
                        "user": "consumer-0",
                        "surface": "pro_match",
                        "context": {"job": job["id"], "city": city},
                    },
                )
            )
            before = c.call("stats")["log_seq"]
        _say("3. kill -9 the server (no chance to flush anything) and restart it")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        started = time.perf_counter()
        proc, port = start_server(data, "--config", str(config))
        _say(f"   ready again in {time.perf_counter() - started:.2f} s")
        with Client("127.0.0.1", port, timeout=60) as c:
            after = c.call("stats")["log_seq"]
            resent = c.call("ingest", {"events": [{**event, "ts": time.time()}]})
        ok = after == before and resent["duplicates"] == 1
        _say(
            f"   log holds {after:,} entries before and after ({count:,} events); "
            f"the resent event is a duplicate: {resent['duplicates'] == 1}"
        )
        return ok, examples
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _bar(value: float, top: float, color: str) -> str:
    width = 0 if top <= 0 else int(260 * value / top)
    return (
        f'<svg width="300" height="14"><rect width="{width}" height="12" fill="{color}"/>'
        f'<text x="{width + 4}" y="11" font-size="11">{value:.3f}</text></svg>'
    )


def _html(results: dict[str, Any], examples: list[dict[str, Any]], k: int) -> str:
    colors = {"realtime": "#1f77b4", "batch": "#e8710a", "popularity": "#888"}
    groups: list[tuple[str, str | None]] = [("all", None)]
    groups += [(b, "by_activity") for b in BUCKETS]
    groups += [(c, "by_cohort") for c in ("known", "new")]

    def pick(entry: dict[str, Any], name: str, part: str | None) -> dict[str, Any]:
        return entry if part is None else entry[part][name]

    top = max(pick(results[s], n, p)[f"hit_rate@{k}"] for n, p in groups for s in SYSTEMS)
    rows = []
    for name, part in groups:
        for system in SYSTEMS:
            entry = pick(results[system], name, part)
            rows.append(
                f"<tr><td>{html.escape(name)}</td><td>{system}</td><td>{entry['requests']}</td>"
                f"<td>{_bar(entry[f'hit_rate@{k}'], top, colors[system])}</td>"
                f"<td>{entry[f'ndcg@{k}']:.3f}</td></tr>"
            )
    blocks = "".join(
        f"<h3>{html.escape(e['title'])}</h3><pre>{html.escape(chr(10).join(e['rows']))}</pre>"
        for e in examples
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Matchlight demo</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:1100px}}
td,th{{padding:2px 8px;text-align:left}}pre{{background:#f6f6f6;padding:8px}}</style></head>
<body><h1>Real time vs nightly batch on the synthetic marketplace</h1>
<p>Prequential replay: for each positive event on a pro new to the consumer, each system is
asked for its top {k} before the event is revealed. <i>known</i>: consumers with events before
the nightly run; <i>new</i>: consumers who arrived after it.</p>
<table><tr><th>users</th><th>system</th><th>requests</th><th>hit rate@{k}</th>
<th>NDCG@{k}</th></tr>{"".join(rows)}</table>
<h2>Example recommendations, explained</h2>{blocks}
<pre>{html.escape(json.dumps(results["protocol"], indent=1, default=str))}</pre>
</body></html>
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--html",
        default="matchlight-demo.html",
        metavar="FILE",
        help="where to write the HTML report (default matchlight-demo.html)",
    )


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    market = generate(MarketplaceConfig())
    events = sum(1 for kind, _ in market.records if kind == "event")
    _say(
        f"1. replaying the synthetic marketplace ({events:,} events: 3,000 consumers, "
        "1,500 pros, 800 jobs) through the engine, in time order"
    )
    results = _replay(market)
    k = 10
    _say(format_table(results, k))
    rt, batch = results["realtime"], results["batch"]
    new_rt, new_batch = (
        results[s]["by_cohort"]["new"][f"hit_rate@{k}"] for s in ("realtime", "batch")
    )
    _say(
        f"   real time hits {rt[f'hit_rate@{k}']:.1%} of next choices, the nightly batch "
        f"{batch[f'hit_rate@{k}']:.1%}; for consumers who arrived after the nightly run "
        f"{new_rt:.1%} vs {new_batch:.1%}"
    )
    _say("2. a real server on a temporary data dir: load, train beside it, recommend")
    with tempfile.TemporaryDirectory(prefix="matchlight-demo-") as tmp:
        ok, examples = _tour(Path(tmp) / "data", market)
    Path(args.html).write_text(_html(results, examples, k))
    _say(f"HTML report: {args.html}")
    beats = rt[f"hit_rate@{k}"] > batch[f"hit_rate@{k}"]
    _say(
        f"demo finished in {time.perf_counter() - started:.0f} s: "
        + (
            "real time beat the batch; every acknowledged event survived"
            if ok and beats
            else "MISMATCH"
        )
    )
    return 0 if ok and beats else 1
