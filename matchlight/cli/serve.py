"""``matchlight serve``: run the msgpack-RPC server on a data directory.

Every problem an operator can fix (a bad flag value, an unreadable config,
tokens or TLS file, a damaged state file, listening beyond loopback without
tokens) stops the command with one line on stderr and exit status 2 before
anything starts; a failure while serving (the address in use, the data
directory) with one line and exit status 1. Only bugs print a traceback.
"""

from __future__ import annotations

import argparse
import json
import socket
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from actors import DEFAULT_CLOCK_SKEW_S, MatchlightError, RuntimeConfig, SystemConfig
from actors.system import DEFAULT_MAX_NUMERIC_FIELDS
from matchlight.address import Address, parse_connect, parse_listen
from matchlight.cli.argtypes import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)
from matchlight.cli.command import Subparsers, add_command, fail
from matchlight.cluster.partitions import DEFAULT_PARTITIONS
from matchlight.server.node import default_workers

if TYPE_CHECKING:
    import ssl

    from matchlight.cluster.config import ClusterConfig
    from matchlight.server.config import ServeConfig
    from matchlight.server.telemetry import Telemetry


def register(sub: Subparsers) -> None:
    """Add ``serve`` to the ``matchlight`` command line."""
    parser = add_command(
        sub,
        "serve",
        help="run the server",
        description="Serve msgpack-RPC from an event store in DIR (created if missing). "
        "Prints 'matchlight listening on ADDRESS' when ready; SIGTERM stops it cleanly.",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="data directory")
    parser.add_argument(
        "--listen",
        default="127.0.0.1:7420",
        metavar="HOST:PORT|unix:PATH",
        help="where to listen (port 0 picks a free port)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        default=default_workers(),
        metavar="N",
        help="processes on this node: N > 1 runs one writer (owns the event log) and N-1 "
        "readers (answer every request from projections that follow the log) under a "
        "supervisor that restarts them; 1 serves everything in one process. The default is "
        "one reader per core plus the writer, at least 3",
    )
    # Set by the supervisor for each worker it starts (see matchlight.server.workers).
    parser.add_argument("--worker-spec", help=argparse.SUPPRESS)
    _actor_arguments(parser)
    _connection_arguments(parser)
    _ranking_arguments(parser)
    _cluster_arguments(parser)
    parser.set_defaults(func=run)


def _cluster_arguments(parser: argparse.ArgumentParser) -> None:
    """A node of a cluster over NATS JetStream (one process per node)."""
    group = parser.add_argument_group(
        "cluster",
        "with --log, this server is one node of a cluster: the event log is a NATS "
        "JetStream stream, DIR holds this node's copy, users are served by the node "
        "holding their partition (others forward to it); --workers does not apply",
    )
    group.add_argument(
        "--log",
        metavar="nats://H1:P1,H2:P2,…",
        help="the NATS servers of the cluster's stream (any of them; give all three)",
    )
    group.add_argument(
        "--node-id",
        metavar="ID",
        help="this node's id, stable across restarts (default: the host name)",
    )
    group.add_argument(
        "--advertise",
        metavar="HOST:PORT",
        help="where other nodes reach this one (default: the --listen address)",
    )
    group.add_argument(
        "--partitions",
        type=positive_int,
        default=DEFAULT_PARTITIONS,
        metavar="P",
        help="user partitions of the cluster, fixed for its life: give every node the same",
    )
    group.add_argument(
        "--replicas",
        type=positive_int,
        default=3,
        metavar="R",
        help="replicas of the stream when this node creates it (3 for a 3-server NATS cluster)",
    )


