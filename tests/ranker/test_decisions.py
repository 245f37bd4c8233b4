"""The decision log: durable records with sequence numbers and bounded retention."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ranker import DecisionLog, DecisionStatistics, RankerError
from ranker.decisions import find_decision


def record(n: int) -> dict[str, Any]:
    return {
        "request": f"r{n}",
        "surface": "home",
        "user": "u1",
        "items": [{"id": f"i{n}", "score": 0.5 * n, "propensity": 1.0}],
        "model": None,
    }


@pytest.fixture
def log(tmp_path: Path) -> Iterator[DecisionLog]:
    decisions = DecisionLog(tmp_path / "decisions", retention=10)
    yield decisions
    decisions.close()


def test_records_read_back_with_sequence_numbers(log: DecisionLog) -> None:
    log.write([record(1), record(2)])
    log.write([record(3)])

    records = log.read()

    assert records == [{**record(n), "seq": n} for n in (1, 2, 3)]


def test_read_after_and_limit_page_through_the_log(log: DecisionLog) -> None:
    log.write([record(n) for n in range(1, 8)])

    assert [r["seq"] for r in log.read(after=3)] == [4, 5, 6, 7]
    assert [r["seq"] for r in log.read(after=2, limit=2)] == [3, 4]
    assert log.read(after=7) == []
    assert log.read(limit=0) == []


def test_writing_nothing_changes_nothing(log: DecisionLog) -> None:
    log.write([])

    assert log.read() == []
    assert log.statistics() == DecisionStatistics(written=0, kept=0, trimmed=0, last_seq=0)


def test_retention_keeps_the_newest_records(log: DecisionLog) -> None:
    log.write([record(n) for n in range(1, 16)])
    log.write([record(n) for n in range(16, 26)])

    records = log.read()

    assert [r["seq"] for r in records] == list(range(16, 26))
    assert [r["request"] for r in records] == [f"r{n}" for n in range(16, 26)]
    assert log.statistics() == DecisionStatistics(written=25, kept=10, trimmed=15, last_seq=25)


def test_retention_holds_for_one_record_at_a_time(log: DecisionLog) -> None:
    for n in range(1, 26):
        log.write([record(n)])
        assert log.statistics().kept == min(n, 10)

    assert [r["seq"] for r in log.read()] == list(range(16, 26))


def test_reopening_continues_the_sequence(tmp_path: Path) -> None:
    first = DecisionLog(tmp_path / "decisions", retention=10)
    first.write([record(n) for n in range(1, 13)])
    first.close()

    reopened = DecisionLog(tmp_path / "decisions", retention=10)
    try:
        assert reopened.statistics() == DecisionStatistics(
            written=0, kept=10, trimmed=0, last_seq=12
        )
        reopened.write([record(13)])
        assert [r["seq"] for r in reopened.read()] == list(range(4, 14))
        assert reopened.read(after=12) == [{**record(13), "seq": 13}]
    finally:
        reopened.close()


def test_a_reopened_log_with_a_smaller_retention_trims_on_the_next_write(tmp_path: Path) -> None:
    first = DecisionLog(tmp_path / "decisions", retention=10)
    first.write([record(n) for n in range(1, 11)])
    first.close()

    smaller = DecisionLog(tmp_path / "decisions", retention=3)
    try:
        smaller.write([record(11)])
        assert [r["seq"] for r in smaller.read()] == [9, 10, 11]
        assert smaller.statistics().trimmed == 8
    finally:
        smaller.close()


def test_a_full_map_grows(tmp_path: Path) -> None:
    decisions = DecisionLog(tmp_path / "decisions", map_size=64 << 10)
    try:
        big = [{**record(n), "padding": "x" * 4000} for n in range(1, 101)]
        decisions.write(big)
        assert decisions.statistics().kept == 100
        assert decisions.read(after=99)[0]["padding"] == "x" * 4000
    finally:
        decisions.close()


def test_retention_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="retention"):
        DecisionLog(tmp_path / "decisions", retention=0)


def test_a_record_is_found_by_its_request_id(tmp_path: Path) -> None:
    # (read-only: explain runs in its own process, beside a server writing the log)
    with DecisionLog(tmp_path) as log:
        log.write([{"request_id": f"r{n}", "items": [f"i{n}"]} for n in range(20)])
    # "r1" is in the bytes of "r10" … "r19" too: only the record carrying it as its id counts.
    found = find_decision(tmp_path, "r1")
    assert found is not None
    assert (found["request_id"], found["items"]) == ("r1", ["i1"])
    assert find_decision(tmp_path, "r99") is None


def test_finding_in_a_directory_without_a_log_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(RankerError, match="no decision log"):
        find_decision(tmp_path, "r1")
