"""``matchlight bench soak`` (:mod:`matchlight.bench.soak`): a short soak, as a user runs it.

Half a minute of mixed load with a ``kill -9`` every 8 s (so at least two
kills and restarts under load) and a training run every 10 s, on a small
population. The JSON report must show nothing acknowledged lost, nothing
applied twice or missing from state, no ``internal`` error and no server exit
other than the soak's own kills. RSS is reported but not judged here: half a
minute is too short for a warm-up.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from matchlight.bench import soak
from tests.system.conftest import server_env

pytestmark = pytest.mark.system

SHORT = [
    "--minutes", "0.5",
    "--kill-every", "8",
    "--train-every", "10",
    "--users", "2000",
    "--items", "300",
    "--rate", "800",
    "--read-rate", "40",
]  # fmt: skip
#: The load runs 30 s; setup, restarts, training and the checks take the rest.
TIMEOUT_S = 300.0


def test_defaults_are_the_issue_s_configuration() -> None:
    parser = argparse.ArgumentParser()
    soak.add_arguments(parser)
    args = parser.parse_args([])
    assert (args.minutes, args.kill_every, args.train_every) == (10.0, 60.0, 150.0)
    assert (args.data, args.keep, args.json) == (None, False, None)
    assert 2_000 <= args.rate <= 3_000


def test_a_short_soak_loses_nothing_and_applies_nothing_twice(tmp_path: Path) -> None:
    out = tmp_path / "soak.json"
    data = tmp_path / "data"
    command = [sys.executable, "-m", "matchlight.cli", "bench", "soak", *SHORT]
    # A session of its own: on a timeout the server and client processes it started go too.
    proc = subprocess.Popen(
        [*command, "--data", str(data), "--json", str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=server_env(),
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"no report within {TIMEOUT_S:g} s; stderr:\n{stderr[-4000:]}")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything left behind
    context = f"stdout:\n{stdout[-4000:]}\nstderr:\n{stderr[-4000:]}"
    assert proc.returncode in (0, 1), context
    report: dict[str, Any] = json.loads(out.read_text())
    assert "aborted" not in report, context

    log, state, errors = report["log"], report["state"], report["errors"]
    assert report["kills"] >= 2, context
    assert report["restarts"]["count"] >= 2, context
    assert not report["crashes"], context
    assert log["acked"] > 0, context
    assert log["lost"] == 0, context
    assert log["in_log_twice"] == 0, context
    assert log["seq_gaps"] == 0, context
    assert log["idempotency"]["missing"] == 0, context
    assert state["applied_twice"] == 0, context
    assert state["missing_from_state"] == 0, context
    assert state["items_exists_wrong"] == 0, context
    assert state["log_seq_matches"], context
    assert state["users_checked"] > 0, context
    assert state["items_checked"] >= 300, context
    assert errors["internal"] == 0, context
    assert report["events"]["partial_batches"] == 0, context
    assert report["stop"]["exit_code"] == 0, context
    assert report["train"]["runs"], context
    assert report["reads"]["latency"]["recommend"]["all"]["calls"] > 0, context
    # Every failed check is named on stdout; the only one allowed to fail here is the memory
    # check (30 s is too short for the projections to reach their bounds after warm-up).
    failed = {c["name"] for c in report["checks"] if not c["passed"] and not c.get("info")}
    assert all(name.startswith("server memory") for name in failed), context
    assert proc.returncode == (1 if failed else 0), context
    assert ("verdict: PASS" if not failed else "verdict: FAIL") in stdout
    assert "acknowledged events lost: 0 of" in stdout
    # The data dir given with --data is kept, with every server lifetime's log.
    assert len(list((data / "soak-logs").glob("server-*.log"))) >= 4
