"""How ``matchlight bench`` times its recommend calls (:func:`~matchlight.bench.e2e_clients.
timed_calls`) and what its report grades for each kind of load, on a fake clock."""

from __future__ import annotations

from typing import Any

import pytest

from matchlight.bench.e2e_clients import timed_calls
from matchlight.bench.e2e_report import RECOMMEND_TARGETS, TARGETS, graded, recommend_load
from matchlight.errors import Unavailable


class FakeTime:
    """A clock that moves only when slept on or when a call takes time."""

    def __init__(self, durations: dict[int, float], fail: frozenset[int] = frozenset()) -> None:
        self.now = 100.0
        self.calls = 0
        self.durations = durations  # call number -> how long it takes; others take nothing
        self.fail = fail

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds > 0
        self.now += seconds

    def call(self) -> None:
        n = self.calls
        self.calls += 1
        self.now += self.durations.get(n, 0.0)
        if n in self.fail:
            raise Unavailable("down")


def ms(samples: list[float]) -> list[float]:
    return [round(s * 1e3, 6) for s in samples]


def test_an_open_loop_keeps_its_schedule_and_counts_a_stall_for_every_call_it_held_back() -> None:
    # 100 calls/s for 0.1 s: due at 0, 10, ..., 90 ms; the third call takes 35 ms.
    t = FakeTime({2: 0.035})
    elapsed, samples, errors = timed_calls(t.call, 0.1, 100.0, clock=t.clock, sleep=t.sleep)
    assert t.calls == 10
    # The stalled call, then the three sent late behind it (timed from when they were due).
    assert ms(samples) == [0, 0, 35, 25, 15, 5, 0, 0, 0, 0]
    assert errors == 0
    assert elapsed == pytest.approx(0.09)


def test_a_closed_loop_times_each_call_from_its_start_and_sends_as_fast_as_answered() -> None:
    t = FakeTime(dict.fromkeys(range(100), 0.01) | {2: 0.035})
    elapsed, samples, errors = timed_calls(t.call, 0.1, None, clock=t.clock, sleep=t.sleep)
    # 10 ms calls and one of 35 ms, back to back, until 0.1 s have gone.
    assert ms(samples) == [10, 10, 35, 10, 10, 10, 10, 10]
    assert errors == 0
    assert elapsed == pytest.approx(0.105)


@pytest.mark.parametrize("rate", [None, 100.0])
def test_failed_calls_are_counted_and_timed(rate: float | None) -> None:
    t = FakeTime(dict.fromkeys(range(100), 0.01), fail=frozenset({1, 3}))
    _, samples, errors = timed_calls(t.call, 0.05, rate, clock=t.clock, sleep=t.sleep)
    assert errors == 2
    assert len(samples) == t.calls == 5


def report(rate: float | None) -> dict[str, Any]:
    """The part of a bench report :func:`graded` reads."""
    return {
        "config": {"recommend_clients": 2, "recommend_rate": rate},
        "ingest": {"events_per_s": 31_000},
        "recommend_alone": {"p99_ms": 3.0},
        "recommend_mixed": {"p99_ms": 9.0, "p99_over_alone": 3.0},
        "freshness": {"event_to_visible_p99_ms": 4.0},
        "restart": {"restart_clean_s": 3.5, "restart_kill9_s": 3.9},
    }


def test_the_recommend_targets_grade_only_the_closed_loops() -> None:
    assert set(graded(report(None))) == set(TARGETS)
    open_loop = graded(report(300.0))
    assert set(open_loop) == set(TARGETS) - set(RECOMMEND_TARGETS)
    assert open_loop["ingest_events_per_s"] == 31_000
    assert recommend_load(report(None)["config"]) == "2 client(s) in closed loops"
    assert recommend_load(report(300.0)["config"]) == (
        "300 calls/s on a fixed schedule from 2 client(s) (open loop)"
    )
