"""``recommend`` over RPC against the real server, ``matchlight train`` beside it, surfaces config.

A model trained by a separate ``matchlight train`` process while the server
runs is swapped in without a failed request; a surfaces file shapes what a
surface retrieves; bad requests are ``bad_request`` and the server serves on;
every response is in the decision log after a clean stop.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from matchlight.client import Client
from matchlight.errors import RpcError
from ranker import DecisionLog
from tests.system.conftest import REPO_ROOT, server_env

if TYPE_CHECKING:
    from tests.system.conftest import ServerProcess, StartServer

pytestmark = pytest.mark.system

TRAIN = (sys.executable, "-m", "matchlight.cli", "train")
SERVE = (sys.executable, "-m", "matchlight.cli", "serve")
CATEGORIES = ("gardening", "plumbing", "roofing", "painting")
CITIES = ("austin", "boston")


def catalogue() -> list[dict[str, Any]]:
    return [
        {
            "id": f"pro-{n}",
            "kind": "pro",
            "terms": {"category": CATEGORIES[n % 4], "city": CITIES[(n // 4) % 2]},
            "numbers": {"rate": 40.0 + n},
        }
        for n in range(80)
    ]


def history(users: int = 40, per_user: int = 12) -> list[dict[str, Any]]:
    """Users who stick to one category each (user u likes category u % 4)."""
    events = []
    for u in range(users):
        for j in range(per_user):
            item = 4 * ((u * 7 + j * 3) % 20) + u % 4
            events.append(
                {
                    "id": f"h-{u}-{j}",
                    "type": "like" if j % 3 else "view",
                    "user": f"user-{u}",
                    "item": f"pro-{item}",
                    "ts": 1.7e9 + u * 100 + j,
                }
            )
    return events


def recommend(client: Client, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = client.call("recommend", params)
    return result


def run_train(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*TRAIN, "--data", str(data), *args],
        cwd=REPO_ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_recommend_answers_with_the_heuristic_ranker_before_any_model(
    server: ServerProcess,
) -> None:
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    client.call("ingest", {"events": history()})

    result = recommend(client, user="user-3", surface="home", k=5, explain=True)

    assert result["source"] == "realtime"
    assert result["model"] is None
    assert result["ranker"] == "heuristic"
    assert result["surface"] == "default"  # unknown surfaces use the default policy
    assert len(result["request_id"]) == 32
    assert len(result["items"]) == 5
    seen = {e["item"] for e in history() if e["user"] == "user-3"}
    assert not seen & {item["id"] for item in result["items"]}
    assert all("reasons" in item for item in result["items"])
    # user-3 likes category 3 (painting): their affinity puts painters first.
    first = client.call("get_item", {"id": result["items"][0]["id"]})
    assert first["terms"]["category"] == ["painting"]


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({}, "missing field 'user'"),
        ({"user": "u", "k": 0}, "k: expected an integer"),
        ({"user": "u", "k": "ten"}, "k: expected an integer"),
        ({"user": "u", "context": [1]}, "context: expected a map"),
        ({"user": "u", "context": {"city": {"a": 1}}}, "context.city"),
        ({"user": "u", "explain": 1}, "explain: expected true or false"),
        ({"user": "u", "filter": {"term": ["nope", "x"]}}, "unknown term field 'nope'"),
        ({"user": "u", "filter": {"range": ["rate", 5]}}, "filter.range"),
        ({"user": "u", "limit": 3}, "unknown field 'limit'"),
    ],
)
def test_bad_recommend_params_are_bad_requests_and_the_server_serves_on(
    shared_server: ServerProcess, params: dict[str, Any], message: str
) -> None:
    client = shared_server.client()
    client.call("upsert_items", {"items": catalogue()})
    with pytest.raises(RpcError) as excinfo:
        client.call("recommend", params)
    assert excinfo.value.code == "bad_request"
    assert message in excinfo.value.message
    assert len(recommend(client, user="u", k=3)["items"]) == 3


def test_a_model_trained_beside_the_running_server_is_swapped_in_without_failures(
    start_server: StartServer,
) -> None:
    server = start_server("--model-poll", "0.2")
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    client.call("ingest", {"events": history()})
    assert recommend(client, user="user-1", k=5)["model"] is None

    trainer = subprocess.Popen(
        [*TRAIN, "--data", str(server.data), "--epochs", "5", "--threads", "1"],
        cwd=REPO_ROOT,
        env=server_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    answers: list[dict[str, Any]] = []
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        # Requests run all along: none may fail while the model is trained and swapped in.
        answers.append(recommend(client, user=f"user-{len(answers) % 40}", k=5))
        if answers[-1]["model"] is not None and trainer.poll() is not None:
            break
    out, err = trainer.communicate(timeout=60)
    assert trainer.returncode == 0, err
    version = answers[-1]["model"]
    assert version is not None, "the server never picked up the trained model"
    assert f"model {version}:" in out
    assert answers[-1]["ranker"] == "lightfm"
    assert all(len(a["items"]) == 5 for a in answers)
    stats = client.call("stats")
    assert stats["model"] == version
    assert stats["model_swaps"] == 1

    # A restart loads the current model at once.
    server.restart()
    assert recommend(server.client(), user="user-1", k=5)["model"] == version


def test_train_refuses_an_empty_or_missing_store(tmp_path: Path) -> None:
    missing = run_train(tmp_path / "nothing-here")
    assert missing.returncode == 1
    assert "no event store" in missing.stderr


def test_a_surface_config_shapes_retrieval_from_the_request_context(
    start_server: StartServer, tmp_path: Path
) -> None:
    config = tmp_path / "surfaces.toml"
    config.write_text(
        """
