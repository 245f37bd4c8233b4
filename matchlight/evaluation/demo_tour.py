"""The demo's tour of a real server: explained recommendations, then a ``kill -9``.

Steps 2 and 3 of ``matchlight demo``: start ``matchlight serve`` on a
temporary data directory with two surfaces (:data:`SURFACES`: ``home`` and
the two-sided ``pro_match``), load the synthetic marketplace over
msgpack-RPC, train a model beside it with ``matchlight train`` (the server
swaps it in), and show a few recommendations with their explanations: the
busiest consumer, a newcomer before and after one like, and a job's
two-sided match. Then kill the server with SIGKILL, restart it, and check
that every acknowledged event survived exactly once.
"""

from __future__ import annotations

import subprocess
import time
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from matchlight.bench.harness import matchlight_command, start_server
from matchlight.client import Client
from matchlight.evaluation.demo_console import progress, say
from matchlight.evaluation.synthetic import Marketplace

SURFACES: Final = """
[surfaces.home]
k = 5
blend = { model = 1.0, affinity = 0.3 }
diversity = { field = "category", max_per_value = 3 }

[surfaces.pro_match]
k = 5
retrieval = { all = [ { term = ["kind", "pro"] }, { term = ["city", "$context.city"] } ] }
# The job's own terms (category, city) narrow retrieval to the pros carrying them and
# lead the score ("fit"); willingness is each pro's accept/decline history on such jobs.
reciprocal = { job = "job", prior = 0.5, strength = 3.0, fit = 1.0 }
"""
#: Items or events per RPC call when loading the marketplace.
LOAD_CHUNK: Final = 2000
#: How long to wait for the server to serve the model ``matchlight train`` wrote.
MODEL_WAIT_S: Final = 30.0

#: An explained example: its title, one line per item, and the model that answered.
Example = dict[str, Any]


def tour(data: Path, market: Marketplace) -> tuple[bool, list[Example]]:
    """Steps 2 and 3: explained examples from a real server on ``data``, then ``kill -9``.

    Returns whether every acknowledged event survived the kill, and the examples.
    """
    config = data.parent / "surfaces.toml"
    config.write_text(SURFACES)
    server = start_server(data, "--config", str(config), "--model-poll", "0.5", log_level="WARNING")
    try:
        with Client("127.0.0.1", server.port, timeout=60) as c:
            count = _load(c, market)
            _train_beside(c, data)
            examples, like = _examples(c, market)
            before = c.call("stats")["log_seq"]
        say("3. kill -9 the server (no chance to flush anything) and restart it")
        server.kill()
        started = time.perf_counter()
        server = start_server(data, "--config", str(config), log_level="WARNING")
        say(f"   ready again in {time.perf_counter() - started:.2f} s")
        return _survived(server.port, before, like, count), examples
    finally:
        server.stop(timeout=30)


def _load(c: Client, market: Marketplace) -> int:
    """Upsert the marketplace's items, then ingest its events; how many events."""
    items = list(market.items())
    events = list(market.events())
    for lo in range(0, len(items), LOAD_CHUNK):
        c.call("upsert_items", {"items": items[lo : lo + LOAD_CHUNK]})
    started = time.perf_counter()
    for lo in range(0, len(events), LOAD_CHUNK):
        c.call("ingest", {"events": events[lo : lo + LOAD_CHUNK]})
    rate = len(events) / (time.perf_counter() - started)
    progress(f"{len(events):,} events acknowledged (durable) at {rate:,.0f}/s")
    return len(events)


def _train_beside(c: Client, data: Path) -> None:
    """``matchlight train`` on the server's data directory; wait (bounded) until it serves it."""
    say("   training a model beside the running server (matchlight train)")
    subprocess.run(
        matchlight_command("train", "--data", str(data), "--epochs", "20", log_level="WARNING"),
        check=True,
    )
    deadline = time.monotonic() + MODEL_WAIT_S
    while c.call("stats")["model"] is None and time.monotonic() < deadline:
        time.sleep(0.2)


