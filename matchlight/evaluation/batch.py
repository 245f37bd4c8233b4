"""The nightly batch the replay measures real time against: a job's lists, served from a feed.

A job at stream time ``at`` asks the real-time path (the same ranker and
model, so only freshness differs) for the top :data:`BATCH_DEPTH` of every
user known then, writes them as a legacy batch feed (one JSONL line per
user on :data:`~matchlight.evaluation.systems.SURFACE`, the format
:mod:`legacy_adapter.sources` reads) and loads it into a
:class:`legacy_adapter.FeedStore`. Requests are served from the store
without the items the user has interacted with since (what a batch feed's
client does); a user the feed has no list for gets the job's popularity
list. With an interval the job runs again on schedule; otherwise its lists
stay those of the first job.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from legacy_adapter import FeedStore, LoadReport, open_source
from matchlight.evaluation.systems import SURFACE, RealtimePath, nightly_lists

__all__ = ["BATCH_DEPTH", "BatchPath", "open_batch_path", "serve_unseen", "write_feed"]

#: Items per user in a job's lists.
BATCH_DEPTH: Final = 60


@attrs.define
class BatchPath:
    """The batch path: its feed store, its schedule, the job's fallback list, what it served."""

    feed: FeedStore
    #: Where the jobs' feed files are written.
    folder: Path
    #: Whether the folder outlives the replay (then the protocol names the last feed file).
    kept: bool
    #: Seconds of stream time between jobs (None: the first job only).
    every: float | None
    #: Stream time the next job is due at.
    next_job: float = math.inf
    #: The popularity list of the last job, served to users the feed has no list for.
    popular: Sequence[str] = ()
    #: Stream time of the last job.
    made_at: float = 0.0
    jobs: int = 0
    lines: int = 0
    last_report: LoadReport | None = None
    last_file: Path | None = None
    served: int = 0
    fallback: int = 0

    async def run_job(
        self, path: RealtimePath, users: Sequence[str], popular: Sequence[str], at: float
    ) -> None:
        """The nightly job at stream time ``at``: lists for every user known now, as a feed."""
        lists = await nightly_lists(path, users, BATCH_DEPTH)
        self.popular = popular
        self.jobs += 1
        target = self.folder / f"batch-{self.jobs:04d}.jsonl"
        self.lines = await trio.to_thread.run_sync(write_feed, target, lists)
        self.last_report = await trio.to_thread.run_sync(self.feed.load, open_source(str(target)))
        if self.last_file is not None:
            self.last_file.unlink(missing_ok=True)  # the store holds what it said; keep one file
        self.last_file, self.made_at = target, at
        self.next_job = math.inf if self.every is None else at + self.every

    def due(self, ts: float) -> float | None:
        """The scheduled time of the job due before stream time ``ts``, if one is.

        Of several due at once (a quiet stretch of the stream), the last.
        """
        if ts < self.next_job or self.every is None:
            return None
        return self.next_job + math.floor((ts - self.next_job) / self.every) * self.every

    def serve(self, who: str, seen: set[str], k: int) -> list[str]:
        """``who``'s list from the feed, else the job's popularity list, without ``seen``."""
        entry = self.feed.get(SURFACE, who)
        if entry is not None and entry.items:
            self.served += 1
            return serve_unseen(entry.items, seen, k)
        self.fallback += 1
        return serve_unseen(self.popular, seen, k)

    def describe(self) -> dict[str, Any]:
        """What the replay's protocol says of the batch feed and what it served."""
        report = self.last_report
        return {
            "format": "jsonl",
            "surface": SURFACE,
            "depth": BATCH_DEPTH,
            "jobs": self.jobs,
            "every_s": self.every,
            "lines": self.lines,
            "entries": None if report is None else report.entries,
            "bad": None if report is None else report.bad,
            "served": self.served,
            "fallback": self.fallback,
            "path": str(self.last_file) if self.kept and self.last_file is not None else None,
        }


@contextlib.contextmanager
def open_batch_path(keep: Path | None, every: float | None) -> Iterator[BatchPath]:
    """A batch path with no job run yet, its files in ``keep`` (None: a temporary directory).

    ``every``: seconds of stream time between jobs (None: the first job only).
    """
    with _folder(keep) as folder, FeedStore(folder / "store", isolate=False) as feed:
        yield BatchPath(feed=feed, folder=folder, kept=keep is not None, every=every)


@contextlib.contextmanager
def _folder(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="matchlight-replay-") as tmp:
        yield Path(tmp)


def write_feed(path: Path, lists: Mapping[str, tuple[Sequence[str], Sequence[float]]]) -> int:
    """Write ``user → (items, scores)`` as a legacy batch feed (JSONL) at ``path``. Blocking.

    One line per user with a non-empty list, on :data:`SURFACE`, in the format
    :func:`legacy_adapter.open_source` reads. Returns the lines written.
    """
    lines = 0
    with open(path, "w", encoding="utf-8") as f:
        for who, (items, scores) in lists.items():
            if not items:
                continue  # a batch job writes no line for a user it has nothing for
            line: dict[str, Any] = {"user": who, "surface": SURFACE, "items": list(items)}
            if len(scores) == len(items) and all(math.isfinite(s) for s in scores):
                line["scores"] = [round(float(s), 6) for s in scores]
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
            lines += 1
    return lines


def serve_unseen(ranked: Sequence[str], seen: set[str], k: int) -> list[str]:
    """The first ``k`` of a frozen list ``ranked`` that are not in ``seen``."""
    out = []
    for item_id in ranked:
        if item_id not in seen:
            out.append(item_id)
            if len(out) == k:
                break
    return out
