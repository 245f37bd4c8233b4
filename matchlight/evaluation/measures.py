"""What the replay measures, system by system, and the results it returns.

For each evaluated request every system's list is scored on the request's
rows (:data:`~matchlight.evaluation.report.ROWS`: all, the user's activity
so far, known or new): a hit if it holds the revealed item, NDCG by its
rank. Besides: each answer's latency, the real-time path's freshness (each
ingest call's duration) and retrieval recall, and the age of the frozen
lists at each request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import numpy as np

from matchlight.bench.harness import latency_summary
from matchlight.evaluation.report import BUCKETS, COHORTS, ROWS, SYSTEMS, Tally, cohort_table

__all__ = ["Asked", "Measures"]


@attrs.frozen(kw_only=True)
class Asked:
    """Every system's list for one request, and what the real-time path said of its candidates."""

    lists: Mapping[str, list[str]]
    retrieved: bool | None
    candidates: int | None


@attrs.define
class Measures:
    """What the evaluation of the requests adds up, system by system."""

    tallies: dict[str, dict[str, Tally]] = attrs.field(
        factory=lambda: {s: {row: Tally() for row in ROWS} for s in SYSTEMS}
    )
    latencies: dict[str, list[float]] = attrs.field(factory=lambda: {s: [] for s in SYSTEMS})
    #: Stream time since the job that made the frozen lists, at each request.
    staleness: dict[str, list[float]] = attrs.field(factory=lambda: {"batch": [], "popularity": []})
    #: The duration of each ingest call after the cut (the event is visible once it returns).
    freshness: list[float] = attrs.field(factory=list)
    #: Revealed items among the candidates, over the requests that reported it.
    recalled: int = 0
    reported: int = 0
    candidates: list[int] = attrs.field(factory=list)
    evaluated: int = 0

    def score(self, asked: Asked, item: str, rows: Sequence[str]) -> None:
        """Credit each system's list on each of the request's rows: a hit if it holds ``item``."""
        if asked.retrieved is not None:
            self.recalled += asked.retrieved
            self.reported += 1
        if asked.candidates is not None:
            self.candidates.append(asked.candidates)
        for name, served in asked.lists.items():
            rank = served.index(item) if item in served else None
            for row in rows:
                self.tallies[name][row].add(rank)
        self.evaluated += 1

    def results(self, k: int) -> dict[str, Any]:
        """Per system: hit rate and NDCG overall, by activity and cohort, and answer latency;
        the real-time path's freshness and recall, the frozen lists' age, the cohort table."""
        out: dict[str, Any] = {}
        for name in SYSTEMS:
            entry = self.tallies[name]["all"].summary(k)
            entry["by_activity"] = {b: self.tallies[name][b].summary(k) for b in BUCKETS}
            entry["by_cohort"] = {c: self.tallies[name][c].summary(k) for c in COHORTS}
            entry["latency_ms"] = _percentiles(self.latencies[name], 1000.0, 4)
            out[name] = entry
        realtime = out["realtime"]
        realtime["freshness_ms"] = _percentiles(self.freshness, 1000.0, 4)
        realtime["retrieval_recall"] = (
            {"share": round(self.recalled / self.reported, 4), "reported": self.reported}
            if self.reported
            else None
        )
        realtime["candidates_mean"] = (
            round(float(np.mean(self.candidates)), 1) if self.candidates else None
        )
        for name, ages in self.staleness.items():
            out[name]["staleness_s"] = _percentiles(ages, 1.0, 1)
        out["cohort_table"] = cohort_table(out, k)
        return out


def _percentiles(samples: Sequence[float], scale: float, digits: int) -> dict[str, float | None]:
    """p50 and p99 of ``samples`` times ``scale``, rounded to ``digits``; None without samples."""
    if not samples:
        return {"p50": None, "p99": None}
    return dict(latency_summary(samples, stats=("p50", "p99"), scale=scale, unit="", digits=digits))