def _examples(c: Client, market: Marketplace) -> tuple[list[Example], dict[str, Any]]:
    """The explained examples, and the newcomer's like (sent once; the restart resends it).

    The busiest consumer's home, a newcomer's, the newcomer's again right
    after one like, and the pros for the most answered job (two-sided).
    """
    busiest = Counter(
        e["user"] for e in market.events() if e["user"].startswith("consumer-")
    ).most_common(1)[0][0]
    examples = [
        _example(c, f"home for {busiest}", {"user": busiest, "surface": "home"}),
        _example(c, "home for a newcomer", {"user": "newcomer", "surface": "home"}),
    ]
    like = _newcomer_like(market)
    c.call("ingest", {"events": [like]})
    liked = like["item"]
    examples.append(
        _example(
            c,
            f"home for the newcomer right after liking {liked} ({_terms(c, liked)})",
            {"user": "newcomer", "surface": "home"},
        )
    )
    job, params = two_sided_example(market)
    terms = job["terms"]
    title = f"pros for {job['id']} ({terms['category']} in {terms['city']}), two-sided"
    examples.append(_example(c, title, params))
    return examples, like


def _newcomer_like(market: Marketplace) -> dict[str, Any]:
    """The newcomer's like of the first pro, just after the marketplace's last event.

    Not at the wall clock: months later every pro's accept/decline history
    would have decayed away (willingness at the prior).
    """
    liked = next(item["id"] for item in market.items() if item["kind"] == "pro")
    last = max(event["ts"] for event in market.events())
    return {"id": "demo-like", "type": "like", "user": "newcomer", "item": liked, "ts": last + 60.0}


def _survived(port: int, before: int, like: Mapping[str, Any], count: int) -> bool:
    """Whether the restarted server's log is as before the kill and the like is a duplicate."""
    with Client("127.0.0.1", port, timeout=60) as c:
        after = c.call("stats")["log_seq"]
        resent = c.call("ingest", {"events": [like]})
    say(
        f"   log holds {after:,} entries before and after ({count:,} events); "
        f"the resent event is a duplicate: {resent['duplicates'] == 1}"
    )
    return bool(after == before and resent["duplicates"] == 1)


def _terms(c: Client, item_id: str) -> str:
    """An item's category and city, as ``category/city``."""
    state = c.call("get_item", {"id": item_id})
    terms = state["terms"]
    return "/".join(v for field in ("category", "city") for v in terms.get(field, []))


def _example(c: Client, title: str, params: dict[str, Any]) -> Example:
    """Ask ``recommend`` with explanations; print and return one line per item."""
    answer: dict[str, Any] = c.call("recommend", {**params, "explain": True})
    say(f"   {title}  [{answer['ranker']}, model {answer['model']}]")
    rows = []
    for item in answer["items"]:
        line = f"{item['id']:<9} {_terms(c, item['id']):<22} {_why(item['reasons'])}"
        say(f"     {line}")
        rows.append(line)
    return {"title": title, "rows": rows, "model": answer["model"]}


def _why(reasons: Mapping[str, Any]) -> str:
    """An item's explanation on one line: score parts, two-sided figures, matched terms."""
    why = ", ".join(f"{k} {v:+.2f}" for k, v in reasons["parts"].items())
    if "reciprocal" in reasons:
        r = reasons["reciprocal"]
        why += f"; interest {r['interest']:.2f}, willingness {r['willingness']:.2f}"
        if "fit" in r:
            why += f", fit {r['fit']:.2f}"
    return f"{why}; matched {','.join(reasons['matched']) or '-'}"


def two_sided_example(market: Marketplace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job of the two-sided example and the ``recommend`` params asking pros for it.

    The job most answered: the pros near it have a history to learn willingness from.
    """
    answered = Counter(
        event["item"] for event in market.events() if event["type"] in ("accept", "decline")
    )
    jobs = {item["id"]: item for item in market.items() if item["kind"] == "job"}
    job = jobs[max(jobs, key=lambda j: (answered[j], j))]
    params = {
        "user": "consumer-0",
        "surface": "pro_match",
        "context": {"job": job["id"], "city": job["terms"]["city"]},
    }
    return job, params
