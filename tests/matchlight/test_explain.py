"""``matchlight explain`` on a data directory written in-process: its output, its exit
statuses, and its one-line errors when what a replay needs is gone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import LmdbEventStore
from matchlight.cli import main
from ranker import DecisionLog, Surfaces, keep_config
from ranker.replay import REPLAY_FIELDS
from tests.ranker.test_replay import serve_decisions


@pytest.fixture
def decisions(tmp_path: Path) -> list[dict[str, Any]]:
    """Decisions a ranker took on a data directory (closed: explain opens it read-only)."""

    async def serve() -> list[dict[str, Any]]:
        with LmdbEventStore(tmp_path / "events") as store:
            return await serve_decisions(tmp_path, store)

    return trio.run(serve)


def explain(data: Path, request_id: object, *args: str) -> int:
    return main(["explain", "--data", str(data), "--request-id", str(request_id), *args])


def test_explain_prints_the_list_and_says_it_is_identical(
    tmp_path: Path, decisions: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    record = decisions[-1]
    assert explain(tmp_path, record["request_id"], "--json") == 0
    view = json.loads(capsys.readouterr().out)
    assert view["identical"] is True
    assert [item["id"] for item in view["items"]] == record["items"]

    assert explain(tmp_path, record["request_id"]) == 0
    out = capsys.readouterr().out
    assert "identical to what was served" in out
    assert "the surfaces config is unchanged" in out


def test_a_served_list_that_differs_is_shown_position_by_position_with_status_3(
    tmp_path: Path, decisions: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    record = decisions[0]
    first, second, *rest = record["items"]
    with DecisionLog(tmp_path / "decisions") as log:  # as if another list had been served
        swapped = {**record, "request_id": "swapped", "items": [second, first, *rest]}
        log.write([swapped, {**swapped, "request_id": "while-applying", "applying": True}])
    assert explain(tmp_path, "swapped") == 3
    out = capsys.readouterr().out
    assert "differs from what was served:" in out
    assert f"position 1: served {second} (" in out
    assert f"replayed {first} (" in out
    assert "possibly because" not in out
    assert explain(tmp_path, "while-applying") == 3
    assert "(possibly because a commit was still being applied" in capsys.readouterr().out


def test_an_edited_copy_of_the_config_is_refused(
    tmp_path: Path, decisions: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    record = decisions[0]
    (tmp_path / "configs" / f"{record['config']}.toml").write_text("")
    assert explain(tmp_path, record["request_id"]) == 1
    assert "was changed: its digest is now" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("model", "that decision {id} used is gone from"),
        ("config", "is not kept in"),
        ("id", "no decision {id} in"),
        ("data", "is not a data directory"),
    ],
)
def test_what_cannot_be_replayed_fails_in_one_line(
    tmp_path: Path,
    decisions: list[dict[str, Any]],
    capsys: pytest.CaptureFixture[str],
    damage: str,
    message: str,
) -> None:
    record = decisions[-1]
    request_id, data = str(record["request_id"]), tmp_path
    if damage == "model":
        shutil.rmtree(tmp_path / "models" / str(record["model"]))
    elif damage == "config":
        (tmp_path / "configs" / f"{record['config']}.toml").unlink()
    elif damage == "id":
        request_id = "0" * 32
    else:
        data = tmp_path / "configs"
    assert explain(data, request_id) == 1
    err = capsys.readouterr().err
    assert err.startswith("matchlight explain: ")
    assert message.format(id=request_id) in err
    assert err.count("\n") == 1


def test_every_decision_carries_what_a_replay_needs(decisions: list[dict[str, Any]]) -> None:
    assert all(set(REPLAY_FIELDS) <= record.keys() for record in decisions)


def test_a_server_restarted_without_a_config_file_counts_as_a_change(
    tmp_path: Path, decisions: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    keep_config(tmp_path, Surfaces(), None)
    assert explain(tmp_path, decisions[0]["request_id"]) == 0
    out = capsys.readouterr().out
    assert f"{Surfaces().digest} now (no config file); surface home is gone" in out
