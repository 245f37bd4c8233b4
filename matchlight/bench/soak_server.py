"""The server and trainer processes of ``matchlight bench soak``.

:class:`SoakServer` runs successive ``matchlight serve`` processes on one data
dir and one loopback port (each process's stderr in ``logs/server-N.log``),
times each start from spawn to its ``listening`` line and to the first
answered ``health``, and ends them with SIGKILL or SIGTERM. :class:`Trainer`
runs ``matchlight train`` beside it, one run at a time. :func:`rss` reads a
process's resident set from ``/proc``.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Final

import attrs

from matchlight.bench.harness import RunningServer, ServerFailed, matchlight_command, start_server
from matchlight.bench.index_workload import note
from matchlight.bench.soak_load import HOST
from matchlight.client import Client, RpcError

START_TIMEOUT_S: Final = 120.0
STOP_TIMEOUT_S: Final = 60.0


@attrs.define(kw_only=True)
class Lifetime:
    """One server process: when it started (s into the run) and how it ended."""

    number: int
    pid: int
    started_s: float
    listening_s: float
    healthy_s: float
    ended_s: float = 0.0
    end: str = ""
    rss_end: dict[str, float] = attrs.field(factory=dict)
    rss_max_mib: float = 0.0


class SoakServer:
    """Successive ``matchlight serve`` processes on one data dir and one port.

    Each process's stderr goes to ``logs/server-N.log``. The port lives in a
    shared value the client processes read when they reconnect; it changes only
    if the address turned out to be taken.
    """

    def __init__(self, data: Path, logs: Path, port: Any, t0: float) -> None:
        self.data = data
        self.logs = logs
        self.port = port
        self.t0 = t0
        self.proc: RunningServer | None = None
        self.lifetimes: list[Lifetime] = []

    @property
    def current(self) -> Lifetime:
        return self.lifetimes[-1]

    def start(self) -> Lifetime:
        """Start a process; return once it answered ``health``. Raises ServerFailed."""
        proc, number, began = self._spawn()
        listening = time.perf_counter() - began
        self.proc = proc
        _wait_healthy(self.port.value, time.monotonic() + START_TIMEOUT_S)
        healthy = time.perf_counter() - began
        self.lifetimes.append(
            Lifetime(
                number=number,
                pid=proc.pid,
                started_s=round(time.monotonic() - self.t0 - healthy, 3),
                listening_s=round(listening, 3),
                healthy_s=round(healthy, 3),
            )
        )
        return self.current

    def _spawn(self) -> tuple[RunningServer, int, float]:
        """A process that printed its ``listening`` line, its number and when it was spawned.

        If the port turned out to be taken, up to three tries, each on a new
        port (the clients follow); raises ServerFailed for any other failure.
        """
        for _ in range(3):
            number = len(self.lifetimes) + 1
            log_path = self.logs / f"server-{number}.log"
            began = time.perf_counter()
            try:
                proc = start_server(
                    self.data,
                    listen=f"{HOST}:{self.port.value}",
                    stderr=log_path,
                    timeout=START_TIMEOUT_S,
                )
            except ServerFailed:
                tail = log_path.read_text(errors="replace")[-3000:]
                if "in use" not in tail:
                    raise ServerFailed(
                        f"the server did not start (log {log_path}):\n{tail}"
                    ) from None
                self.port.value = free_port()  # someone took the port: the clients follow
                log_path.rename(log_path.with_suffix(".address-in-use.log"))
            else:
                return proc, number, began
        raise ServerFailed("no free port to restart the server on")

    def exited(self) -> int | None:
        """The exit code if the process ended by itself, else None."""
        return None if self.proc is None else self.proc.poll()

    def kill(self, end: str = "kill -9") -> None:
        """SIGKILL the process and wait for it to be gone."""
        self._proc().kill(STOP_TIMEOUT_S)
        self._ended(end)

    def terminate(self) -> tuple[float, int]:
        """SIGTERM: (seconds until it exited, exit code). Raises ServerFailed if it hangs."""
        proc = self._proc()
        began = time.perf_counter()
        try:
            code = proc.stop(signal.SIGTERM, STOP_TIMEOUT_S)
        except ServerFailed:
            self._ended("hung on SIGTERM")
            raise
        self._ended(f"SIGTERM (exit {code})")
        return time.perf_counter() - began, code

    def crashed(self, code: int) -> None:
        """Record that the process ended by itself with ``code``."""
        self._proc().stop()  # reaps it: it has exited, so no signal is sent
        self._ended(f"exited by itself ({code})")

    def close(self) -> None:
        """Kill whatever still runs (on the way out after an error)."""
        if self.proc is not None:
            self.proc.kill(STOP_TIMEOUT_S)
            self._ended("killed on abort")

    def _proc(self) -> RunningServer:
        assert self.proc is not None, "no server process"
        return self.proc

    def _ended(self, how: str) -> None:
        self.proc = None
        self.current.ended_s = round(time.monotonic() - self.t0, 3)
        self.current.end = how


def free_port() -> int:
    """A loopback TCP port nobody listens on now."""
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
    return port


def _wait_healthy(port: int, deadline: float) -> None:
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            with Client(HOST, port, timeout=10.0, retries=0) as client:
                if client.call("health").get("status") == "ok":
                    return
        except (OSError, RpcError) as exc:
            last = exc
        time.sleep(0.02)
    raise ServerFailed(f"the server listens but did not answer health: {last!r}")


# -- training -----------------------------------------------------------------------------------


class Trainer:
    """``matchlight train`` runs, one at a time, logged to ``logs/train-N.log``."""

    def __init__(self, data: Path, logs: Path, t0: float) -> None:
        self.data, self.logs, self.t0 = data, logs, t0
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs: list[dict[str, Any]] = []
        self.skipped = 0
        self._began = 0.0

    def start(self) -> None:
        """Start a run, unless one is still going (then count it as skipped)."""
        if self.proc is not None:
            self.skipped += 1
            return
        path = self.logs / f"train-{len(self.runs) + 1}.log"
        with path.open("wb") as log:
            self.proc = subprocess.Popen(
                matchlight_command(
                    "train", "--data", str(self.data), "--epochs", "2", "--threads", "1"
                ),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self._began = time.monotonic()
        self.runs.append({"started_s": round(self._began - self.t0, 1), "log": str(path)})

    def poll(self, wait: float = 0.0) -> None:
        """Record the running one's outcome if it ended (waiting up to ``wait`` s, then kill)."""
        if self.proc is None:
            return
        try:
            code = self.proc.wait(timeout=wait) if wait else self.proc.poll()
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        if code is None:
            return
        run = self.runs[-1]
        run.update(exit=code, seconds=round(time.monotonic() - self._began, 1))
        text = Path(run["log"]).read_text(errors="replace")
        found = re.search(r"^model (\S+):", text, re.MULTILINE)
        run["model"] = found.group(1) if found else None
        if code != 0:
            run["tail"] = text[-1500:]
        self.proc = None
        note(
            f"  train #{len(self.runs)}: "
            + (f"model {run['model']} in {run['seconds']} s" if code == 0 else f"FAILED ({code})")
        )