def _actor_arguments(parser: argparse.ArgumentParser) -> None:
    """How the actors keep and check their state."""
    parser.add_argument(
        "--snapshot-every",
        type=positive_int,
        default=100,
        metavar="N",
        help="snapshot an actor's state every N events",
    )
    parser.add_argument(
        "--item-snapshot-within",
        type=non_negative_int,
        default=SystemConfig().item_snapshot_within,
        metavar="N",
        help="also snapshot an item on its first event, and on its next event once its last "
        "snapshot is N log positions behind: a start rebuilds the item index from the items' "
        "snapshots and replays the events after them, so after a crash this bounds that "
        "replay to about N events (default: %(default)s; 0: only --snapshot-every)",
    )
    parser.add_argument(
        "--cooccurrence-snapshot-every",
        type=positive_int,
        default=SystemConfig().cooccurrence_snapshot_every,
        metavar="N",
        help="write the co-occurrence snapshot again every N events while serving (from a "
        "forked process), so a start after a crash replays at most about N events of it "
        "(default: %(default)s; a clean stop always writes it)",
    )
    parser.add_argument(
        "--max-apply-lag",
        type=non_negative_int,
        default=SystemConfig().max_apply_lag,
        metavar="EVENTS",
        help="with --workers 2 or more: hold new writes while a reader is more than this many "
        "events behind the log, so a read (which first applies everything committed) waits "
        "for at most about that many events, and a restart after a crash replays no more "
        "than that of the readers' lag (default: %(default)s; 0: never hold)",
    )
    parser.add_argument(
        "--passivate-after",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="drop an idle actor from memory after this long",
    )
    parser.add_argument(
        "--clock-skew",
        type=non_negative_float,
        default=DEFAULT_CLOCK_SKEW_S,
        metavar="SECONDS",
        help="accept events stamped at most this far ahead of this server's clock; later "
        "ones (e.g. milliseconds sent as seconds) are refused as bad_request",
    )
    parser.add_argument(
        "--max-numeric-fields",
        type=positive_int,
        default=DEFAULT_MAX_NUMERIC_FIELDS,
        metavar="N",
        help="distinct numeric fields the catalogue may have, item numbers and event types "
        "together; a write bringing more is refused",
    )


def _connection_arguments(parser: argparse.ArgumentParser) -> None:
    """Who may connect, how many, for how long, and over TLS or not."""
    parser.add_argument(
        "--drain",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="on SIGTERM, let in-flight requests finish for this long",
    )
    parser.add_argument(
        "--tokens",
        metavar="FILE",
        help="require authentication: one 'ROLE TOKEN' per line, roles read (search, "
        "recommend, get_*), ingest (read + ingest, upsert_items, remove_items) and admin "
        "(everything); without it every caller may call everything",
    )
    parser.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="listen beyond loopback without --tokens (refused otherwise)",
    )
    parser.add_argument(
        "--max-connections",
        type=positive_int,
        default=1024,
        metavar="N",
        help="open connections at most; more are closed at once",
    )
    parser.add_argument(
        "--max-in-flight",
        type=positive_int,
        default=4096,
        metavar="N",
        help="requests handled at once in total; more are answered 'overloaded'",
    )
    parser.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="close a connection idle this long with nothing in flight",
    )
    parser.add_argument(
        "--message-timeout",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="close a connection whose message is still incomplete after this long",
    )
    parser.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this PEM certificate")
    parser.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")


