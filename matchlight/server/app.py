"""``matchlight serve``: the event store, the actor system and the RPC listeners in one process.

Startup prints one line ``matchlight listening on ADDRESS`` (with the real
port when asked for port 0) once it accepts connections. SIGTERM or SIGINT
stops it cleanly: listeners close, new requests get ``unavailable``,
in-flight requests get ``drain_s`` seconds to finish, queued writes are
committed, active actors are snapshotted, and the store is closed.
"""

from __future__ import annotations

import contextlib
import errno
import gc
import ipaddress
import logging
import os
import signal
import socket
import ssl
import stat
import sys
import time
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from actors import DirectoryLock, LmdbEventStore, SystemConfig, open_actor_system
from legacy_adapter import FeedSource, FeedStore, open_router, watch_feed
from matchlight.server.auth import Tokens
from matchlight.server.methods import Methods
from matchlight.server.rpc import Limits, RpcServer
from matchlight.server.telemetry import NOOP, Telemetry
from ranker import DecisionLog, Surfaces, open_ranker

log = logging.getLogger(__name__)

DEFAULT_LISTEN = "127.0.0.1:7420"


@attrs.frozen(kw_only=True)
class ServeConfig:
    data: Path
    listen: str = DEFAULT_LISTEN
    drain_s: float = 5.0
    system: SystemConfig = attrs.field(factory=SystemConfig)
    surfaces: Surfaces = attrs.field(factory=Surfaces)
    #: How often to look for a new model artifact, seconds.
    model_poll_s: float = 2.0
    #: Decision records kept (the oldest are deleted beyond this).
    decision_retention: int = 1_000_000
    #: Who may call what; ``None``: everyone may call everything.
    tokens: Tokens | None = None
    #: Serve TLS with this context (certificate and key loaded).
    tls: ssl.SSLContext | None = None
    limits: Limits = attrs.field(factory=Limits)
    #: Tracing and metrics (from the OTEL_* environment by default).
    telemetry: Telemetry = NOOP
    #: The legacy batch feed (``--legacy-feed``), if any.
    legacy_feed: FeedSource | None = None
    feed_poll_s: float = 5.0
    #: The ``[migration.SURFACE]`` entries of the config file.
    migration: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: Comparison and served records kept for ``shadow-report``.
    comparison_retention: int = 1_000_000


def is_loopback(listen: str) -> bool:
    """Whether ``listen`` (``HOST:PORT`` or ``unix:PATH``) is reachable from this machine only."""
    host, port = parse_listen(listen)
    if port == -1:
        return True  # a Unix socket: file permissions decide
    if str(host) == "localhost":
        return True
    try:
        return ipaddress.ip_address(str(host)).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """A server TLS context (TLS 1.2 or newer) from PEM certificate and key files.

    Raises:
        OSError: a file cannot be read.
        ssl.SSLError: they are not a matching certificate and key.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


def parse_listen(listen: str) -> tuple[str, str | int]:
    """``HOST:PORT`` → ("tcp", host, port); ``unix:PATH`` → ("unix", path).

    Raises:
        ValueError: the address is not in either form.
    """
    if listen.startswith("unix:"):
        path = listen[len("unix:") :]
        if not path:
            raise ValueError("unix: needs a socket path, e.g. unix:/run/matchlight.sock")
        return path, -1
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) < 65536:
        raise ValueError(f"--listen must be HOST:PORT or unix:PATH, got {listen!r}")
    return host.strip("[]"), int(port)


async def _open_listeners(listen: str) -> tuple[list[trio.SocketListener], str]:
    """Bind ``listen``; the listeners and the address as bound (the real port for port 0)."""
    host, port = parse_listen(listen)
    if port == -1:
        path = str(host)
        _remove_stale_socket(path)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(path)
        sock.listen(1024)
        return [trio.SocketListener(sock)], f"unix:{path}"
    try:
        listeners = await trio.open_tcp_listeners(int(port), host=str(host))
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {listen}: {exc.strerror}") from exc
    sockname = listeners[0].socket.getsockname()
    return list(listeners), f"{sockname[0]}:{sockname[1]}"


def _remove_stale_socket(path: str) -> None:
    """Unlink a socket file left by a server that is gone; never one a live server listens on.

    Raises:
        OSError: a server answers on ``path``, or ``path`` is something other than a socket.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"cannot listen on unix:{path}: it exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # nobody listens: a stale socket from a previous run
        return
    except PermissionError as exc:
        raise OSError(exc.errno, f"cannot listen on unix:{path}: {exc.strerror}") from exc
    except OSError:
        pass  # e.g. a full backlog or a timeout: someone is there
    finally:
        probe.close()
    raise OSError(
        errno.EADDRINUSE, f"cannot listen on unix:{path}: another server is listening there"
    )


