"""The command line as a user meets it: startup errors, the demo and the ingest benchmark."""

from __future__ import annotations

import html
import json
from pathlib import Path

import pytest

from matchlight.bench.harness import start_server
from matchlight.evaluation.report import LABELS, ROW_LABELS, SYSTEMS
from tests.system.conftest import REPO_ROOT, ServerProcess, run_cli, server_env

pytestmark = pytest.mark.system


def test_serve_on_a_busy_address_exits_1_with_a_clear_message(server: ServerProcess) -> None:
    result = run_cli(
        "serve",
        "--data",
        str(server.data.parent / "other"),
        "--listen",
        f"127.0.0.1:{server.port}",
        timeout=30,
    )

    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{server.port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_rejects_bad_arguments_before_starting(tmp_path: Path) -> None:
    bad_listen = run_cli("serve", "--data", str(tmp_path), "--listen", "nowhere", timeout=30)
    bad_snapshots = run_cli("serve", "--data", str(tmp_path), "--snapshot-every", "0", timeout=30)

    assert bad_listen.returncode == 2
    assert "HOST:PORT or unix:PATH" in bad_listen.stderr
    assert bad_snapshots.returncode == 2
    assert "--snapshot-every" in bad_snapshots.stderr
    assert not (tmp_path / "events").exists()


def test_demo_compares_real_time_with_the_batch_and_survives_kill_9(tmp_path: Path) -> None:
    report = tmp_path / "demo.html"
    result = run_cli("demo", "--html", str(report), timeout=300)

    assert result.returncode == 0, result.stdout + result.stderr
    assert "real time beat the batch; every acknowledged event survived" in result.stdout
    # The cohort table: a row per group of users, a column per system, ratios to the baseline.
    header = next(line for line in result.stdout.splitlines() if line.startswith("cohort "))
    assert header.split()[2:] == list(SYSTEMS)
    for label in ROW_LABELS.values():
        assert any(line.startswith(label) for line in result.stdout.splitlines()), label
    assert "The best simple real-time baseline" in result.stdout
    assert "the resent event is a duplicate: True" in result.stdout
    assert "two-sided" in result.stdout
    assert "willingness" in result.stdout
    # "pros for job-N (CATEGORY in CITY), two-sided", then a line per pro: its category first.
    lines = result.stdout.splitlines()
    at = next(i for i, line in enumerate(lines) if "), two-sided" in line)
    category = lines[at].split("(")[1].split(" in ")[0]
    pros = lines[at + 1 : at + 6]
    assert all(line.split()[1].startswith(f"{category}/") for line in pros), pros
    text = report.read_text()
    assert text.startswith("<!doctype html>")
    # Every system is named and explained, and the cohort table is embedded with a row per group.
    for system in SYSTEMS:
        assert html.escape(LABELS[system]) in text
    cohorts = text.split("<table class='replay-cohorts'>")[1].split("</table>")[0]
    for system in SYSTEMS:
        assert f"<th>{html.escape(LABELS[system])}</th>" in cohorts
    for label in ROW_LABELS.values():
        assert f"<tr><th>{html.escape(label)}</th>" in cohorts
    assert "make demo-real" in text  # the real data was not asked for: how to get it
    assert "pros for job-" in text
    assert "two-sided" in text


def test_write_path_benchmark_times_every_stage_of_each_process() -> None:
    result = run_cli(
        "bench", "write-path", "--events", "2000", "--batch", "500", "--items", "200",
        "--users", "100", timeout=300,
    )  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    rows = {
        name.strip(): stages
        for name, _, stages in (line.partition(":") for line in result.stdout.splitlines())
        if name.strip() in ("one process", "writer worker", "each reader worker")
    }
    assert set(rows) == {"one process", "writer worker", "each reader worker"}
    assert "decide" in rows["one process"]
    assert "apply" in rows["one process"]
    assert "catalogue" in rows["writer worker"]
    assert "apply" not in rows["writer worker"]
    assert "read and decode" in rows["each reader worker"]


def test_ingest_benchmark_accounts_for_every_acknowledged_event(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = run_cli(
        "bench",
        "ingest",
        "--events",
        "4000",
        "--batch",
        "500",
        "--clients",
        "1,2",
        "--users",
        "300",
        "--items",
        "200",
        "--workers",
        "1,3",
        "--json",
        str(out),
        timeout=300,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    # Every client count against a single process, then against a writer and two readers.
    assert [(row["workers"], row["clients"]) for row in report["ingest"]] == [
        (1, 1),
        (1, 2),
        (3, 1),
        (3, 2),
    ]
    for row in report["ingest"]:
        assert row["events"] == 4000
        assert row["log_seq_delta"] == 4000
        assert row["commits"] >= 1
        # events_per_commit is rounded to one decimal
        assert row["events_per_commit"] * row["commits"] == pytest.approx(4000, abs=row["commits"])
    assert set(report["peers"]) == {"lmdb_commit_per_event", "sqlite_wal_full_batch_1000"}
    assert "events/commit" in result.stdout


def test_json_logs_are_one_object_per_line(tmp_path: Path) -> None:
    # start_server returns once the server printed "matchlight listening on ...".
    server = start_server(
        tmp_path / "d",
        log_format="json",
        stderr=tmp_path / "stderr",
        env=server_env(),
        cwd=REPO_ROOT,
    )
    server.stop(timeout=30)
    stderr = (tmp_path / "stderr").read_text()
    records = [json.loads(line) for line in stderr.splitlines() if line.startswith("{")]
    assert any("serving 127.0.0.1:" in r["message"] for r in records)
    for record in records:
        assert {"ts", "level", "logger", "message"} <= record.keys()
        assert record["ts"].endswith("Z")
