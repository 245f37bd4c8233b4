"""What a process that serves runs: its stores, its engine (actors, ranker, router) and its
RPC server until a signal. Shared by the single-process server (:mod:`.app`) and the
reader and writer workers of a node (:mod:`.worker_roles`)."""

from __future__ import annotations

import contextlib
import logging
import signal
import ssl
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from functools import partial
from typing import Any, Final

import attrs
import trio

from actors import ActorSystem, LmdbEventStore, Snapshot, open_actor_system
from actors.follower import DEFAULT_POLL_S
from actors.system import open_follower_system
from legacy_adapter import FeedStore, Router, open_router, watch_feed
from matchlight import __version__
from matchlight.server.config import ServeConfig
from matchlight.server.methods import Methods
from matchlight.server.rpc import RpcCounters, RpcServer
from ranker import DecisionLog, RankerActor, keep_copy, open_ranker

log = logging.getLogger(__name__)

#: In the data directory: the co-occurrence as of a shutdown, so a start replays only the
#: log after it (see :func:`actors.cooccurrence.load_cooccurrence`).
COOCCURRENCE_FILE: Final = "cooccurrence.snapshot"


async def start_feed_watch(config: ServeConfig, stores: Stores, nursery: trio.Nursery) -> None:
    """Load new legacy-feed snapshots in ``nursery``, if this process is the feed's loader;
    the current one is loaded (if new) before this returns, so before the server listens."""
    if stores.feed is not None and stores.feed.loader and config.legacy_feed is not None:
        await nursery.start(
            partial(watch_feed, stores.feed, config.legacy_feed, poll_s=config.feed_poll_s)
        )


@attrs.frozen(kw_only=True)
class Stores:
    """The data directory's stores, which outlive the actors that use them."""

    events: LmdbEventStore
    decisions: DecisionLog
    comparisons: DecisionLog
    feed: FeedStore | None


@contextlib.contextmanager
def open_stores(
    config: ServeConfig, *, events_readonly: bool = False, feed_loader: bool = True
) -> Iterator[Stores]:
    """Open the event store (for reading only in a reader worker), the decision and
    comparison logs and the feed store (with ``--legacy-feed`` only; ``feed_loader``: this
    process loads new snapshots, others only follow them); close them, last opened first,
    however the block ends.

    Raises:
        StoreError: the data directory is unusable.
    """
    with contextlib.ExitStack() as stack:
        yield Stores(
            events=stack.enter_context(
                LmdbEventStore(config.data / "events", readonly=events_readonly)
            ),
            decisions=stack.enter_context(
                DecisionLog(config.data / "decisions", retention=config.decision_retention)
            ),
            comparisons=stack.enter_context(
                DecisionLog(config.data / "comparisons", retention=config.comparison_retention)
            ),
            feed=None
            if config.legacy_feed is None
            else stack.enter_context(FeedStore(config.data / "legacy", loader=feed_loader)),
        )


@attrs.frozen(kw_only=True)
class Engine:
    """What the RPC methods call: the actors, the ranker and the migration router."""

    system: ActorSystem
    ranker: RankerActor
    router: Router


@contextlib.asynccontextmanager
async def open_engine(
    config: ServeConfig,
    stores: Stores,
    *,
    follow: Callable[[Snapshot], None] | None = None,
    keeper: bool = True,
    follow_poll_s: float = DEFAULT_POLL_S,
    owns_user: Callable[[str], bool] | None = None,
) -> AsyncIterator[Engine]:
    """Run the actor system, the ranker and the router over ``stores`` for the block.

    With ``follow`` (a reader worker), the actor system follows the log the writer
    worker writes, looking for new events every ``follow_poll_s`` and when its
    follower is nudged, and hands its actors' snapshots to ``follow``; only the
    ``keeper`` reader writes the co-occurrence snapshot on exit. ``owns_user``: a cluster
    node's partitions (see :class:`~actors.ActorSystem`)."""
    cooccurrence_file = config.data / COOCCURRENCE_FILE
    # What the decisions this process takes name by digest, for `matchlight explain`.
    keep_copy(config.data, config.surfaces)
    actors = (
        open_actor_system(
            stores.events,
            config.system,
            cooccurrence_file=cooccurrence_file,
            owns_user=owns_user,
        )
        if follow is None
        else open_follower_system(
            stores.events,
            config.system,
            save_snapshot=follow,
            cooccurrence_file=cooccurrence_file,
            snapshot_cooccurrence=keeper,
            poll_s=follow_poll_s,
            freeze_applied=True,  # a reader worker's process: see actors.follower
        )
    )
    async with (
        actors as system,
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
        yield Engine(system=system, ranker=ranker, router=router)


def rpc_server(
    config: ServeConfig, engine: Engine, methods_class: type[Methods] = Methods, **extra: Any
) -> RpcServer:
    """The RPC server over the contract's methods, which read what it counts for ``stats``.

    ``extra``: more arguments of ``methods_class`` (a reader worker's forwarded writes)."""
    counters = RpcCounters()
    methods = methods_class(
        engine.system,
        engine.ranker,
        router=engine.router,
        rpc=counters,
        **extra,
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


async def serve_until_signal(
    config: ServeConfig,
    rpc: RpcServer,
    listeners: Sequence[trio.abc.Listener[Any]],
    ready: Callable[[], None],
    *,
    public: bool = True,
) -> None:
    """Accept connections until SIGTERM or SIGINT, then stop accepting, drain and cut off.

    ``ready()`` is called once connections are accepted. ``public``: the listeners are
    the address clients use (TLS with ``--tls-cert``), not the writer worker's own unix
    socket."""
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as connections:
            async with trio.open_nursery() as acceptors:
                await acceptors.start(
                    partial(
                        trio.serve_listeners,
                        rpc.serve_stream,
                        secured(listeners, config.tls if public else None),
                        handler_nursery=connections,
                    )
                )
                ready()
                async for signum in signals:
                    log.info("received %s; shutting down", signal.Signals(signum).name)
                    break
                acceptors.cancel_scope.cancel()
            rpc.start_draining()
            with trio.move_on_after(config.drain_s):
                await rpc.wait_idle()
            connections.cancel_scope.cancel()


def secured(
    listeners: Sequence[trio.abc.Listener[Any]], tls: ssl.SSLContext | None
) -> list[trio.abc.Listener[Any]]:
    """``listeners``, wrapped in TLS when there is a context."""
    if tls is None:
        return list(listeners)
    return [trio.SSLListener(listener, tls, https_compatible=False) for listener in listeners]