def tune_gc() -> None:
    """Make the cyclic garbage collector cheap for a heap of many long-lived actor states.

    Actor states are acyclic dicts and lists that live for minutes. With the
    default thresholds, full collections keep walking all of them, and ingest
    throughput fell by a quarter within a 400,000-event benchmark run
    (`matchlight bench ingest`: 19.8k then 14.5k events/s); with these it stays level.
    """
    gc.freeze()  # what startup allocated is never garbage
    gc.set_threshold(50_000, 20, 100)


async def serve(config: ServeConfig) -> None:
    """Run the server until SIGTERM/SIGINT. Never returns earlier unless startup fails.

    Raises:
        DirectoryLockedError: another process serves the data directory.
        OSError: the address is in use (a unix socket included) or cannot be bound.
        StoreError: the data directory is unusable.
    """
    tune_gc()
    # One writer per data directory (DirectoryLockedError names the holder), then bind:
    # a busy address fails fast, before the store is opened.
    lock = DirectoryLock(config.data, purpose=f"matchlight serve --listen {config.listen}")
    lock.acquire()
    try:
        await _serve_locked(config)
    finally:
        lock.release()
    print("matchlight stopped", file=sys.stderr, flush=True)


async def _serve_locked(config: ServeConfig) -> None:
    from matchlight import __version__

    listeners, address = await _open_listeners(config.listen)
    store = LmdbEventStore(config.data / "events")  # StoreError if unusable
    decisions = DecisionLog(config.data / "decisions", retention=config.decision_retention)
    comparisons = DecisionLog(config.data / "comparisons", retention=config.comparison_retention)
    feed = None if config.legacy_feed is None else FeedStore(config.data / "legacy")
    try:
        async with (
            open_actor_system(store, config.system) as system,
            open_ranker(
                system,
                config.surfaces,
                data_dir=config.data,
                decisions=decisions,
                poll_s=config.model_poll_s,
                # models/CURRENT was checked before start; a model that does not load stops it.
                require_model=True,
            ) as ranker,
            open_router(
                ranker,
                feed,
                data_dir=config.data,
                comparisons=comparisons,
                config=config.migration,
            ) as router,
            trio.open_nursery() as background,
        ):
            if feed is not None and config.legacy_feed is not None:
                # The current snapshot is loaded (if new) before the server listens.
                await background.start(
                    partial(watch_feed, feed, config.legacy_feed, poll_s=config.feed_poll_s)
                )
            gc.freeze()  # the rebuilt index lives as long as the server: keep it out of GC passes
            methods = Methods(
                system, ranker, router=router, version=__version__, started=time.monotonic()
            )
            methods.telemetry = config.telemetry
            rpc = RpcServer(
                methods.table(), config.limits, tokens=config.tokens, telemetry=config.telemetry
            )
            methods.rpc = rpc
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async with trio.open_nursery() as connections:
                    async with trio.open_nursery() as acceptors:
                        serving: list[Any] = list(listeners)
                        if config.tls is not None:
                            serving = [
                                trio.SSLListener(listener, config.tls, https_compatible=False)
                                for listener in listeners
                            ]
                        await acceptors.start(
                            partial(
                                trio.serve_listeners,
                                rpc.serve_stream,
                                serving,
                                handler_nursery=connections,
                            )
                        )
                        print(f"matchlight listening on {address}", flush=True)
                        log.info(
                            "serving %s from %s (%s, %s)",
                            address,
                            config.data,
                            "TLS" if config.tls is not None else "no TLS",
                            f"{len(config.tokens)} tokens"
                            if config.tokens is not None
                            else "no tokens: every caller may call everything",
                        )
                        async for signum in signals:
                            log.info("received %s; shutting down", signal.Signals(signum).name)
                            break
                        acceptors.cancel_scope.cancel()
                    rpc.start_draining()
                    with trio.move_on_after(config.drain_s):
                        await rpc.wait_idle()
                    connections.cancel_scope.cancel()
            background.cancel_scope.cancel()
    finally:
        if feed is not None:
            feed.close()
        comparisons.close()
        decisions.close()
        store.close()
