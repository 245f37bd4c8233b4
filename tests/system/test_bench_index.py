"""``matchlight bench index`` as a user runs it: every peer checked and timed, the rebuild too."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import attrs
import pytest

from index import Index
from matchlight.bench import index_rebuild
from matchlight.bench.index import MatchlightEngine, check
from matchlight.bench.index_workload import (
    CLASSES,
    BenchError,
    Catalogue,
    Runner,
    make_cases,
    make_catalogue,
)
from tests.system.conftest import REPO_ROOT, server_env

pytestmark = pytest.mark.system

PEERS_ALWAYS_RUN = ("sqlite", "tantivy")


def run_bench(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = server_env()
    env.pop("MATCHLIGHT_BENCH_POSTGRES", None)  # never depend on an outside server
    return subprocess.run(
        [sys.executable, "-m", "matchlight.cli", "--log-level", "WARNING", "bench", "index", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO_ROOT.parent,
        check=False,
    )


def test_small_run_checks_and_times_every_class_on_every_engine(tmp_path: Path) -> None:
    out = tmp_path / "bench-index.json"
    sizes = ["--items", "3000", "--queries", "20", "--updates", "50", "--rebuild-items", "2000"]
    result = run_bench(*sizes, "--json", str(out))

    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(out.read_text())
    assert report["items"] == 3000
    assert report["engines"][0] == "matchlight"
    assert set(PEERS_ALWAYS_RUN) <= set(report["engines"])
    assert "postgres" in report["skipped"]
    assert set(report["classes"]) == set(CLASSES)
    for kind, row in report["classes"].items():
        for engine in ("matchlight", *PEERS_ALWAYS_RUN):
            stats = row[engine]
            assert 0 < stats["p50_us"] <= stats["p99_us"], (kind, engine, stats)
        for peer in PEERS_ALWAYS_RUN:
            assert row["ratio_p50"][peer] > 0
        assert kind in result.stdout
    agreement = report["agreement"]
    assert agreement["checked"] == len(CLASSES) * 20
    assert agreement["agreed"] == agreement["comparisons"] == agreement["checked"] * 2
    assert agreement["after_updates"] == agreement["after_batch"] == agreement["checked"]
    for engine in report["engines"]:
        assert report["updates"]["each"][engine]["p50_us"] > 0
        assert report["updates"]["batched_us_per_update"][engine] > 0
        assert report["build_s"][engine] >= 0
    assert "PostgreSQL: skipped" in result.stdout
    assert "same totals and ids" in result.stdout
    rebuild = report["rebuild"]
    assert rebuild["items"] == rebuild["searchable"] == 2000
    assert 0 < rebuild["like_events"] <= 2000 * index_rebuild.LIKE_CAP
    assert len(rebuild["runs_s"]) == index_rebuild.RUNS
    assert 0 < rebuild["min_s"] <= rebuild["median_s"]
    assert rebuild["store_bytes"] > 0
    assert rebuild["queries_compared"] > len(CLASSES)
    assert rebuild["target_met"] is None  # judged only on 100,000 items or more
    assert "startup rebuild: 2,000 items from snapshots in " in result.stdout


def test_a_bad_size_exits_2_naming_the_flag() -> None:
    result = run_bench("--items", "0", timeout=30)

    assert result.returncode == 2
    assert "--items: must be at least 1, got 0" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_negative_rebuild_size_exits_2_naming_the_flag() -> None:
    result = run_bench("--rebuild-items", "-1", timeout=30)

    assert result.returncode == 2
    assert "--rebuild-items: must be at least 0, got -1" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_rebuilt_index_that_disagrees_stops_the_run_naming_the_query() -> None:
    """The reference counts one more like per item than the store holds."""

    def reference(cat: Catalogue) -> Index:
        more = attrs.evolve(cat, likes=[likes + 1 for likes in cat.likes])
        return MatchlightEngine(more).index

    with pytest.raises(
        BenchError, match=r"rebuilt index disagrees with the in-memory one on likes \{"
    ):
        index_rebuild.measure(300, seed=3, reference=reference)


def test_an_engine_that_disagrees_stops_the_run_naming_it_and_the_query() -> None:
    catalogue = make_catalogue(500, seed=2)
    cases = make_cases(catalogue, 3, seed=2)
    matchlight = MatchlightEngine(catalogue)

    class OffByOne:
        name = "sqlite"

        def runner(self, kind: str) -> Runner:
            inner = matchlight.runner(kind)
            return lambda case: (inner(case)[0] + 1, inner(case)[1])

        def update(self, ord_: int, likes: int) -> None:
            raise AssertionError("not called")

        def update_batch(self, changes: Sequence[tuple[int, int]]) -> None:
            raise AssertionError("not called")

        def close(self) -> None:
            pass

    with pytest.raises(BenchError, match=r"SQLite disagrees with Matchlight on term \{"):
        check([matchlight, OffByOne()], cases)
