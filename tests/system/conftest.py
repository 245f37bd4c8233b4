"""Run the real ``matchlight serve`` as a subprocess, on port 0, for whole-process tests.

The process itself is started and stopped by :mod:`matchlight.bench.harness`,
as the benchmarks do; :class:`ServerProcess` adds what a test needs around it.

Every process a test starts is killed at teardown whatever happened; every wait
has a deadline, and a server that does not come up fails the test with its
stderr.
"""

from __future__ import annotations

import itertools
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, NoReturn

import pytest

from matchlight.bench import harness
from matchlight.bench.harness import RunningServer, ServerFailed, matchlight_command
from matchlight.client import Client

REPO_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
CALL_TIMEOUT_S = 15.0
HOST = "127.0.0.1"

READY_PREFIX = b"matchlight listening on "


def server_env() -> dict[str, str]:
    """The environment for a server subprocess: ours, with the repo root first on PYTHONPATH."""
    env = dict(os.environ)
    existing = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(REPO_ROOT) + (os.pathsep + existing if existing else "")
    return env


def run_cli(*args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
    """``matchlight ARGS`` (logging at WARNING) in a subprocess, bounded by ``timeout``."""
    return subprocess.run(
        matchlight_command(*args, log_level="WARNING"),
        capture_output=True,
        text=True,
        timeout=timeout,
        env=server_env(),
        cwd=REPO_ROOT.parent,
        check=False,
    )


class ServerProcess:
    """One data directory served by successive ``matchlight serve`` processes.

    ``start``/``restart`` launch a process (on a fresh port unless ``listen``
    names a fixed address; ``--workers 1`` unless ``args`` say otherwise);
    ``kill9`` and ``terminate`` end it. ``close`` (run at teardown) kills
    whatever still runs and closes every client made by :meth:`client`.
    """

    def __init__(
        self, data: Path, logs: Path, args: tuple[str, ...] = (), listen: str = f"{HOST}:0"
    ) -> None:
        self.data = data
        self.host = HOST
        self.port = 0
        self.runs = 0
        self._listen = listen
        self._logs = logs
        # The contract suites run one process unless MATCHLIGHT_TEST_WORKERS says otherwise
        # (`MATCHLIGHT_TEST_WORKERS=3 make test` runs them against a writer and two readers);
        # a test of one process's limits, counters or signals, or of the node as worker
        # processes, says --workers itself.
        workers = os.environ.get("MATCHLIGHT_TEST_WORKERS", "1")
        self._args = args if "--workers" in args else ("--workers", workers, *args)
        self._clients: list[Client] = []
        self._server: RunningServer | None = None
        self._stdout_rest = b""

    # -- lifecycle --------------------------------------------------------------------------

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        """The current process (to signal it or read its pid), None between processes."""
        return None if self._server is None else self._server.proc

    @property
    def running(self) -> bool:
        return self._server is not None and self._server.poll() is None

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
        assert self._server is None, "a server process is already running"
        self.runs += 1
        self._logs.mkdir(parents=True, exist_ok=True)
        try:
            # cwd is not the repo: the server must find its code through PYTHONPATH alone.
            server = harness.start_server(
                self.data,
                *self._args,
                listen=self._listen,
                stderr=self.stderr_path,
                env=server_env(),
                cwd=self._logs,
                timeout=START_TIMEOUT_S,
            )
        except ServerFailed as failed:
            self._fail(failed.why, failed.code)
        self._server = server
        if not self._expected(server.address):
            self._abort(f"unexpected first stdout line {READY_PREFIX + server.address.encode()!r}")
        assert not server.early_output, (
            f"more than one stdout line at startup: {server.early_output!r}"
        )
        if self._listen.endswith(":0"):
            self.port = server.port

    def _expected(self, address: str) -> bool:
        """Whether the server listens where asked (any port if asked for port 0)."""
        if self._listen == f"{HOST}:0":
            return re.fullmatch(rf"{re.escape(HOST)}:\d+", address) is not None
        return address == self._listen

    def restart(self) -> None:
        """Stop the current process cleanly if it still runs, then start a new one."""
        if self._server is not None:
            if self.running:
                self.terminate()
            else:
                self._reap()
        self.start()

    def kill9(self) -> None:
        """SIGKILL the server and wait for it to be gone."""
        code = self._require_server().kill(STOP_TIMEOUT_S)
        assert code == -signal.SIGKILL, f"server exited with {code} before the kill"
        self._reap()

    def terminate(self) -> int:
        """SIGTERM the server; return its exit code (it must exit within 20 s)."""
        try:
            code = self._require_server().stop(signal.SIGTERM, STOP_TIMEOUT_S)
        except ServerFailed as failed:
            self._reap()
            self._fail(failed.why, failed.code)
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
        if self._server is not None:
            self._server.kill(STOP_TIMEOUT_S)
            self._reap()

    # -- internals --------------------------------------------------------------------------

    def _require_server(self) -> RunningServer:
        assert self._server is not None, "no server process"
        return self._server

    def _reap(self) -> None:
        """Forget the (exited) process, keeping what it wrote on stdout after the ready line."""
        server = self._require_server()
        server.stop()  # it has exited: this only reaps it and reads the rest of its stdout
        self._stdout_rest = server.stdout_after_ready
        self._server = None

    def stdout_after_ready(self) -> bytes:
        """What the last stopped process printed on stdout after its ``listening`` line."""
        return self._stdout_rest

    def _abort(self, why: str) -> NoReturn:
        code = self._require_server().kill(STOP_TIMEOUT_S)
        self._reap()
        self._fail(why, code)

    def _fail(self, why: str, code: int | None) -> NoReturn:
        pytest.fail(
            f"{why}; exit code {code}; stderr:\n{self.stderr_text()[-4000:]}", pytrace=False
        )


class UnixServer(ServerProcess):
    """A ``ServerProcess`` listening on ``unix:PATH``, so a restart keeps its address."""

    def __init__(self, data: Path, logs: Path, path: str, args: tuple[str, ...] = ()) -> None:
        super().__init__(data, logs, args, listen=f"unix:{path}")
        self.path = path


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
        # One process: tests SIGSTOP it and read its connection counters.
        yield start("--workers", "1")
    finally:
        for server in started:
            server.close()


StartUnixServer = Callable[..., UnixServer]


@pytest.fixture
def start_unix_server(tmp_path: Path) -> Iterator[StartUnixServer]:
    """A factory of servers on Unix sockets; all of them are killed at teardown."""
    # Socket paths are limited to ~100 bytes: tmp_path can be longer.
    sockets = Path(tempfile.mkdtemp(prefix="ml-client-", dir="/tmp"))
    started: list[UnixServer] = []

    def start(*args: str) -> UnixServer:
        n = len(started)
        server = UnixServer(
            tmp_path / f"data-{n}", tmp_path / f"logs-{n}", str(sockets / f"{n}.sock"), args
        )
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()
        shutil.rmtree(sockets, ignore_errors=True)


_client_event_ids = itertools.count()


def new_event(item: str, type_: str = "like") -> dict[str, Any]:
    """A new ``type_`` event on ``item`` (ids ``cl-N``) by one of five users."""
    n = next(_client_event_ids)
    return {
        "id": f"cl-{n}",
        "type": type_,
        "user": f"cl-user-{n % 5}",
        "item": item,
        "ts": 1.7e9 + n,
    }


# -- a node run as worker processes (``serve --workers N``) ------------------------------------

POLL_S = 0.05


def wait_for(what: str, condition: Callable[[], bool], timeout: float = START_TIMEOUT_S) -> float:
    """Poll ``condition`` until it holds; the seconds that took. Fails saying ``what`` did not
    happen if it still does not hold after ``timeout`` seconds (a deadline, not a measure)."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            pytest.fail(f"{what}: not within {timeout:g} s", pytrace=False)
        time.sleep(POLL_S)
    return time.monotonic() - started


def process_gone(pid: int) -> bool:
    """Whether process ``pid`` has exited (gone, or a zombie its parent has not reaped yet)."""
    fields = harness.process_stat(pid)
    return fields is None or fields[0] in ("Z", "X")


def clients_by_reader(server: ServerProcess, readers: int) -> dict[str, Client]:
    """One connection to each of the ``readers`` reader workers, by the name ``health`` gives.

    The supervisor hands a new connection to the reader with the fewest open, so
    ``readers`` connections usually reach them all; more are opened (and the
    extra ones closed) while a reader that restarts is not up yet.
    """
    found: dict[str, Client] = {}
    extra: list[Client] = []
    try:
        for _ in range(100):
            client = server.client()
            worker = client.call("health")["worker"]
            if worker in found:
                extra.append(client)
                continue
            found[worker] = client
            if len(found) == readers:
                return dict(sorted(found.items()))
    finally:
        for client in extra:
            client.close()
    pytest.fail(f"100 connections reached only the readers {sorted(found)}", pytrace=False)


def worker_pids(server: ServerProcess) -> dict[str, int]:
    """The pid of each worker of a node (``writer``, ``reader-1`` …), as ``stats`` shows them."""
    with server.client() as client:
        workers = client.call("stats")["workers"]
    return {name: figures["pid"] for name, figures in workers.items()}


def kill_process(pid: int) -> None:
    """SIGKILL process ``pid`` (a worker: its supervisor restarts it) and wait until it is dead."""
    os.kill(pid, signal.SIGKILL)
    wait_for(f"process {pid} dies of SIGKILL", lambda: process_gone(pid))


def wait_restarted(server: ServerProcess, name: str, old_pid: int) -> dict[str, Any]:
    """Wait until ``stats`` shows worker ``name`` restarted (a new pid, alive); its figures."""
    figures: dict[str, Any] = {}

    def restarted() -> bool:
        nonlocal figures
        with server.client() as client:
            figures = client.call("stats")["workers"][name]
        return figures["pid"] != old_pid and not process_gone(figures["pid"])

    wait_for(f"the {name} worker (pid {old_pid}) is restarted", restarted)
    return figures
