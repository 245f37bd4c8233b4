"""How long a reader worker takes to answer each kind of read, as histograms in its figures.

What a client sees is the reader's time plus everything around it: the network,
its own process, and waiting for a CPU when the node's processes want more than
the machine has (beside the bench's paced ingest both cores were busy). To tell
the two apart, a reader times each read from the method's start to its answer
(not decoding the request or sending the answer) into buckets 10 % apart
(:class:`ReadTimes`), and publishes the counts with its figures
(:mod:`matchlight.server.worker_figures`). ``matchlight bench`` takes the
difference of two publications to give a phase's p50 and p99 inside the readers
(:func:`percentile_ms`).
"""

from __future__ import annotations

import bisect
from collections.abc import Sequence
from typing import Final

#: The buckets' upper bounds, ms: 0.05 ms to about 12 s, each 10 % above the one before (the
#: last bucket, above them all, has no bound).
BOUNDS_MS: Final = tuple(round(0.05 * 1.1**k, 6) for k in range(130))


class ReadTimes:
    """Read times per method, counted in the buckets of :data:`BOUNDS_MS`."""

    def __init__(self) -> None:
        self._counts: dict[str, list[int]] = {}

    def add(self, method: str, seconds: float) -> None:
        counts = self._counts.get(method)
        if counts is None:
            counts = self._counts[method] = [0] * (len(BOUNDS_MS) + 1)
        counts[bisect.bisect_left(BOUNDS_MS, seconds * 1e3)] += 1

    def figures(self) -> dict[str, list[int]]:
        """Each method's bucket counts so far (a copy)."""
        return {method: list(counts) for method, counts in self._counts.items()}


def since(after: Sequence[int], before: Sequence[int] | None) -> list[int]:
    """The counts of the reads between two publications (``before`` may be missing: none)."""
    if not before:
        return list(after)
    return [a - b for a, b in zip(after, before, strict=True)]


def percentile_ms(counts: Sequence[int], q: float) -> float | None:
    """The upper bound of the bucket that holds the ``q`` quantile (0 < q ≤ 1), so at most
    10 % above it; ``None`` if nothing was counted, ``inf`` if it is in the last bucket."""
    total = sum(counts)
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for bound, count in zip((*BOUNDS_MS, float("inf")), counts, strict=True):
        seen += count
        if seen >= rank:
            return bound
    return float("inf")
