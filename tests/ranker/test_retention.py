"""Which model artifacts ``matchlight train`` deletes: none a decision still names."""

from __future__ import annotations

from pathlib import Path

import pytest

from ranker import DecisionLog, prune_models

VERSIONS = [f"20260101T00000{n}Z-seq{n}" for n in range(1, 6)]


def artifacts(data: Path, current: str) -> None:
    for version in VERSIONS:
        (data / "models" / version).mkdir(parents=True)
        (data / "models" / version / "meta.json").write_text("{}")
    (data / "models" / ".staging").mkdir()  # not a version name: never touched
    (data / "models" / "CURRENT").write_text(current + "\n")


def kept(data: Path) -> list[str]:
    return sorted(p.name for p in (data / "models").iterdir() if p.is_dir())


def test_the_current_the_newest_and_those_decisions_name_are_kept(tmp_path: Path) -> None:
    artifacts(tmp_path, current=VERSIONS[2])
    with DecisionLog(tmp_path / "decisions") as log:
        log.write([{"request_id": "r1", "model": VERSIONS[0]}, {"request_id": "r2", "model": None}])

    deleted = prune_models(tmp_path, keep=2)

    assert deleted == [VERSIONS[1]]
    assert kept(tmp_path) == [".staging", VERSIONS[0], VERSIONS[2], VERSIONS[3], VERSIONS[4]]


def test_without_a_decision_log_only_the_current_and_newest_are_kept(tmp_path: Path) -> None:
    artifacts(tmp_path, current=VERSIONS[-1])

    assert prune_models(tmp_path, keep=1) == VERSIONS[:-1]
    assert kept(tmp_path) == [".staging", VERSIONS[-1]]


def test_keeping_none_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="keep at least one"):
        prune_models(tmp_path, keep=0)
