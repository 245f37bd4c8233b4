"""``matchlight serve``: one process, a node of worker processes, or one of its workers.

With ``--workers 1`` one process runs the event store, the actor system and the
RPC listeners (below). With more, this process is the supervisor of a writer
and readers (:mod:`.workers`), and each of those runs :mod:`.worker_roles`.

Startup prints one line ``matchlight listening on ADDRESS`` (with the real
port when asked for port 0) once it accepts connections. SIGTERM or SIGINT
stops it cleanly: listeners close, new requests get ``unavailable``,
in-flight requests get ``drain_s`` seconds to finish, queued writes are
committed, active actors are snapshotted, and the store is closed.
"""

from __future__ import annotations

import gc
import logging
import os
import ssl
import sys
from functools import partial

import trio

from actors import DirectoryLock
from matchlight.address import Address
from matchlight.server.config import ServeConfig
from matchlight.server.engine import (
    open_engine,
    open_stores,
    rpc_server,
    serve_until_signal,
    start_feed_watch,
)
from matchlight.server.sockets import open_listeners
from matchlight.server.worker_roles import (
    exit_with_parent,
    serve_reader,
    serve_writer,
)
from matchlight.server.workers import supervise
from ranker import keep_config

log = logging.getLogger(__name__)


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
    if config.worker is not None:
        # The supervisor holds the data directory's lock (and lends it to the writer).
        run = serve_writer if config.worker.kind == "writer" else serve_reader
        async with trio.open_nursery() as nursery:
            nursery.start_soon(exit_with_parent, os.getppid())
            await run(config, config.worker)
            nursery.cancel_scope.cancel()
        return
    if config.workers > 1:
        await supervise(config)
        return
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
    listeners, address = await open_listeners(config.listen)
    keep_config(config.data, config.surfaces, config.config_file)
    with open_stores(config) as stores:
        async with open_engine(config, stores) as engine, trio.open_nursery() as background:
            await start_feed_watch(config, stores, background)
            gc.freeze()  # the rebuilt index lives as long as the server: keep it out of GC passes
            rpc = rpc_server(config, engine)
            await serve_until_signal(config, rpc, listeners, partial(_announce, config, address))
            background.cancel_scope.cancel()


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
