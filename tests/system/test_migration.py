"""One surface walks legacy → shadow → canary 30% → live over RPC against the real server,
while another stays on the legacy feed throughout.

Checks what each mode serves, that canary membership is sticky (also when the
percent rises, and across a restart), that the real-time path falls back to the
feed when it fails, that comparisons are recorded for the shadow report, and
that ``set_migration`` refuses bad changes.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from legacy_adapter import canary_bucket
from matchlight.errors import RpcError
from ranker import DecisionLog
from tests.system.conftest import REPO_ROOT, server_env

if TYPE_CHECKING:
    from matchlight.client import Client
    from tests.system.conftest import StartServer

pytestmark = pytest.mark.system

USERS = [f"u{n}" for n in range(60)]
K = 5


def feed_lines() -> list[dict[str, Any]]:
    """Yesterday's batch lists: the same 8 items for everyone, per surface."""
    lines = []
    for user in USERS:
        for surface, prefix in (("home", "pro"), ("jobs", "job")):
            items = [f"{prefix}-{n}" for n in range(8)]
            lines.append({"user": user, "surface": surface, "items": items})
    return lines


def catalogue() -> list[dict[str, Any]]:
    pros = [{"id": f"pro-{n}", "kind": "pro", "terms": {"city": "austin"}} for n in range(40)]
    jobs = [{"id": f"job-{n}", "kind": "job", "terms": {"city": "austin"}} for n in range(10)]
    return pros + jobs


def recommend(client: Client, user: str, surface: str = "home") -> dict[str, Any]:
    answer: dict[str, Any] = client.call("recommend", {"user": user, "surface": surface, "k": K})
    return answer


def sources(client: Client, surface: str = "home") -> dict[str, str]:
    return {user: recommend(client, user, surface)["source"] for user in USERS}


def set_migration(client: Client, **params: Any) -> dict[str, Any]:
    state: dict[str, Any] = client.call("set_migration", params)
    return state


