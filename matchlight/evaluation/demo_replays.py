"""The demo's replays: the synthetic marketplace, and the real MovieLens table on request.

Both run :func:`matchlight.evaluation.replay.replay` in-process, with a
progress hook that says ``n of total`` requests and the time left. The
synthetic replay trains 20 epochs (the demo's minute); the real one uses
``matchlight replay``'s defaults, so its figures and the demo's agree.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from matchlight.evaluation.datasets import Dataset, DatasetError, dataset_from_spec
from matchlight.evaluation.demo_console import progress, say
from matchlight.evaluation.replay import (
    REAL_DATA_CUT,
    SYNTHETIC_CUT,
    Records,
    ReplayConfig,
    cut_index,
    is_request,
    replay,
)
from matchlight.evaluation.synthetic import Marketplace
from ranker import ModelError, TrainingConfig

#: The real table the real-data step replays (see :mod:`matchlight.evaluation.movielens`).
REAL_SPEC: Final = "movielens-small"
#: The training of ``matchlight replay``'s defaults, so its figures and the demo's agree.
REAL_TRAINING: Final = TrainingConfig(epochs=30, seed=7, threads=1)
#: The synthetic replay's training: fewer epochs, for a demo of about a minute.
SYNTHETIC_TRAINING: Final = TrainingConfig(epochs=20, seed=7, threads=1)

Loader = Callable[..., Dataset]


@attrs.frozen(kw_only=True)
class RealData:
    """What the real-data step gave: the replay's results, or why there are none."""

    results: Mapping[str, Any] | None = None
    #: One line saying why there are no results (download or read failure, nothing to train).
    error: str | None = None
    #: The dataset's one-line description (events by type, users, items).
    described: str = ""
    seconds: float = 0.0


def expected_requests(records: Records, cut: float) -> int:
    """How many requests a replay of ``records`` will evaluate (for its progress line).

    Counts what :func:`matchlight.evaluation.replay.replay` asks: each positive event after
    the cut on an item new to its user.
    """
    cut_at = cut_index(records, cut)
    seen: dict[str, set[str]] = {}
    count = position = 0
    for kind, body in records:
        if kind != "event":
            continue
        mine = seen.setdefault(body["user"], set())
        if position >= cut_at and is_request(body, mine):
            count += 1
        mine.add(body["item"])
        position += 1
    return count


@attrs.define
class _Requests:
    """A replay's ``on_request`` hook that reports ``n of total`` and the time left, every 5 s."""

    label: str
    total: int
    done: int = 0
    started: float = attrs.field(factory=time.monotonic)
    last: float = attrs.field(factory=time.monotonic)

    def __call__(self, event: Mapping[str, Any], target: Any) -> None:
        now = time.monotonic()
        if self.done == 0:
            self.started = self.last = now
        self.done += 1
        if now - self.last < 5.0 or self.total <= 0:
            return
        self.last = now
        left = (self.total - self.done) * (now - self.started) / self.done
        progress(
            f"{self.label}: {self.done:,} of {self.total:,} requests "
            f"({self.done / self.total:.0%}), about {_duration(left)} left"
        )


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{max(seconds, 1.0):.0f} s"


def _phases(message: str) -> None:
    """The replay's progress, without its bare request counts (:class:`_Requests` says more)."""
    if not message.endswith("requests evaluated"):
        progress(message)


def _run_replay(records: Records, config: ReplayConfig, label: str) -> dict[str, Any]:
    """Replay ``records`` in-process with the demo's progress lines. Blocking."""
    hook = _Requests(label, expected_requests(records, config.cut))
    results: dict[str, Any] = trio.run(
        lambda: replay(records, config, progress=_phases, on_request=hook)
    )
    return results


def replay_synthetic(market: Marketplace) -> dict[str, Any]:
    """Step 1 of the demo: the synthetic marketplace replayed in-process. Blocking."""
    config = ReplayConfig(cut=SYNTHETIC_CUT, training=SYNTHETIC_TRAINING)
    return _run_replay(market.records, config, "synthetic")


def run_real_data(
    cache_dir: Path | None,
    *,
    k: int = 10,
    training: TrainingConfig = REAL_TRAINING,
    load: Loader = dataset_from_spec,
) -> RealData:
    """Fetch (if needed) and replay the real MovieLens table in-process. Blocking; minutes.

    ``load`` is :func:`matchlight.evaluation.datasets.dataset_from_spec` (tests pass
    another). A table that cannot be downloaded or read, or that gives
    nothing to train on, is no exception: the result says why in ``error``.
    """
    started = time.perf_counter()
    try:
        dataset = load(REAL_SPEC, cache_dir=cache_dir, progress=progress)
    except DatasetError as exc:
        return RealData(error=str(exc), seconds=time.perf_counter() - started)
    described = dataset.describe()
    say(f"   {described}")
    config = ReplayConfig(cut=REAL_DATA_CUT, k=k, training=training)
    try:
        results = _run_replay(dataset.records, config, "MovieLens")
    except ModelError as exc:
        return RealData(
            error=f"{dataset.name}: {exc}",
            described=described,
            seconds=time.perf_counter() - started,
        )
    results["protocol"]["dataset"] = dataset.summary()
    return RealData(results=results, described=described, seconds=time.perf_counter() - started)
