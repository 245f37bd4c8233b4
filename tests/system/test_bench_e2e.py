"""``matchlight bench`` end to end (:mod:`matchlight.bench.e2e`) on a tiny configuration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from matchlight.bench import e2e
from tests.system.conftest import server_env

pytestmark = pytest.mark.system

TINY = ["--items", "2000", "--users", "500", "--events", "20000", "--recommend-seconds", "2"]

#: Every figure the JSON must carry, by section.
FIGURES = {
    "memory": {
        "items",
        "upsert_s",
        "upsert_items_per_s",
        "rss_before_mib",
        "rss_after_mib",
        "mib_per_100k_items",
        "start_empty_s",
    },
    "ingest": {
        "clients",
        "calls_in_flight_per_client",
        "batch",
        "events",
        "seconds",
        "events_per_s",
        "events_per_commit",
        "distinct_users",
        "rss_after_mib",
    },
    "recommend_alone": {
        "clients",
        "seconds",
        "calls",
        "calls_per_s",
        "errors",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
        "mean_ms",
    },
    "recommend": {
        "clients",
        "seconds",
        "calls",
        "calls_per_s",
        "errors",
        "p50_ms",
        "p99_ms",
        "p999_ms",
        "max_ms",
        "mean_ms",
        "concurrent_ingest_events",
        "concurrent_ingest_events_per_s",
    },
    "freshness": {
        "probes",
        "event_to_visible_p50_ms",
        "event_to_visible_p99_ms",
        "event_to_visible_max_ms",
        "get_user_p50_ms",
        "get_user_violations",
        "recommend_violations",
    },
    "restart": {
        "log_events",
        "stop_clean_s",
        "restart_clean_s",
        "tail_events",
        "restart_kill9_s",
        "lost_events",
    },
}
#: Counts that must be zero: every other figure must be positive.
MUST_BE_ZERO = {"errors", "get_user_violations", "recommend_violations", "lost_events"}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_are_the_issue_s_configuration() -> None:
    args = parse([])
    assert (args.items, args.users, args.events) == (100_000, 50_000, 1_000_000)
    assert (args.recommend_seconds, args.ingest_clients, args.recommend_clients) == (20.0, 1, 2)
    assert (args.batch, args.json) == (1000, None)


def test_tiny_run_reports_every_figure_and_no_violation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The server subprocess finds the code through PYTHONPATH, wherever pytest runs.
    monkeypatch.setenv("PYTHONPATH", server_env()["PYTHONPATH"])
    out = tmp_path / "bench.json"

    code = e2e.main(parse([*TINY, "--json", str(out)]))

    stdout = capsys.readouterr().out
    assert code == 0, stdout
    report: dict[str, Any] = json.loads(out.read_text())
    assert report["config"]["items"] == 2000
    assert report["config"]["events"] == 20000
    for section, keys in FIGURES.items():
        assert set(report[section]) == keys, section
        for key, value in report[section].items():
            assert isinstance(value, (int, float)), (section, key, value)
            if key in MUST_BE_ZERO:
                assert value == 0, (section, key)
            else:
                assert value > 0, (section, key)
    assert report["wall_s"] > 0
    assert report["ingest"]["events"] == 20000
    assert report["freshness"]["probes"] == e2e.FRESHNESS_PROBES
    # The log holds exactly what was acknowledged before the clean stop.
    assert report["restart"]["log_events"] == (
        2000 + 20000 + report["recommend"]["concurrent_ingest_events"] + e2e.FRESHNESS_PROBES
    )
    p = report["recommend"]
    assert p["p50_ms"] <= p["p99_ms"] <= p["p999_ms"] <= p["max_ms"]

    assert "matchlight bench (end to end over RPC)" in stdout
    for label in (
        "memory per 100k items",
        "durable ingest",
        "recommend under ingest: latency p99.9",
        "event → visible (ingest ack) p99",
        "seen-item violations",
        "restart, clean",
        "restart after kill -9",
    ):
        assert label in stdout, label
    assert "≥ 50,000" in stdout  # the ingest target printed next to its figure
    assert stdout.count("≤ 10 ") == 3  # event → visible, both restarts