[surfaces.local_pros]
k = 4
retrieval = { all = [ { term = ["kind", "pro"] }, { term = ["city", "$context.city"] } ] }

[[surfaces.local_pros.rules]]
action = "filter"
query = { range = ["rate", 50, inf] }
"""
    )
    server = start_server("--config", str(config))
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})

    result = recommend(client, user="someone", surface="local_pros", context={"city": "boston"})

    assert result["surface"] == "local_pros"
    assert len(result["items"]) == 4
    for item in result["items"]:
        state = client.call("get_item", {"id": item["id"]})
        assert state["terms"]["city"] == ["boston"]
        assert state["numbers"]["rate"] >= 50
    # Without the context value the city clause is dropped, not failed.
    assert len(recommend(client, user="someone", surface="local_pros")["items"]) == 4


def test_serve_refuses_a_bad_surface_config_naming_the_key(tmp_path: Path) -> None:
    config = tmp_path / "surfaces.toml"
    config.write_text('[surfaces.home]\nk = 10\n[surfaces.home.blend]\nmodel = "high"\n')
    proc = subprocess.run(
        [*SERVE, "--data", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "--config", str(config)],
        cwd=REPO_ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 2
    assert "surfaces.home.blend.model" in proc.stderr


def test_every_response_is_in_the_decision_log_after_a_clean_stop(server: ServerProcess) -> None:
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    client.call("ingest", {"events": history()})
    results = [recommend(client, user=f"user-{n}", k=3) for n in range(25)]
    assert server.terminate() == 0

    with DecisionLog(server.data / "decisions") as log:
        records = log.read(limit=100)
    assert [r["request_id"] for r in records] == [r["request_id"] for r in results]
    for record, result in zip(records, results, strict=True):
        assert record["items"] == [item["id"] for item in result["items"]]
        assert record["propensities"] == [1.0, 1.0, 1.0]
        assert record["surface"] == "default"
        assert record["model"] is None
        assert record["latency_ms"] > 0


def test_a_stochastic_surface_serves_and_logs_each_slots_probabilities_over_rpc(
    start_server: StartServer, tmp_path: Path
) -> None:
    config = tmp_path / "surfaces.toml"
    config.write_text("[surfaces.feed]\nk = 4\n[surfaces.feed.stochastic]\ntemperature = 1.5\n")
    server = start_server("--config", str(config))
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    client.call("ingest", {"events": history()})

    first = recommend(client, user="user-1", surface="feed", explain=True)
    again = recommend(client, user="user-1", surface="feed")
    assert server.terminate() == 0

    assert [i["id"] for i in again["items"]] == [i["id"] for i in first["items"]]
    with DecisionLog(server.data / "decisions") as log:
        record = log.read(limit=10)[0]
    assert record["request_id"] == first["request_id"]
    assert len(record["position_propensities"]) == len(record["conditional_propensities"]) == 4
    for slot, item in enumerate(first["items"]):
        reason = item["reasons"]["exploration"]
        assert reason["slot"] == "stochastic"
        assert reason["position_propensity"] == record["position_propensities"][slot]
        assert 0 < reason["conditional_propensity"] <= 1
