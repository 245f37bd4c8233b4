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
import logging
import os
import signal
import socket
import ssl
import stat
import sys
import time
from collections.abc import AsyncIterator, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import trio

from actors import ActorSystem, DirectoryLock, LmdbEventStore, SystemConfig, open_actor_system
from legacy_adapter import FeedSource, FeedStore, Router, open_router, watch_feed
from matchlight import __version__
from matchlight.address import Address, parse_listen
from matchlight.server.auth import Tokens
from matchlight.server.methods import Methods
from matchlight.server.rpc import Limits, RpcCounters, RpcServer
from matchlight.server.telemetry import NOOP, Telemetry
from ranker import DecisionLog, RankerActor, Surfaces, open_ranker

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


async def _open_listeners(listen: str) -> tuple[list[trio.SocketListener], Address]:
    """Bind ``listen``; the listeners and the address as bound (the real port for port 0).

    Raises:
        ValueError: ``listen`` is not an address (see :func:`parse_listen`).
        OSError: it cannot be bound.
    """
    address = parse_listen(listen)
    if address.unix is not None:
        _remove_stale_socket(address.unix)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(address.unix)
        sock.listen(1024)
        return [trio.SocketListener(sock)], address
    try:
        listeners = await trio.open_tcp_listeners(address.port, host=address.host)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {listen}: {exc.strerror}") from exc
    host, port = listeners[0].socket.getsockname()[:2]
    return list(listeners), Address(host=host, port=port)


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
    """Bind, open the stores and the actors, serve until a signal, then shut down in order."""
    listeners, address = await _open_listeners(config.listen)
    with _open_stores(config) as stores:
        async with _open_engine(config, stores) as engine, trio.open_nursery() as background:
            if stores.feed is not None and config.legacy_feed is not None:
                # The current snapshot is loaded (if new) before the server listens.
                await background.start(
                    partial(watch_feed, stores.feed, config.legacy_feed, poll_s=config.feed_poll_s)
                )
            gc.freeze()  # the rebuilt index lives as long as the server: keep it out of GC passes
            rpc = _rpc_server(config, engine)
            await _serve_until_signal(config, rpc, listeners, address)
            background.cancel_scope.cancel()


@attrs.frozen(kw_only=True)
class _Stores:
    """The data directory's stores, which outlive the actors that use them."""

    events: LmdbEventStore
    decisions: DecisionLog
    comparisons: DecisionLog
    feed: FeedStore | None


@contextlib.contextmanager
def _open_stores(config: ServeConfig) -> Iterator[_Stores]:
    """Open the event store, the decision and comparison logs and the feed store (with
    ``--legacy-feed`` only); close them, last opened first, however the block ends.

    Raises:
        StoreError: the data directory is unusable.
    """
    with contextlib.ExitStack() as stack:
        yield _Stores(
            events=stack.enter_context(LmdbEventStore(config.data / "events")),
            decisions=stack.enter_context(
                DecisionLog(config.data / "decisions", retention=config.decision_retention)
            ),
            comparisons=stack.enter_context(
                DecisionLog(config.data / "comparisons", retention=config.comparison_retention)
            ),
            feed=None
            if config.legacy_feed is None
            else stack.enter_context(FeedStore(config.data / "legacy")),
        )


@attrs.frozen(kw_only=True)
class _Engine:
    """What the RPC methods call: the actors, the ranker and the migration router."""

    system: ActorSystem
    ranker: RankerActor
    router: Router


@contextlib.asynccontextmanager
async def _open_engine(config: ServeConfig, stores: _Stores) -> AsyncIterator[_Engine]:
    """Run the actor system, the ranker and the router over ``stores`` for the block."""
    async with (
        open_actor_system(stores.events, config.system) as system,
        open_ranker(
            system,
            config.surfaces,
            data_dir=config.data,
            decisions=stores.decisions,
            poll_s=config.model_poll_s,
            # models/CURRENT was checked before start; a model that does not load stops it.
            require_model=True,
        ) as ranker,
        open_router(
            ranker,
            stores.feed,
            data_dir=config.data,
            comparisons=stores.comparisons,
            config=config.migration,
        ) as router,
    ):
        yield _Engine(system=system, ranker=ranker, router=router)


def _rpc_server(config: ServeConfig, engine: _Engine) -> RpcServer:
    """The RPC server over the contract's methods, which read what it counts for ``stats``."""
    counters = RpcCounters()
    methods = Methods(
        engine.system,
        engine.ranker,
        router=engine.router,
        rpc=counters,
        telemetry=config.telemetry,
        version=__version__,
        started=time.monotonic(),
    )
    return RpcServer(
        methods.table(),
        config.limits,
        counters=counters,
        tokens=config.tokens,
        telemetry=config.telemetry,
    )


async def _serve_until_signal(
    config: ServeConfig, rpc: RpcServer, listeners: list[trio.SocketListener], address: Address
) -> None:
    """Accept connections until SIGTERM or SIGINT, then stop accepting, drain and cut off."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptors:
                await acceptors.start(
                    partial(
                        trio.serve_listeners,
                        rpc.serve_stream,
                        _secured(listeners, config.tls),
                        handler_nursery=connections,
                    )
                )
                _announce(config, address)
                async for signum in signals:
                    log.info("received %s; shutting down", signal.Signals(signum).name)
                    break
                acceptors.cancel_scope.cancel()
            rpc.start_draining()
            with trio.move_on_after(config.drain_s):
                await rpc.wait_idle()
            connections.cancel_scope.cancel()


def _secured(
    listeners: list[trio.SocketListener], tls: ssl.SSLContext | None
) -> list[trio.abc.Listener[Any]]:
    """``listeners``, wrapped in TLS when there is a context."""
    if tls is None:
        return list(listeners)
    return [trio.SSLListener(listener, tls, https_compatible=False) for listener in listeners]


def _announce(config: ServeConfig, address: Address) -> None:
    """Print the line that says the server accepts connections, and log how it is secured."""
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
