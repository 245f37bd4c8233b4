"""A reader's read times as bucket counts, and the percentiles the bench takes of them."""

from __future__ import annotations

import itertools
import math

import pytest

from matchlight.server.read_times import BOUNDS_MS, ReadTimes, percentile_ms, since


def ms(counts: list[int], q: float) -> float:
    """``percentile_ms`` of counts that hold reads."""
    value = percentile_ms(counts, q)
    assert value is not None
    return value


def test_each_read_counts_in_the_bucket_of_its_time_per_method() -> None:
    times = ReadTimes()
    for _ in range(99):
        times.add("recommend", 0.001)  # 1 ms
    times.add("recommend", 0.050)
    times.add("get_user", 0.0003)
    figures = times.figures()
    assert set(figures) == {"recommend", "get_user"}
    counts = figures["recommend"]
    assert len(counts) == len(BOUNDS_MS) + 1
    assert sum(counts) == 100
    assert percentile_ms(counts, 0.50) == percentile_ms(counts, 0.99)
    assert 1.0 <= ms(counts, 0.99) < 1.1
    assert 50.0 <= ms(counts, 1.0) < 55.0
    assert 0.3 <= ms(figures["get_user"], 0.5) < 0.33
    figures["recommend"][0] += 1  # a copy: the counts are not changed
    assert sum(times.figures()["recommend"]) == 100


def test_the_buckets_are_ten_percent_apart_and_the_last_has_no_bound() -> None:
    ratios = [b / a for a, b in itertools.pairwise(BOUNDS_MS)]
    assert all(r == pytest.approx(1.1, rel=1e-3) for r in ratios)
    assert BOUNDS_MS[-1] > 10_000.0
    times = ReadTimes()
    times.add("search", 60.0)  # a minute: above every bound
    assert percentile_ms(times.figures()["search"], 0.5) == math.inf


def test_a_phase_is_the_difference_of_two_publications() -> None:
    times = ReadTimes()
    times.add("recommend", 0.010)
    before = times.figures()["recommend"]
    times.add("recommend", 0.002)
    times.add("recommend", 0.002)
    phase = since(times.figures()["recommend"], before)
    assert sum(phase) == 2
    assert 2.0 <= ms(phase, 0.99) < 2.2
    assert since(before, None) == before  # nothing published before: all of it
    assert percentile_ms(since(before, before), 0.5) is None  # no reads in between
    assert percentile_ms([], 0.5) is None
