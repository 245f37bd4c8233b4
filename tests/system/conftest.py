"""Run the real ``matchlight serve`` as a subprocess, on port 0, for whole-process tests.

Every process a test starts is killed at teardown whatever happened; every wait
has a deadline, and a server that does not come up fails the test with its
stderr.
"""

from __future__ import annotations

import os
import re
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from matchlight.client import Client

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 15.0
HOST = "127.0.0.1"

_READY = re.compile(rb"matchlight listening on 127\.0\.0\.1:(\d+)")


def server_env() -> dict[str, str]:
    """The environment for a server subprocess: ours, with the repo root first on PYTHONPATH."""
    env = dict(os.environ)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + existing if existing else "")
    return env


def run_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``matchlight ARGS`` (logging at WARNING) in a subprocess, bounded by ``timeout``."""
    return subprocess.run(
        [sys.executable, "-m", "matchlight.cli", "--log-level", "WARNING", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=server_env(),
        cwd=REPO_ROOT.parent,
        check=False,
    )


class ServerProcess:
    """One data directory served by successive ``matchlight serve`` processes.

    ``start``/``restart`` launch a process on a fresh port (``port`` changes);
    ``kill9`` and ``terminate`` end it. ``close`` (run at teardown) kills
    whatever still runs and closes every client made by :meth:`client`.
    """

    def __init__(self, data: Path, logs: Path, args: tuple[str, ...] = ()) -> None:
        self.data = data
        self.host = HOST
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.runs = 0
        self._logs = logs
        self._args = args
        self._clients: list[Client] = []
        self._stdout_rest = b""

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def stderr_path(self) -> Path:
        """The stderr of the latest process."""
        return self._logs / f"server-{self.runs}.stderr"

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def start(self) -> None:
        """Launch a server on the data dir and wait (≤ 30 s) for its ``listening`` line."""
        assert self.proc is None, "a server process is already running"
        self.runs += 1
        self._logs.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "matchlight.cli",
            "serve",
            "--data",
            str(self.data),
            "--listen",
            f"{HOST}:0",
            *self._args,
        ]
        with self.stderr_path.open("wb") as stderr:
            # cwd is not the repo: the server must find its code through PYTHONPATH alone.
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=server_env(),
                cwd=self._logs,
            )
        line = self._read_ready_line(time.monotonic() + START_TIMEOUT_S)
        match = _READY.fullmatch(line)
        if match is None:
            self._abort(f"unexpected first stdout line {line!r}")
        self.port = int(match.group(1))

    def restart(self) -> None:
        """Stop the current process cleanly if it still runs, then start a new one."""
        if self.proc is not None:
            if self.running:
                self.terminate()
            else:
                self._reap()
        self.start()

    def kill9(self) -> None:
        """SIGKILL the server and wait for it to be gone."""
        proc = self._require_proc()
        proc.send_signal(signal.SIGKILL)
        code = proc.wait(timeout=STOP_TIMEOUT_S)
        assert code == -signal.SIGKILL, f"server exited with {code} before the kill"
        self._reap()

    def terminate(self) -> int:
        """SIGTERM the server; return its exit code (it must exit within 20 s)."""
        proc = self._require_proc()
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            self._abort(f"server did not stop within {STOP_TIMEOUT_S} s of SIGTERM")
        self._reap()
        return code

    def client(self, timeout: float = CALL_TIMEOUT_S) -> Client:
        """A new connection to the current process (closed at teardown if not before)."""
        client = Client(self.host, self.port, timeout=timeout)
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in self._clients:
            client.close()
        self._clients.clear()
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=STOP_TIMEOUT_S)
            self._reap()

    # -- internals --------------------------------------------------------------------------

    def _require_proc(self) -> subprocess.Popen[bytes]:
        assert self.proc is not None, "no server process"
        return self.proc

    def _reap(self) -> None:
        """Forget the (exited) process, keeping what it wrote on stdout after the ready line."""
        proc = self._require_proc()
        assert proc.stdout is not None
        if proc.poll() is not None:
            self._stdout_rest = proc.stdout.read()
        proc.stdout.close()
        self.proc = None

    def stdout_after_ready(self) -> bytes:
        """What the last stopped process printed on stdout after its ``listening`` line."""
        return self._stdout_rest

    def _read_ready_line(self, deadline: float) -> bytes:
        proc = self._require_proc()
        assert proc.stdout is not None
        fd = proc.stdout.fileno()
        buffer = b""
        with selectors.DefaultSelector() as selector:
            selector.register(fd, selectors.EVENT_READ)
            while b"\n" not in buffer:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    self._abort(f"no 'listening' line within {START_TIMEOUT_S} s")
                if not selector.select(timeout=remaining):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    self._abort(f"server exited before listening (stdout so far {buffer!r})")
                buffer += chunk
        line, _, rest = buffer.partition(b"\n")
        assert not rest, f"more than one stdout line at startup: {rest!r}"
        return line

    def _abort(self, why: str) -> None:
        proc = self._require_proc()
        if proc.poll() is None:
            proc.kill()
        code = proc.wait(timeout=STOP_TIMEOUT_S)
        self._reap()
        pytest.fail(
            f"{why}; exit code {code}; stderr:\n{self.stderr_text()[-4000:]}", pytrace=False
        )


StartServer = Callable[..., ServerProcess]


def _factory(base: Path) -> tuple[StartServer, list[ServerProcess]]:
    started: list[ServerProcess] = []

    def start(*args: str) -> ServerProcess:
        """Start ``matchlight serve`` on a new data dir with extra CLI ``args``."""
        n = len(started)
        server = ServerProcess(base / f"data-{n}", base / f"logs-{n}", tuple(args))
        started.append(server)
        server.start()
        return server

    return start, started


@pytest.fixture
def start_server(tmp_path: Path) -> Iterator[StartServer]:
    """A factory of started servers; all of them are killed at teardown."""
    start, started = _factory(tmp_path)
    try:
        yield start
    finally:
        for server in started:
            server.close()


@pytest.fixture
def server(start_server: StartServer) -> ServerProcess:
    """A started server on a fresh data dir."""
    return start_server()


@pytest.fixture(scope="module")
def shared_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server for a whole module, for tests that only need it to keep serving."""
    start, started = _factory(tmp_path_factory.mktemp("shared-server"))
    try:
        yield start()
    finally:
        for server in started:
            server.close()
