"""``matchlight explain`` against decisions a real server took, run beside it.

A server takes decisions with no model, after a model is swapped in, after a
second one replaces it, and after a restart with a changed surfaces config
(diversity, seeded exploration and a two-sided surface among them); ``explain``
rebuilds every one exactly, says so, and reports that the config file changed
once it has; ``train --keep-models 1`` keeps the older model the decisions
name. Unknown ids and directories that are not data directories fail in one
line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from matchlight.client import Client
from ranker.decisions import find_decision
from tests.system.conftest import run_cli, wait_for
from tests.system.test_recommend import catalogue, history, run_train

if TYPE_CHECKING:
    from tests.system.conftest import ServerProcess, StartServer

pytestmark = pytest.mark.system

CONFIG = """
[surfaces.home]
k = 6
[surfaces.home.diversity]
field = "category"
max_per_value = 2
[surfaces.home.exploration]
share = {share}
seed = 7

[surfaces.match]
k = 4
retrieval = {{ term = ["kind", "pro"] }}
[surfaces.match.reciprocal]
job = "job"
"""

REQUESTS: tuple[dict[str, Any], ...] = (
    {"user": "user-1", "surface": "home"},
    {"user": "user-2", "surface": "home", "k": 4, "filter": {"term": ["city", "boston"]}},
    {"user": "user-3", "k": 5},
    {"user": "user-4", "surface": "match", "context": {"job": "job-1"}},
)


def jobs_and_answers() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Two jobs, and pros who accepted or declined roofing jobs before (two-sided history)."""
    jobs = [{"id": f"job-{n}", "kind": "job", "terms": {"category": "roofing"}} for n in (1, 2)]
    events = [
        {
            "id": f"answer-{n}",
            "type": "accept" if n % 2 else "decline",
            "user": f"pro-{n}",
            "item": "job-2",
            "ts": 1.7e9 + 5000 + n,
        }
        for n in range(0, 40, 3)
    ]
    return jobs, events


def serve_round(client: Client, served: list[dict[str, Any]]) -> None:
    for params in REQUESTS:
        served.append(client.call("recommend", params))


def train_and_wait(server: ServerProcess, client: Client, *args: str) -> str:
    trained = run_train(
        server.data, "--epochs", "2", "--threads", "1", "--features", "identity", *args
    )
    assert trained.returncode == 0, trained.stderr
    version = trained.stdout.split()[1].rstrip(":")

    def swapped() -> bool:
        answer: dict[str, Any] = client.call("recommend", {"user": "nobody", "k": 1})
        return bool(answer["model"] == version)

    wait_for(f"the server serves model {version}", swapped)
    return version


def explain(server: ServerProcess, request_id: str, *args: str) -> Any:
    wait_for(
        f"decision {request_id} recorded",
        lambda: find_decision(server.data / "decisions", request_id) is not None,
    )
    return run_cli("explain", "--data", str(server.data), "--request-id", request_id, *args)


def test_explain_rebuilds_decisions_across_model_swaps_and_a_config_change(
    start_server: StartServer, tmp_path: Path
) -> None:
    config = tmp_path / "surfaces.toml"
    config.write_text(CONFIG.format(share=0.5))
    server = start_server("--config", str(config), "--model-poll", "0.2")
    client = server.client()
    jobs, answers = jobs_and_answers()
    client.call("upsert_items", {"items": catalogue() + jobs})
    client.call("ingest", {"events": history() + answers})
    served: list[dict[str, Any]] = []
    serve_round(client, served)  # no model yet
    first = train_and_wait(server, client)
    serve_round(client, served)
    client.call("ingest", {"events": [{**e, "id": f"more-{e['id']}"} for e in history(8, 3)]})
    # Only the newest model need stay, but decisions name the first: it stays too.
    second = train_and_wait(server, client, "--keep-models", "1")
    assert (server.data / "models" / first).is_dir()
    serve_round(client, served)
    config.write_text(CONFIG.format(share=0.25))
    server.restart()
    client = server.client()
    serve_round(client, served)
    assert [s["model"] for s in served[::4]] == [None, first, second, second]

    explored: list[dict[str, Any]] = []
    for answer in served:  # beside the running server
        result = explain(server, answer["request_id"], "--json")
        assert result.returncode == 0, result.stdout + result.stderr
        view = json.loads(result.stdout)
        assert view["identical"] is True
        assert [(i["id"], i["score"]) for i in view["items"]] == [
            (i["id"], i["score"]) for i in answer["items"]
        ]
        assert all("reasons" in i for i in view["items"])
        explored += [i for i in view["items"] if i["reasons"]["exploration"]["slot"] == "explore"]
    assert explored, "no decision explored: exploration was not replayed"

    # The config file changes again: explain says so, for old and new decisions alike.
    config.write_text(CONFIG.format(share=0.1))
    text = explain(server, served[-4]["request_id"])
    assert text.returncode == 0, text.stderr
    assert "identical to what was served" in text.stdout
    assert "the surfaces config changed since: digest" in text.stdout
    assert "exploration differ" in text.stdout
    text = explain(server, served[0]["request_id"])
    assert "the surfaces config changed since" in text.stdout
    assert f"the model changed since: none then, {second} now" in text.stdout


def test_explain_fails_in_one_line_on_an_unknown_id_or_a_directory_without_data(
    server: ServerProcess, tmp_path: Path
) -> None:
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    answer = client.call("recommend", {"user": "user-1", "k": 3})
    explain(server, answer["request_id"])

    unknown = run_cli("explain", "--data", str(server.data), "--request-id", "f" * 32)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith(f"matchlight explain: no decision {'f' * 32} in ")
    assert unknown.stderr.count("\n") == 1

    nothing = run_cli("explain", "--data", str(tmp_path / "nothing"), "--request-id", "x")
    assert nothing.returncode == 1
    assert "is not a data directory" in nothing.stderr


def test_a_reader_worker_records_its_own_log_position(start_server: StartServer) -> None:
    server = start_server("--workers", "3")
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    client.call("ingest", {"events": history()})
    answers = [client.call("recommend", {"user": f"user-{n}", "k": 4}) for n in range(6)]
    for answer in answers:
        result = explain(server, answer["request_id"])
        assert result.returncode == 0, result.stdout + result.stderr
        assert "identical to what was served" in result.stdout
    record = find_decision(server.data / "decisions", answers[-1]["request_id"])
    assert record is not None
    assert record["log_seq"] == len(catalogue()) + len(history())
