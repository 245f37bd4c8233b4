"""The migration router's state shared by several processes over one data directory: a change
made in any of them applies to the next request in every other, changes made at once all
stand, and a config entry applied by processes starting together is applied once."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from legacy_adapter import MigrationError, canary_bucket
from tests.legacy_adapter.test_router import req, router

#: A bound on waiting for the child processes (each imports the ranker).
WAIT_S = 120.0


async def test_a_change_in_one_router_applies_to_the_next_request_of_another(
    tmp_path: Path,
) -> None:
    first, second = router(tmp_path), router(tmp_path)
    assert (await second.recommend(req()))["source"] == "legacy"

    first.set_migration("home", {"mode": "live"})

    assert (await second.recommend(req()))["source"] == "realtime"
    assert second.states()["home"]["mode"] == "live"


def test_changes_in_quick_succession_are_each_seen(tmp_path: Path) -> None:
    """Each replacement is seen, though the file keeps its size and may recycle its inode."""
    first, second = router(tmp_path), router(tmp_path)
    for n in range(20):
        mode = ("canary", "shadow")[n % 2]  # names of the same length
        first.set_migration("home", {"mode": mode, "percent": 10})
        assert second.migration("home").mode == mode


def test_a_change_keeps_what_another_router_changed_meanwhile(tmp_path: Path) -> None:
    first, second = router(tmp_path), router(tmp_path)
    first.set_migration("home", {"mode": "shadow"})
    second.set_migration("jobs", {"mode": "live"})  # without a request since the first change
    first.set_migration("pros", {"mode": "canary", "percent": 5})

    modes = {name: state["mode"] for name, state in router(tmp_path).states().items()}
    assert modes == {"home": "shadow", "jobs": "live", "pros": "canary"}


def test_a_bad_state_file_keeps_the_last_states_serving_and_refuses_changes(
    tmp_path: Path,
) -> None:
    first = router(tmp_path)
    first.set_migration("home", {"mode": "live"})
    (tmp_path / "migration.json").write_text('{"surfaces": {"home": {"mode": "fast"}}}')

    assert first.migration("home").mode == "live"
    with pytest.raises(MigrationError, match=r"migration\.json: surfaces\.home\.mode"):
        first.set_migration("jobs", {"mode": "shadow"})
    assert "jobs" not in json.loads((tmp_path / "migration.json").read_text())["surfaces"]


# -- in several processes ------------------------------------------------------------------


def change_repeatedly(data_dir: str, surface: str, times: int, start: Any) -> None:
    """A process that changes one surface's mode ``times`` times, ending in ``live``."""
    mine = router(Path(data_dir))
    start.wait()
    for n in range(times):
        mine.set_migration(surface, {"mode": ("shadow", "live")[n % 2]})


def apply_config_at_start(data_dir: str, entries: dict[str, Any], out: Any, start: Any) -> None:
    """A process starting with the config ``entries``: what its router serves after applying."""
    mine = router(Path(data_dir))
    start.wait()
    mine.apply_config(entries)
    out.put(mine.states())


def run_together(target: Any, args: list[tuple[Any, ...]]) -> None:
    """Run ``target`` in a process per element of ``args``, released at once by a barrier."""
    context = multiprocessing.get_context("spawn")
    start = context.Barrier(len(args))
    processes = [context.Process(target=target, args=(*a, start)) for a in args]
    for process in processes:
        process.start()
    for process in processes:
        process.join(WAIT_S)
        assert process.exitcode == 0


def test_changes_made_at_once_by_several_processes_all_stand(tmp_path: Path) -> None:
    surfaces = ["home", "jobs", "pros"]
    run_together(change_repeatedly, [(str(tmp_path), surface, 30) for surface in surfaces])

    states = router(tmp_path).states()
    assert {name: state["mode"] for name, state in states.items()} == dict.fromkeys(
        surfaces, "live"
    )


def test_processes_starting_with_one_config_apply_each_entry_once(tmp_path: Path) -> None:
    entries = {"home": {"mode": "canary", "percent": 20}, "jobs": {"mode": "shadow"}}
    out = multiprocessing.get_context("spawn").Queue()

    def start_three() -> list[dict[str, Any]]:
        run_together(apply_config_at_start, [(str(tmp_path), entries, out)] * 3)
        return [out.get(timeout=WAIT_S) for _ in range(3)]

    seen = start_three()
    assert seen[0] == seen[1] == seen[2]  # one application: the same states, `updated` too
    assert seen[0]["home"]["origin"] == "config"
    assert seen[0]["home"]["percent"] == 20

    router(tmp_path).set_migration("home", {"mode": "live"})  # a change over RPC stands
    assert all(states["home"]["mode"] == "live" for states in start_three())


def test_canary_buckets_are_the_same_whatever_the_process_hash_seed() -> None:
    code = "from legacy_adapter import canary_bucket; print(repr(canary_bucket('u7', 'home')))"
    for seed in ("1", "2"):
        found = subprocess.run(
            [sys.executable, "-c", code],
            env={"PYTHONHASHSEED": seed, "PYTHONPATH": str(Path(__file__).parents[2])},
            capture_output=True,
            text=True,
            check=True,
            timeout=WAIT_S,
        )
        assert float(found.stdout) == canary_bucket("u7", "home")
