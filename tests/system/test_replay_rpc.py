"""``matchlight replay --server``: the protocol driven over msgpack-RPC against a real server."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import trio

from matchlight.evaluation.replay import ReplayConfig, replay
from matchlight.evaluation.synthetic import MarketplaceConfig, generate
from ranker import TrainingConfig
from tests.system.conftest import StartServer, run_cli

pytestmark = pytest.mark.system

SMALL = ("--dataset", "synthetic", "--consumers", "400", "--pros", "120", "--seed", "5")
BASELINES = ("popularity", "realtime_popularity", "item_knn")


def run_replay(*args: str, timeout: float = 300.0) -> subprocess.CompletedProcess[str]:
    return run_cli("replay", *args, timeout=timeout)


def test_replay_over_rpc_trains_on_the_server_and_scores_every_system(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = start_server("--model-poll", "0.2")
    out = tmp_path / "replay.json"
    result = run_replay(
        *SMALL,
        "--epochs",
        "3",
        "--server",
        f"{server.host}:{server.port}",
        "--server-data",
        str(server.data),
        "--json",
        str(out),
    )
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert "events ingested" in result.stderr or "items upserted" in result.stderr
    assert "ratio" not in result.stderr
    results = json.loads(out.read_text())
    protocol = results["protocol"]
    assert protocol["realtime_path"] == f"rpc {server.host}:{server.port}"
    assert protocol["model"]["trained"] is True
    assert protocol["evaluated"] > 30
    for name in ("realtime", "batch", *BASELINES):
        assert results[name]["requests"] == protocol["evaluated"]
    assert results["realtime"]["freshness_ms"]["p50"] > 0
    assert results["realtime"]["candidates_mean"] > 0
    # The server saw the whole stream through ingest and serves the model trained at the cut.
    stats = server.client().call("stats")
    assert stats["model"] == protocol["model"]["model"]
    # One stored event per item upsert and per interaction: the whole stream went in.
    assert stats["events_committed"] == protocol["events"] + protocol["dataset"]["items"]
    assert "known at the cut" in result.stdout
    assert "(1." in result.stdout or "(0." in result.stdout  # ratios in the cohort table

    # The baselines see the same stream in-process: they score exactly the same there.
    records = generate(MarketplaceConfig(consumers=400, pros=120, seed=5)).records
    config = ReplayConfig(training=TrainingConfig(epochs=3, threads=1, seed=5))
    local = trio.run(replay, records, config)
    for name in BASELINES:
        assert local[name]["hit_rate@10"] == results[name]["hit_rate@10"], name
        assert local[name]["by_cohort"] == results[name]["by_cohort"], name


def test_without_the_server_data_dir_the_server_keeps_its_heuristic_ranker(
    start_server: StartServer,
) -> None:
    server = start_server()
    result = run_replay(*SMALL, "--max-requests", "30", "--server", f"127.0.0.1:{server.port}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "no --server-data: not training; the server keeps its current ranker (heuristic)" in (
        result.stderr
    )
    assert server.client().call("stats")["model"] is None


def test_bad_server_arguments_are_clear_errors(tmp_path: Path) -> None:
    bad = run_replay(*SMALL, "--server", "nowhere", timeout=60)
    assert bad.returncode == 2
    assert "--server: expected HOST:PORT" in bad.stderr
    lonely = run_replay(*SMALL, "--server-data", str(tmp_path), timeout=60)
    assert lonely.returncode == 2
    assert "--server-data needs --server" in lonely.stderr
    closed = run_replay(*SMALL, "--server", "127.0.0.1:1", timeout=120)
    assert closed.returncode == 1
    assert "cannot use the server at 127.0.0.1:1" in closed.stderr
    assert "Traceback" not in closed.stderr
