"""``matchlight evaluate --candidate`` on decisions a real server took.

A stochastic surface serves 1,080 slates to simulated users who engage with an
item at a slot with a known probability (the item's appeal times the slot's
examination). From that log: the logged config as the candidate weighs every
slate by exactly 1 (IPS equals what the log earned); a fixed-order candidate's
estimate covers its true engagement, computed from the lists it would have
served (rebuilt by the replay) and the known click model; and a surface that
logged a fixed order cannot support a stochastic candidate (refused, with the
reason).
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from actors import LmdbEventStore
from matchlight.evaluation.candidate import evaluate_candidate
from ranker import load_surfaces
from ranker.decisions import iter_records
from ranker.replay import Replay, request_of
from tests.system.conftest import run_cli

if TYPE_CHECKING:
    from tests.system.conftest import StartServer

pytestmark = pytest.mark.system

LOGGED = """
[surfaces.home]
k = 5
[surfaces.home.stochastic]
temperature = 1.0
pool = 6

[surfaces.plain]
k = 5
"""
FIXED = """
[surfaces.home]
k = 5

[surfaces.plain]
k = 5
"""
STOCHASTIC_PLAIN = """
[surfaces.plain]
k = 5
[surfaces.plain.stochastic]
temperature = 1.0
"""
ITEMS = [f"item-{n}" for n in range(30)]
#: The chance a user engages with an item they examine, and that they examine each slot.
APPEAL = {item: 0.6 if n % 3 == 0 else 0.15 for n, item in enumerate(ITEMS)}
EXAMINE = (0.9, 0.7, 0.5, 0.4, 0.3)


def test_a_candidate_config_is_estimated_from_the_decision_log(
    start_server: StartServer, tmp_path: Path
) -> None:
    logged_file, fixed_file, plain_file = (tmp_path / n for n in ("a.toml", "b.toml", "c.toml"))
    logged_file.write_text(LOGGED)
    fixed_file.write_text(FIXED)
    plain_file.write_text(STOCHASTIC_PLAIN)
    server = start_server("--workers", "1", "--config", str(logged_file))
    client = server.client()
    client.call("upsert_items", {"items": [{"id": i, "kind": "thing"} for i in ITEMS]})
    now = time.time()
    warm = [  # uneven popularity, so that scores differ
        {
            "id": f"w{n}",
            "type": "like",
            "user": f"fan{n % 9}",
            "item": ITEMS[n % 30 // (1 + n % 4)],
            "ts": now,
        }
        for n in range(120)
    ]
    client.call("ingest", {"events": warm})
    rng = random.Random(5)
    clicks = 0
    for n in range(1200):
        user = f"u{n % 200}"
        surface = "plain" if n % 10 == 0 else "home"
        answer = client.call("recommend", {"user": user, "surface": surface})
        events = []
        for slot, item in enumerate(i["id"] for i in answer["items"]):
            if rng.random() < EXAMINE[slot] * APPEAL[item]:
                events.append(
                    {
                        "id": f"c{n}-{slot}",
                        "type": "click",
                        "user": user,
                        "item": item,
                        "ts": time.time(),
                        "props": {"request_id": answer["request_id"]},
                    }
                )
        if events:
            clicks += len(events)
            client.call("ingest", {"events": events})
    assert clicks > 600
    server.terminate()

    # The logged config as the candidate: every weight is 1.
    same = evaluate_candidate(server.data, logged_file, surface="home")
    assert same.decisions == 1080
    ips = {e.estimator: e for e in same.estimates}
    assert ips["ips"].value == pytest.approx(same.logged.value, abs=1e-9)
    assert ips["ips"].ess == pytest.approx(1080)

    # A fixed order: its estimate covers what it would have earned.
    fixed = evaluate_candidate(server.data, fixed_file, surface="home", confidence=0.99)
    truth = true_engagement(server.data, fixed_file)
    for e in fixed.estimates:
        assert e.refused is None, e.refused
        assert e.ci_low <= truth <= e.ci_high, (e, truth)
    assert truth > same.logged.value  # the best items first earn more than a random draw

    # A fixed-order log supports no other order: refused, with the reason (CLI).
    out = tmp_path / "plain.json"
    result = run_cli(
        "evaluate",
        "--data",
        str(server.data),
        "--candidate",
        str(plain_file),
        "--surface",
        "plain",
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    found = json.loads(out.read_text())
    assert found["decisions"] == 120
    assert all("never takes" in (e["refused"] or "") for e in found["estimates"])
    assert "refused: the target policy puts" in result.stdout


def true_engagement(data: Path, candidate_file: Path) -> float:
    """The mean over the logged home decisions of what the candidate's list would earn."""
    candidate = load_surfaces(candidate_file)
    records = sorted(
        (r for r in iter_records(data / "decisions") if r["requested_surface"] == "home"),
        key=lambda r: r["log_seq"],
    )
    values = []
    with LmdbEventStore(data / "events", readonly=True) as store:
        replay = Replay(store)
        for record in records:
            replay.advance_to(record["log_seq"])
            result, _ = replay.recommend(
                request_of(record),
                candidate,
                None,
                now=record["now"],
                tiers=[],
                request_id="truth",
            )
            ids = [item["id"] for item in result.items]
            values.append(sum(EXAMINE[j] * APPEAL[i] for j, i in enumerate(ids)))
    return sum(values) / len(values)
