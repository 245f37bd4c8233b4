"""An interleaving experiment through the real server: a surface in ``interleave`` serves
merged lists from a writer and reader workers, clients click the real-time team's items
(naming the request, or not), and ``matchlight shadow-report`` finds real time preferred."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from ranker.decisions import iter_records
from tests.system.conftest import run_cli

if TYPE_CHECKING:
    from tests.system.conftest import StartServer

pytestmark = pytest.mark.system

USERS = [f"u{n}" for n in range(60)]
FEED = [f"pro-{n}" for n in range(8)]
K = 6


def test_an_interleaving_experiment_finds_the_list_users_engage_with(
    start_server: StartServer, tmp_path: Path
) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_text(
        "".join(json.dumps({"user": u, "surface": "home", "items": FEED}) + "\n" for u in USERS)
    )
    server = start_server("--legacy-feed", str(feed), "--workers", "3")
    client = server.client()
    pros = [{"id": f"pro-{n}", "kind": "pro", "terms": {"city": "austin"}} for n in range(40)]
    client.call("upsert_items", {"items": pros})
    # Others liked pro-20 … pro-29: the real-time path ranks them, the feed never does.
    likes = [
        {
            "id": f"seed-{n}",
            "type": "like",
            "user": f"fan{n % 7}",
            "item": f"pro-{20 + n % 10}",
            "ts": time.time(),
        }
        for n in range(70)
    ]
    client.call("ingest", {"events": likes})
    state = client.call("set_migration", {"surface": "home", "mode": "interleave", "percent": 100})
    assert (state["mode"], state["percent"]) == ("interleave", 100.0)

    clicked = 0
    for n, user in enumerate(USERS):
        answer = client.call("recommend", {"user": user, "surface": "home", "k": K})
        assert answer["source"] == "interleaved"
        ids = [item["id"] for item in answer["items"]]
        assert len(ids) == K
        assert len(set(ids) & set(FEED)) >= K // 2 - 1  # the feed's team took its turns
        theirs = [item for item in ids if item not in FEED]  # only the real-time team has these
        if not theirs:
            continue
        props = {"request_id": answer["request_id"]} if n % 2 else {}
        event = {
            "id": f"click-{n}",
            "type": "click",
            "user": user,
            "item": theirs[0],
            "ts": time.time(),
            "props": props,
        }
        client.call("ingest", {"events": [event]})
        clicked += 1
    assert clicked >= 40
    deadline = time.monotonic() + 10
    while client.call("stats")["served_interleaved"] < len(USERS):
        assert time.monotonic() < deadline
        time.sleep(0.1)

    # Read while the server runs (its records are flushed every 100 ms).
    report_json = tmp_path / "report.json"
    deadline = time.monotonic() + 10
    while True:
        result = run_cli(
            "shadow-report",
            "--data",
            str(server.data),
            "--surface",
            "home",
            "--json",
            str(report_json),
        )
        assert result.returncode == 0, result.stderr
        found: dict[str, Any] = json.loads(report_json.read_text())["surfaces"]["home"][
            "interleaving"
        ]
        if found["impressions"] == len(USERS) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (found["impressions"], found["wins"], found["losses"]) == (len(USERS), clicked, 0)
    assert found["ties"] == len(USERS) - clicked
    assert found["preference"] == 1.0
    assert found["verdict"] == "real time preferred"
    assert found["by_activity"]["<10"]["wins"] == clicked
    assert "real time preferred" in result.stdout

    # The real-time side of each interleaved list is logged as not shown as ranked.
    deadline = time.monotonic() + 10
    while True:
        unshown = [r for r in iter_records(server.data / "decisions") if r.get("shown") is False]
        if len(unshown) == len(USERS) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert len(unshown) == len(USERS)
