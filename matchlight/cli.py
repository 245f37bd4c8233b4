"""The ``matchlight`` command line."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import trio

from actors import RuntimeConfig, StoreError, SystemConfig


def _serve(args: argparse.Namespace) -> int:
    from matchlight.service import ServeConfig, parse_listen, serve

    try:
        parse_listen(args.listen)
    except ValueError as exc:
        print(f"matchlight serve: {exc}", file=sys.stderr)
        return 2
    config = ServeConfig(
        data=Path(args.data),
        listen=args.listen,
        drain_s=args.drain,
        system=SystemConfig(
            runtime=RuntimeConfig(
                snapshot_every=args.snapshot_every, passivate_after_s=args.passivate_after
            )
        ),
    )
    try:
        trio.run(serve, config)
    except (OSError, StoreError) as exc:  # address in use, data dir unusable
        print(f"matchlight serve: {exc}", file=sys.stderr)
        return 1
    return 0


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be at least 0, got {value}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be greater than 0, got {text}")
    return value


def _bench(args: argparse.Namespace) -> int:
    from matchlight import bench

    return bench.main(args)


def _bench_index(args: argparse.Namespace) -> int:
    from matchlight import bench_index

    return bench_index.main(args)


def _demo(args: argparse.Namespace) -> int:
    from matchlight import demo

    return demo.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matchlight",
        description="Real-time personalization and recommendation engine (msgpack-RPC server).",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="logging level for stderr (default INFO)"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve",
        help="run the server",
        description="Serve msgpack-RPC from an event store in DIR (created if missing). "
        "Prints 'matchlight listening on ADDRESS' when ready; SIGTERM stops it cleanly.",
    )
    serve.add_argument("--data", required=True, metavar="DIR", help="data directory")
    serve.add_argument(
        "--listen",
        default="127.0.0.1:7420",
        metavar="HOST:PORT|unix:PATH",
        help="where to listen (default 127.0.0.1:7420; port 0 picks a free port)",
    )
    serve.add_argument(
        "--snapshot-every",
        type=_positive_int,
        default=100,
        metavar="N",
        help="snapshot an actor's state every N events (default 100)",
    )
    serve.add_argument(
        "--passivate-after",
        type=_positive_float,
        default=300.0,
        metavar="SECONDS",
        help="drop an idle actor from memory after this long (default 300)",
    )
    serve.add_argument(
        "--drain",
        type=_positive_float,
        default=5.0,
        metavar="SECONDS",
        help="on SIGTERM, let in-flight requests finish for this long (default 5)",
    )
    serve.set_defaults(func=_serve)

    bench = sub.add_parser(
        "bench",
        help="run benchmarks",
        description="Benchmarks: `ingest` loads a real server from client processes; `index` "
        "times in-process retrieval against SQLite, Tantivy and PostgreSQL, and the item "
        "index's rebuild from an LMDB event store at startup.",
    )
    bench_sub = bench.add_subparsers(dest="bench", required=True, metavar="BENCH")
    ingest = bench_sub.add_parser(
        "ingest",
        help="durable, acknowledged ingest throughput over RPC",
        description="Start `matchlight serve` on a temporary data dir and measure durable, "
        "acknowledged events/s over RPC with 1 and 4 client processes, plus the group-commit "
        "size the server achieved.",
    )
    ingest.add_argument(
        "--events", type=_positive_int, default=200_000, help="events per run (default 200000)"
    )
    ingest.add_argument(
        "--batch", type=_positive_int, default=1000, help="events per ingest call (default 1000)"
    )
    ingest.add_argument(
        "--clients", default="1,4", help="comma-separated client process counts (default 1,4)"
    )
    ingest.add_argument(
        "--users", type=_positive_int, default=100_000, help="distinct users (default 100000)"
    )
    ingest.add_argument(
        "--items", type=_positive_int, default=20_000, help="distinct items (default 20000)"
    )
    ingest.add_argument(
        "--depth",
        type=_positive_int,
        default=2,
        help="ingest calls each client keeps in flight (default 2)",
    )
    ingest.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    ingest.set_defaults(func=_bench)
    index = bench_sub.add_parser(
        "index",
        help="filtered retrieval latency vs SQLite, Tantivy and PostgreSQL, same results",
        description="Load the same synthetic catalogue into Matchlight's index, SQLite, Tantivy "
        "and (given a server) PostgreSQL, check that every engine returns the same results for "
        "six query classes, and print p50/p99 latency per class, the cost of a visible update "
        "and the ratios to each peer; first, time the index's startup rebuild from an LMDB "
        "event store written through the actor system.",
    )
    index.add_argument(
        "--items", type=_positive_int, default=100_000, help="catalogue size (default 100000)"
    )
    index.add_argument(
        "--queries",
        type=_positive_int,
        default=300,
        help="random query instances per class (default 300)",
    )
    index.add_argument(
        "--updates",
        type=_positive_int,
        default=1000,
        help="like-counter updates timed per engine, and again batched (default 1000)",
    )
    index.add_argument("--seed", type=int, default=1, help="catalogue and query seed (default 1)")
    index.add_argument(
        "--rebuild-items",
        type=_non_negative_int,
        default=100_000,
        metavar="N",
        help="items in the LMDB event store whose startup index rebuild is timed first "
        "(default 100000; 0 skips it)",
    )
    index.add_argument(
        "--postgres",
        metavar="DSN",
        help="PostgreSQL to compare with (default: $MATCHLIGHT_BENCH_POSTGRES; skipped if unset "
        "or unreachable)",
    )
    index.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    index.set_defaults(func=_bench_index)

    demo = sub.add_parser(
        "demo",
        help="a one-minute tour on a temporary data dir",
        description="Start the engine on a temporary data dir, ingest a synthetic marketplace, "
        "kill it, restart it, and show that the state survived.",
    )
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