# In one process, and as a writer and two readers (the router's state and the feed are
# then shared through the data directory).
@pytest.mark.parametrize("workers", ["1", "3"])
def test_a_surface_walks_from_legacy_to_live_while_another_stays_legacy(
    start_server: StartServer, tmp_path: Path, workers: str
) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_text("\n".join(json.dumps(line) for line in feed_lines()) + "\n")
    server = start_server("--legacy-feed", str(feed), "--workers", workers)
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    legacy_home = [f"pro-{n}" for n in range(K)]

    # legacy: the feed's list; a user the batch never saw gets real time, marked.
    answer = recommend(client, "u1")
    assert answer["source"] == "legacy"
    assert [item["id"] for item in answer["items"]] == legacy_home
    newcomer = recommend(client, "newcomer")
    assert newcomer["source"] == "realtime"
    assert newcomer["feed_missing"] is True
    assert set(sources(client, "jobs").values()) == {"legacy"}

    # shadow: still the feed, and both answers recorded off the request path (a served
    # record and a comparison per request; with workers, by another reader).
    kept = client.call("stats")["comparisons_kept"]
    assert set_migration(client, surface="home", mode="shadow")["mode"] == "shadow"
    assert set(sources(client).values()) == {"legacy"}
    deadline = time.monotonic() + 10
    while client.call("stats")["comparisons_kept"] < kept + 2 * len(USERS):
        assert time.monotonic() < deadline, "shadow comparisons were not recorded"
        time.sleep(0.1)

    # canary 30%: exactly the users whose stable bucket is below 30 move, and stay moved.
    state = set_migration(client, surface="home", mode="canary", percent=30)
    assert (state["mode"], state["percent"]) == ("canary", 30.0)
    expected = {u: "realtime" if canary_bucket(u, "home") < 30 else "legacy" for u in USERS}
    assert 5 < list(expected.values()).count("realtime") < 35
    assert sources(client) == expected
    assert sources(client) == expected  # sticky across requests
    set_migration(client, surface="home", mode="canary", percent=50)
    at_50 = sources(client)
    assert all(at_50[u] == "realtime" for u, s in expected.items() if s == "realtime")
    set_migration(client, surface="home", mode="canary", percent=30)

    server.restart()  # the state and the buckets survive
    client = server.client()
    assert client.call("stats")["migration"]["home"]["mode"] == "canary"
    assert sources(client) == expected
    assert set(sources(client, "jobs").values()) == {"legacy"}

    # live, with the real-time path failing (a deadline it cannot meet): the feed serves.
    set_migration(client, surface="home", mode="live", deadline_ms=0)
    answer = recommend(client, "u2")
    assert answer["source"] == "fallback"
    assert "deadline" in answer["fallback_reason"]
    assert [item["id"] for item in answer["items"]] == legacy_home
    with pytest.raises(RpcError) as excinfo:
        recommend(client, "newcomer")  # no feed list to fall back on
    assert excinfo.value.code == "unavailable"

    set_migration(client, surface="home", mode="live", deadline_ms=2000, reverse_shadow=True)
    assert set(sources(client).values()) == {"realtime"}
    assert set(sources(client, "jobs").values()) == {"legacy"}
    stats = client.call("stats")
    assert stats["served_fallback"] >= 1
    assert stats["feed_entries"] == 2 * len(USERS)
    assert server.terminate() == 0

    with DecisionLog(server.data / "comparisons") as log:
        records = log.read(limit=10_000)
    comparisons = [r for r in records if r["kind"] == "comparison"]
    assert {r["mode"] for r in comparisons} == {"shadow", "live"}
    shadowed = [r for r in comparisons if r["mode"] == "shadow" and r["legacy"]["error"] is None]
    assert all(r["legacy"]["items"][:K] == legacy_home for r in shadowed)
    assert all(len(r["realtime"]["items"]) == K for r in shadowed)
    fallbacks = [r for r in records if r["kind"] == "served" and r["source"] == "fallback"]
    assert fallbacks
    assert all("deadline" in r["reason"] for r in fallbacks)
    assert {r["surface"] for r in records} == {"home"}  # jobs never left legacy

    # The shadow report reads what the server recorded.
    report_json, report_html = tmp_path / "report.json", tmp_path / "report.html"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "matchlight.cli",
            "--log-level",
            "WARNING",
            "shadow-report",
            "--data",
            str(server.data),
            "--json",
            str(report_json),
            "--html",
            str(report_html),
        ],
        cwd=REPO_ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "home" in result.stdout
    report = json.loads(report_json.read_text())
    assert "home" in json.dumps(report)
    assert report_html.read_text().count("<svg") >= 4


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"surface": "home", "mode": "sideways"}, "mode: expected one of"),
        ({"surface": "home", "mode": "canary"}, "percent"),
        ({"surface": "home", "mode": "canary", "percent": 130}, "percent: must lie in [0, 100]"),
        ({"surface": "home", "mode": "live", "deadline_ms": "fast"}, "deadline_ms"),
        ({"surface": "home", "mode": "live", "colour": "red"}, "colour: unknown field"),
        ({"mode": "live"}, "missing field 'surface'"),
    ],
)
def test_bad_migration_changes_are_refused_and_change_nothing(
    start_server: StartServer, tmp_path: Path, params: dict[str, Any], message: str
) -> None:
    server = start_server()
    client = server.client()
    with pytest.raises(RpcError) as excinfo:
        client.call("set_migration", params)
    assert excinfo.value.code == "bad_request"
    assert message in excinfo.value.message
    assert client.call("stats")["migration"] == {}


def test_the_config_file_sets_modes_and_a_later_rpc_change_stands(
    start_server: StartServer, tmp_path: Path
) -> None:
    config = tmp_path / "surfaces.toml"
    config.write_text('[migration.home]\nmode = "canary"\npercent = 10\n')
    server = start_server("--config", str(config))
    client = server.client()
    home = client.call("stats")["migration"]["home"]
    assert (home["mode"], home["percent"], home["origin"]) == ("canary", 10.0, "config")

    set_migration(client, surface="home", mode="live")
    server.restart()
    client = server.client()
    assert client.call("stats")["migration"]["home"]["mode"] == "live"  # the RPC change stands
