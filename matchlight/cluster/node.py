"""``matchlight serve --log nats://…``: one node of a cluster over a NATS JetStream stream.

Start-up, in order: take the data directory's lock, bind, connect to NATS
(creating the stream and the lease bucket if this is the cluster's first
node), rebuild the actors from the local LMDB copy, follow the stream from
the position that copy stored until it has everything the stream holds now,
take this node's share of the partitions, then print ``matchlight listening
on ADDRESS``. A node with an empty data directory thus rebuilds everything
from the stream. SIGTERM releases the leases (others take the partitions at
once), drains and stops.

One process per node: ``--workers`` does not apply in cluster mode.
"""

from __future__ import annotations

import logging
import sys
from functools import partial

import trio
from opentelemetry.metrics import Meter, Observation

from actors import DirectoryLock
from matchlight.cluster.bridge import AsyncioThread
from matchlight.cluster.config import ClusterConfig
from matchlight.cluster.follower import ClusterWrites, StreamFollower
from matchlight.cluster.leases import Leases
from matchlight.cluster.partitions import Layout
from matchlight.cluster.routing import ClusterMethods, Peers
from matchlight.cluster.stream import EventStream, LogUnavailable
from matchlight.server.app import tune_gc
from matchlight.server.config import ServeConfig
from matchlight.server.engine import (
    open_engine,
    open_stores,
    rpc_server,
    serve_until_signal,
    start_feed_watch,
)
from matchlight.server.sockets import open_listeners
from ranker import keep_config

log = logging.getLogger(__name__)

#: How long start-up waits for the NATS cluster (a server, then its JetStream leader), seconds.
CONNECT_DEADLINE_S = 30.0


async def serve_cluster(config: ServeConfig, cluster: ClusterConfig) -> None:
    """Run one cluster node until SIGTERM/SIGINT.

    Raises:
        DirectoryLockedError: another process serves the data directory.
        OSError: the address cannot be bound.
        LogUnavailable: NATS could not be reached at start.
    """
    tune_gc()
    lock = DirectoryLock(config.data, purpose=f"matchlight serve --log (node {cluster.node_id})")
    lock.acquire()
    try:
        await _serve(config, cluster)
    finally:
        lock.release()
    print("matchlight stopped", file=sys.stderr, flush=True)


async def _serve(config: ServeConfig, cluster: ClusterConfig) -> None:
    listeners, address = await open_listeners(config.listen)
    keep_config(config.data, config.surfaces, config.config_file)
    layout = Layout(partitions=cluster.partitions)
    leases = Leases(cluster.node_id, cluster.advertise or str(address), layout)
    with AsyncioThread() as thread:
        stream = EventStream(
            cluster.servers, layout, name=f"matchlight-{cluster.node_id}", replicas=cluster.replicas
        )
        try:
            await thread.run(stream.connect, CONNECT_DEADLINE_S)
            with open_stores(config) as stores:
                async with (
                    open_engine(config, stores, owns_user=leases.owns_user) as engine,
                    trio.open_nursery() as background,
                ):
                    system = engine.system
                    follower = StreamFollower(thread, stream, system)
                    await background.start(follower.run)
                    log.info("following the stream from %d", follower.position + 1)
                    await follower.replay()
                    log.info("caught up with the stream at %d", follower.position)
                    system.publish = ClusterWrites(
                        follower, publish_deadline_s=cluster.publish_deadline_s
                    ).append
                    system.upstream_catch_up = follower.catch_up
                    await background.start(partial(leases.run, thread, stream))
                    observe(config.telemetry.meter, leases, follower)
                    await start_feed_watch(config, stores, background)
                    rpc = rpc_server(
                        config,
                        engine,
                        ClusterMethods,
                        leases=leases,
                        peers=Peers(background, _peer_token(config)),
                        follower=follower,
                        move_wait_s=cluster.move_wait_s,
                    )
                    await serve_until_signal(
                        config, rpc, listeners, partial(_announce, address, cluster, leases)
                    )
                    with trio.CancelScope(shield=True):
                        await leases.release_all(thread, stream)
                    background.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await thread.run(stream.close)


def observe(meter: Meter, leases: Leases, follower: StreamFollower) -> None:
    """The node's cluster gauges (read on the metrics exporter's thread), labelled ``node``:
    partitions served, and the last stream sequence applied."""
    labels = {"node": leases.node_id}
    meter.create_observable_gauge(
        "matchlight.cluster.partitions.owned",
        callbacks=[lambda _: [Observation(len(leases.partitions()), labels)]],
        unit="{partition}",
        description="Partitions this node serves now",
    )
    meter.create_observable_gauge(
        "matchlight.cluster.stream.position",
        callbacks=[lambda _: [Observation(follower.position, labels)]],
        unit="{message}",
        description="The last stream sequence this node applied",
    )


def _peer_token(config: ServeConfig) -> str | None:
    """The token this node forwards reads with: the first ``read`` (else ``admin``) token
    of the tokens file every node of a cluster is given (``None`` without tokens)."""
    return None if config.tokens is None else config.tokens.first("read", "admin")


def _announce(address: object, cluster: ClusterConfig, leases: Leases) -> None:
    print(f"matchlight listening on {address}", flush=True)
    log.info(
        "node %s of a cluster on %s serving %d of %d partitions",
        cluster.node_id,
        ",".join(cluster.servers),
        len(leases.partitions()),
        cluster.partitions,
    )


__all__ = ["LogUnavailable", "serve_cluster"]
