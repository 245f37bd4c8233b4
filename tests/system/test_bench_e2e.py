"""``matchlight bench`` end to end (:mod:`matchlight.bench.e2e`) on a tiny configuration."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import pytest

from matchlight.bench import e2e, e2e_report
from matchlight.server.node import default_workers
from tests.system.conftest import server_env

pytestmark = pytest.mark.system

TINY = [
    *("--items", "2000", "--users", "500", "--events", "20000", "--recommend-seconds", "2"),
    *("--workers", "3"),
]

#: The recommend figures of both runs (alone, and beside the paced ingest).
LATENCY = {"clients", "seconds", "calls", "calls_per_s", "errors"} | {
    f"{stat}_ms" for stat in ("p50", "p99", "p999", "max", "mean")
}
#: Every figure the JSON must carry, by section.
FIGURES = {
    "memory": {
        "items",
        "upsert_s",
        "upsert_items_per_s",
        "measure",
        "before_mib",
        "after_mib",
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
        "writes_held",
        "distinct_users",
        "memory_after_mib",
    },
    "recommend_alone": LATENCY
    | {"reads_waited", "read_wait_mean_ms", "reader_p50_ms", "reader_p99_ms"},
    "recommend_mixed": LATENCY
    | {
        "reads_waited",
        "read_wait_mean_ms",
        "reader_p50_ms",
        "reader_p99_ms",
        "ingest_target_per_s",
        "ingest_batch",
        "ingest_events",
        "ingest_events_per_s",
        "ingest_ack_p50_ms",
        "ingest_ack_p99_ms",
        "ingest_writes_held",
        "p99_over_alone",
    },
    "freshness": {
        "probes",
        "read_on",
        "read_elsewhere",
        "ingest_ack_p50_ms",
        "ingest_ack_p99_ms",
        "event_to_visible_p50_ms",
        "event_to_visible_p99_ms",
        "event_to_visible_max_ms",
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
#: Counts that must be zero: every other figure must be positive (but these).
MUST_BE_ZERO = {"errors", "get_user_violations", "recommend_violations", "lost_events"}
#: Counts that may be zero or not: writes the node held for its readers depend on the machine.
COUNTS = {"writes_held", "ingest_writes_held", "reads_waited"}
#: Figures that may be zero: the mean wait of reads that found their reader behind the log.
MAY_BE_ZERO = {"read_wait_mean_ms"}
#: The figures that are words, not numbers.
WORDS = {"measure", "read_on"}


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    e2e.add_arguments(parser)
    return parser.parse_args(argv)


def test_defaults_are_the_issue_s_configuration() -> None:
    args = parse([])
    assert (args.items, args.users, args.events) == (100_000, 50_000, 1_000_000)
    assert (args.recommend_seconds, args.ingest_clients, args.recommend_clients) == (20.0, 4, 2)
    assert (args.batch, args.mixed_rate, args.mixed_batch, args.json) == (1000, 5000, 100, None)
    assert args.recommend_rate is None  # closed loops, which the targets grade
    assert args.workers == default_workers()  # as `matchlight serve`


def test_tiny_run_with_workers_reports_every_figure_and_no_violation(
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
    assert report["config"]["workers"] == 3
    for section, keys in FIGURES.items():
        assert set(report[section]) == keys, section
        for key, value in report[section].items():
            if key in WORDS:
                continue
            assert isinstance(value, (int, float)), (section, key, value)
            if key in MUST_BE_ZERO:
                assert value == 0, (section, key)
            elif key in COUNTS:
                assert isinstance(value, int), (section, key)
                assert value >= 0, (section, key)
            elif key in MAY_BE_ZERO:
                assert value >= 0, (section, key)
            else:
                assert value > 0, (section, key)
    assert report["wall_s"] > 0
    assert report["ingest"]["events"] == 20000
    assert report["freshness"]["probes"] == e2e.FRESHNESS_PROBES
    # Two readers: the reads of the freshness probes went to the one the ingest did not.
    assert report["freshness"]["read_elsewhere"] is True
    # With workers, memory is each worker's own (RssAnon), at every point.
    assert report["memory"]["measure"] == "RssAnon"
    assert set(report["memory_by_process"]) == {"writer", "reader-1", "reader-2"}
    for figures in report["memory_by_process"].values():
        assert set(figures) == {
            f"{measure}_{point}"
            for measure in ("VmRSS", "RssAnon")
            for point in ("start", "catalogue", "ingest")
        }
    assert set(report["targets_met"]) == set(e2e_report.TARGETS)
    # The log holds exactly what was acknowledged before the clean stop, the tail before
    # the kill included.
    assert report["restart"]["log_events"] == (
        2000
        + 20000
        + report["recommend_mixed"]["ingest_events"]
        + e2e.FRESHNESS_PROBES
        + report["restart"]["tail_events"]
    )
    p = report["recommend_mixed"]
    assert p["p50_ms"] <= p["p99_ms"] <= p["p999_ms"] <= p["max_ms"]
    # Only the recommend clients read in a recommend phase: each read waits at most once.
    for phase in (report["recommend_alone"], p):
        assert phase["reads_waited"] <= phase["calls"]
        assert (phase["read_wait_mean_ms"] > 0) == (phase["reads_waited"] > 0)
        # Inside the readers is part of each call (a bucket's bound: at most 10 % above).
        assert phase["reader_p50_ms"] <= phase["reader_p99_ms"]
        assert phase["reader_p50_ms"] <= phase["p50_ms"] * 1.1
        assert phase["reader_p99_ms"] <= phase["p99_ms"] * 1.1
    assert 0 < p["ingest_ack_p50_ms"] <= p["ingest_ack_p99_ms"]

    assert "matchlight bench (end to end over RPC)" in stdout
    assert "3 workers (1 writer, 2 readers)" in stdout
    for label in (
        "memory per 100k items (workers' RssAnon, summed)",
        "durable ingest, 4 client(s)",
        "recommend: 2 client(s) in closed loops",
        "paced ingest beside recommend (asked 5,000/s)",
        "paced ingest: ack p99",
        "recommend beside ingest: latency p99.9",
        "recommend p99 beside ingest / p99 alone",
        "reads that found their reader behind the log, beside ingest",
        "inside the readers, beside ingest: p99",
        "event → visible (ack + read elsewhere) p99",
        "seen-item violations",
        "restart, clean",
        "restart after kill -9",
        "memory by process",
    ):
        assert label in stdout, label
    # Each target printed next to its figure.
    assert "≥ 30,000 (stretch 50,000)" in stdout
    assert "≤ 1.5 " in stdout
    assert "≤ 8 " in stdout
    assert stdout.count("≤ 5 ") == 2  # recommend alone, restart after kill -9
    assert stdout.count("≤ 10 ") == 2  # event → visible, clean restart