def _ranking_arguments(parser: argparse.ArgumentParser) -> None:
    """The surfaces, the legacy feed to migrate from, the model, and the records kept."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="surfaces TOML file: retrieval, blend, rules, diversity, exploration per product "
        "surface (default: only the built-in 'default' surface)",
    )
    parser.add_argument(
        "--legacy-feed",
        metavar="PATH",
        help="the old batch feed, to migrate surfaces from one at a time: a .jsonl or .csv "
        "file, a directory of dated snapshots (the newest complete one wins; a NAME.done "
        "file marks one complete), or sqlite:PATH?table=NAME. Loaded into DIR/legacy and "
        "reloaded when a new snapshot appears; see set_migration",
    )
    parser.add_argument(
        "--feed-poll",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="how often to look for a new feed snapshot",
    )
    parser.add_argument(
        "--comparison-retention",
        type=positive_int,
        default=1_000_000,
        metavar="N",
        help="shadow comparison and served records kept in DIR/comparisons",
    )
    parser.add_argument(
        "--model-poll",
        type=positive_float,
        default=2.0,
        metavar="SECONDS",
        help="how often to look for a model written by `matchlight train`",
    )
    parser.add_argument(
        "--decision-retention",
        type=positive_int,
        default=1_000_000,
        metavar="N",
        help="recommend decisions kept in DIR/decisions; older ones are deleted",
    )


def run(args: argparse.Namespace) -> int:
    """Serve until SIGTERM; return the exit status (0 stopped, 1 failed, 2 refused to start)."""
    from matchlight.server.app import serve

    try:
        config = _load(args, _from_flags(args))
        cluster = _cluster(args)
    except _Refused as exc:
        return fail("serve", str(exc), 2)
    if cluster is None:
        target = partial(serve, config)
    else:
        from matchlight.cluster.node import serve_cluster  # imports nats-py only then

        target = partial(serve_cluster, config, cluster)
    # The process's global providers: the libraries' spans and metrics reach its exporters.
    config.telemetry.install()
    try:
        trio.run(target)
    except (OSError, MatchlightError, BaseExceptionGroup) as exc:  # address in use, data dir …
        error = operator_error(exc)
        if error is None:
            raise  # a bug: keep its traceback
        if config.worker is not None and config.worker.say_failed(reason(error)):
            return 1  # its supervisor says why, once for every worker that failed alike
        return fail("serve", reason(error))
    finally:
        config.telemetry.shutdown()  # flush what is still batched
    return 0


class _Refused(Exception):
    """A reason not to start, for the operator to fix (exit status 2)."""


def _from_flags(args: argparse.Namespace) -> ServeConfig:
    """What the flags say by themselves; the files they name are read by :func:`_load`."""
    from matchlight.server.config import ServeConfig
    from matchlight.server.rpc import Limits
    from matchlight.server.worker_roles import WorkerRole

    return ServeConfig(
        data=Path(args.data),
        # A cluster node is one process (see matchlight.cluster.node).
        workers=1 if args.log is not None else args.workers,
        worker=None if args.worker_spec is None else WorkerRole(**json.loads(args.worker_spec)),
        argv=tuple(args.argv),
        listen=args.listen,
        drain_s=args.drain,
        feed_poll_s=args.feed_poll,
        comparison_retention=args.comparison_retention,
        limits=Limits(
            max_connections=args.max_connections,
            max_in_flight_total=args.max_in_flight,
            idle_timeout_s=args.idle_timeout,
            message_timeout_s=args.message_timeout,
        ),
        model_poll_s=args.model_poll,
        decision_retention=args.decision_retention,
        system=SystemConfig(
            runtime=RuntimeConfig(
                snapshot_every=args.snapshot_every, passivate_after_s=args.passivate_after
            ),
            clock_skew_s=args.clock_skew,
            max_numeric_fields=args.max_numeric_fields,
            cooccurrence_snapshot_every=args.cooccurrence_snapshot_every,
            max_apply_lag=args.max_apply_lag,
            item_snapshot_within=args.item_snapshot_within,
        ),
    )


def _cluster(args: argparse.Namespace) -> ClusterConfig | None:
    """The cluster flags, checked; ``None`` without ``--log``."""
    from matchlight.cluster.config import (
        ClusterConfig,
        ClusterConfigError,
        check_node_id,
        parse_log_url,
    )

    if args.log is None:
        return None
    try:
        return ClusterConfig(
            servers=parse_log_url(args.log),
            node_id=check_node_id(args.node_id or socket.gethostname().split(".")[0]),
            advertise=None if args.advertise is None else str(parse_connect(args.advertise)),
            partitions=args.partitions,
            replicas=args.replicas,
        )
    except (ClusterConfigError, ValueError) as exc:
        raise _Refused(str(exc).replace("--connect", "--advertise")) from None


def _load(args: argparse.Namespace, config: ServeConfig) -> ServeConfig:
    """``config`` with the files the flags name, checked before anything starts.

    In this order: the address, config, tokens and feed; the state files in
    DIR (a bad one would otherwise fail deep inside Trio's nurseries); whether
    listening there without tokens is allowed; the telemetry from the
    ``OTEL_*`` environment; the TLS certificate and key.

    Raises:
        _Refused: the first problem found.
    """
    from legacy_adapter import LegacyAdapterError, load_migration_config, open_source
    from matchlight.server.auth import TokensError, load_tokens
    from matchlight.server.state_files import check_state_files
    from ranker import ConfigError, Surfaces, load_surfaces

    try:
        address = parse_listen(args.listen)
        surfaces = Surfaces() if args.config is None else load_surfaces(args.config)
        migration = {} if args.config is None else load_migration_config(args.config)
        tokens = None if args.tokens is None else load_tokens(args.tokens)
        feed = None if args.legacy_feed is None else open_source(args.legacy_feed)
    except (ValueError, ConfigError, TokensError, LegacyAdapterError) as exc:
        raise _Refused(str(exc)) from exc
    try:
        check_state_files(config.data, feed=feed is not None)
    except MatchlightError as exc:  # the message names the file and the field
        raise _Refused(str(exc)) from exc
    _check_access(args, address, authenticated=tokens is not None)
    telemetry = _telemetry()
    tls = _tls(args)
    return attrs.evolve(
        config,
        surfaces=surfaces,
        config_file=None if args.config is None else Path(args.config),
        migration=migration,
        tokens=tokens,
        legacy_feed=feed,
        telemetry=telemetry,
        tls=tls,
    )


def _check_access(args: argparse.Namespace, address: Address, *, authenticated: bool) -> None:
    """Refuse an unauthenticated listener beyond loopback, and half a TLS pair."""
    if not authenticated and not address.is_loopback and not args.allow_unauthenticated:
        raise _Refused(
            f"refusing to listen on {args.listen} without --tokens: anyone who can reach "
            "that address could read, write and delete everything. Give --tokens FILE (one "
            "'ROLE TOKEN' per line), listen on 127.0.0.1 or a unix: socket, or pass "
            "--allow-unauthenticated if the network itself is trusted."
        )
    if (args.tls_cert is None) != (args.tls_key is None):
        raise _Refused("--tls-cert and --tls-key go together")


def _telemetry() -> Telemetry:
    """Tracing and metrics as the ``OTEL_*`` environment says. Raises :exc:`_Refused`."""
    from matchlight.server.telemetry import configure

    try:
        return configure()
    except ValueError as exc:
        raise _Refused(str(exc)) from exc


def _tls(args: argparse.Namespace) -> ssl.SSLContext | None:
    """The TLS context of ``--tls-cert`` and ``--tls-key``, if given. Raises :exc:`_Refused`."""
    import ssl

    from matchlight.server.app import tls_context

    if args.tls_cert is None:
        return None
    try:
        return tls_context(args.tls_cert, args.tls_key)
    except (OSError, ssl.SSLError) as exc:
        raise _Refused(f"cannot load the TLS certificate and key: {exc}") from exc


def operator_error(exc: BaseException) -> BaseException | None:
    """The failure to tell the operator in one line, or ``None`` for a bug.

    Errors raised inside Trio's nurseries arrive wrapped in exception groups:
    a group whose every leaf is an expected failure (an ``OSError`` or one of
    Matchlight's own errors) gives its first leaf.
    """
    leaves = []
    pending = [exc]
    while pending:
        current = pending.pop(0)
        if isinstance(current, BaseExceptionGroup):
            pending[:0] = current.exceptions
        else:
            leaves.append(current)
    if leaves and all(isinstance(leaf, OSError | MatchlightError) for leaf in leaves):
        return leaves[0]
    return None


def reason(exc: BaseException) -> str:
    """An error as one line: an ``OSError`` we raised with a message, without ``[Errno N]``."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is None:
        return exc.strerror
    return str(exc)
