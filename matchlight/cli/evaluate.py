"""``matchlight evaluate``: a candidate surfaces config estimated from the decision log,
off-policy estimates checked on real logged bandit data, and the interleaving study.

    matchlight evaluate --data DIR --candidate FILE [--surface S] [--model VERSION]
                        [--since T] [--window S] [--engagement TYPES] [--json FILE]
    matchlight evaluate --open-bandit [--confidence 0.95] [--cache-dir DIR] [--json FILE]
    matchlight evaluate --interleaving [--runs N] [--budget N] [--null-runs N]
                        [--null-budget N] [--confidence 0.95] [--seed N] [--json FILE]

Estimates each policy of the Open Bandit sample (a uniform-random and a Bernoulli
Thompson sampling policy, 10,000 logged rounds each, from the ``obp`` 0.4.1 wheel,
fetched with pip into the cache if missing) from the *other* policy's log with IPS,
self-normalised IPS and doubly robust estimators (:mod:`matchlight.evaluation.off_policy`),
and prints each estimate with its confidence interval, effective sample size and error
against the policy's on-policy click rate.

``--candidate`` runs :mod:`matchlight.evaluation.candidate`: every decision
logged in ``DIR`` is ranked again by the candidate config at the log position
it was taken, and IPS, SNIPS and DR estimate the candidate's engagement per
slate, beside what the logged policy earned.

``--interleaving`` runs :mod:`matchlight.evaluation.interleaving_study`: on the
synthetic marketplace with simulated users whose preference between two
rankers is known, how many requests interleaving and a 50/50 A/B split need
for a verdict under the same sequential test, whether the verdicts are right,
and how often "no difference" gives one anyway (the false-positive rate).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from legacy_adapter.interleaving import DEFAULT_WINDOW_S, NOT_ENGAGEMENT
from matchlight.cli.argtypes import engagement_types, non_negative_float, positive_int, share
from matchlight.cli.command import Subparsers, add_command, fail
from matchlight.cli.shadow_report import parse_since


def register(sub: Subparsers) -> None:
    """Add ``evaluate`` to the ``matchlight`` command line."""
    parser = add_command(
        sub,
        "evaluate",
        help="estimate a candidate surfaces config from the decision log (IPS, SNIPS, DR)",
        description="With --data and --candidate: replay every decision logged in DIR at its "
        "log position, rank it again by the candidate surfaces config, and estimate the "
        "candidate's engagement per slate by IPS, self-normalised IPS and doubly robust "
        "estimation over each slot's logged probability, beside what the logged policy "
        "earned; an estimate the log cannot support is refused with the reason (serve the "
        "surface with a [surfaces.NAME.stochastic] table so that other rankings are "
        "supported). With --open-bandit: estimate each policy of the Open Bandit sample "
        "(uniform random and Bernoulli Thompson sampling, 10,000 logged rounds each, from the "
        "obp 0.4.1 wheel) from the other policy's log by IPS, self-normalised IPS and doubly "
        "robust estimation, each with a confidence interval and effective sample size, and "
        "print the error against the policy's own click rate. Estimates the log cannot "
        "support are refused with the reason. With --interleaving: on the synthetic "
        "marketplace with simulated users whose preference between two rankers is known, "
        "measure the requests team-draft interleaving and a 50/50 A/B split need for a "
        "verdict of the same sequential test, and the false-positive rate under no difference.",
    )
    mode = parser.add_mutually_exclusive_group(required=True)
    mode.add_argument(
        "--candidate",
        metavar="FILE",
        help="the candidate surfaces config (TOML) to estimate from the decisions in --data",
    )
    mode.add_argument(
        "--open-bandit",
        action="store_true",
        help="run the check on the Open Bandit sample (fetched with 'pip download' if missing)",
    )
    mode.add_argument(
        "--interleaving",
        action="store_true",
        help="run the interleaving study (a few minutes; progress on stderr)",
    )
    parser.add_argument(
        "--confidence",
        type=share,
        default=0.95,
        metavar="LEVEL",
        help="the confidence intervals' level, between 0 and 1 (the sequential test's is 1 - "
        "the false-positive rate it allows)",
    )
    _candidate_arguments(parser)
    _study_arguments(parser)
    _open_bandit_arguments(parser)
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.set_defaults(func=run)


def _candidate_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``--candidate``."""
    logged = parser.add_argument_group("a candidate config (--candidate)")
    logged.add_argument("--data", metavar="DIR", help="the data directory whose decisions to use")
    logged.add_argument("--surface", metavar="S", help="only this surface's decisions")
    logged.add_argument(
        "--model",
        metavar="VERSION",
        help="rank the candidate with this model version (default: each decision's own)",
    )
    logged.add_argument(
        "--since",
        type=parse_since,
        metavar="T",
        help="only decisions at or after T: unix seconds or an ISO-8601 date or date-time",
    )
    logged.add_argument(
        "--window",
        type=non_negative_float,
        default=DEFAULT_WINDOW_S,
        metavar="S",
        help="an event naming no request_id counts for the user's latest decision listing the "
        "item at most S seconds before it",
    )
    logged.add_argument(
        "--engagement",
        type=engagement_types,
        metavar="TYPES",
        help="comma-separated event types that count as engagement (default: every type but "
        f"{', '.join(sorted(NOT_ENGAGEMENT))})",
    )


def _study_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``--interleaving``."""
    study = parser.add_argument_group("the interleaving study")
    study.add_argument(
        "--runs", type=positive_int, default=100, metavar="N", help="runs per scenario"
    )
    study.add_argument(
        "--budget",
        type=positive_int,
        default=300_000,
        metavar="N",
        help="requests a run may serve before it counts as undecided",
    )
    study.add_argument(
        "--null-runs",
        type=positive_int,
        default=300,
        metavar="N",
        help="runs of the no-difference scenario, for its false-positive rate",
    )
    study.add_argument(
        "--null-budget",
        type=positive_int,
        default=20_000,
        metavar="N",
        help="requests per no-difference run, the test checked after each",
    )
    study.add_argument("--seed", type=int, default=1, help="the simulation's seed")


def _open_bandit_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of ``--open-bandit``."""
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="where the downloaded wheel is kept (default $MATCHLIGHT_CACHE_DIR, else "
        "$XDG_CACHE_HOME/matchlight or ~/.cache/matchlight); a wheel or an unpacked "
        "directory of it may also be given with --wheel",
    )
    parser.add_argument("--wheel", type=Path, metavar="PATH", help="the obp 0.4.1 wheel to read")


def run(args: argparse.Namespace) -> int:
    if args.interleaving:
        return _interleaving(args)
    if args.candidate is not None:
        return _candidate(args)
    return _open_bandit(args)


def _candidate(args: argparse.Namespace) -> int:
    from actors import StoreError
    from matchlight.evaluation.candidate import CandidateError, evaluate_candidate
    from ranker import RankerError

    if args.data is None:
        return fail("evaluate", "--candidate needs --data DIR, the data directory to replay")
    try:
        found = evaluate_candidate(
            args.data,
            args.candidate,
            surface=args.surface,
            model=args.model,
            since=args.since,
            window_s=args.window,
            engagement_types=args.engagement,
            confidence=args.confidence,
            progress=lambda line: print(f"matchlight evaluate: {line}", file=sys.stderr),
        )
    except (CandidateError, RankerError, StoreError, OSError) as exc:
        return fail("evaluate", str(exc))
    level = f"{args.confidence:.0%}"
    print(
        f"{found.candidate}, estimated from {found.decisions:,} decisions"
        + (f" of surface {found.surface}" if found.surface else "")
        + " (engagement per slate: engaged items among those served):"
    )
    for why, n in found.skipped.items():
        print(f"  left out: {n:,} decisions, {why}")
    print(f"  {'estimator':<9} {'estimate':>9} {level + ' interval':>22} {'ESS':>8}")
    logged = found.logged
    for e in (logged, *found.estimates):
        if e.refused is not None:
            print(f"  {e.estimator:<9} refused: {e.refused}")
            continue
        interval = f"[{e.ci_low:.4f}, {e.ci_high:.4f}]"
        print(f"  {e.estimator:<9} {e.value:>9.4f} {interval:>22} {e.ess:>8.0f}")
    print("  (logged: what the logged policy earned; the others: the candidate's estimates)")
    if args.json:
        Path(args.json).write_text(json.dumps(found.view(), indent=2, allow_nan=False))
    return 0


def _open_bandit(args: argparse.Namespace) -> int:
    from matchlight.evaluation.datasets import DatasetError
    from matchlight.evaluation.open_bandit import cross_checks, fetch, load_logs

    try:
        wheel = args.wheel or fetch(args.cache_dir, lambda line: print(line, file=sys.stderr))
        checks = cross_checks(load_logs(wheel), confidence=args.confidence)
    except (DatasetError, OSError) as exc:
        return fail("evaluate", str(exc))
    level = f"{args.confidence:.0%}"
    for check in checks:
        print(
            f"{check.target} policy, estimated from the {check.logged} policy's log "
            f"(on-policy click rate {check.on_policy:.5f}):"
        )
        print(
            f"  {'estimator':<9} {'estimate':>9} {level + ' interval':>22} {'ESS':>7} {'error':>8}"
        )
        for e in check.estimates:
            if e.refused is not None:
                print(f"  {e.estimator:<9} refused: {e.refused}")
                continue
            error = (e.value - check.on_policy) / check.on_policy
            interval = f"[{e.ci_low:.5f}, {e.ci_high:.5f}]"
            print(f"  {e.estimator:<9} {e.value:>9.5f} {interval:>22} {e.ess:>7.0f} {error:>+8.1%}")
    if args.json:
        Path(args.json).write_text(json.dumps([c.view() for c in checks], indent=2))
    return 0


def _interleaving(args: argparse.Namespace) -> int:
    from matchlight.evaluation.interleaving_study import SCENARIOS, K, study

    alpha = 1.0 - args.confidence
    results = []
    for scenario in SCENARIOS:
        null = scenario == "no difference"
        runs, budget = (args.null_runs, args.null_budget) if null else (args.runs, args.budget)

        def progress(done: int, scenario: str = scenario, runs: int = runs) -> None:
            if done % 10 == 0 or done == runs:
                print(f"  {scenario}: {done}/{runs} runs", file=sys.stderr)

        results.append(
            study(
                scenario, runs=runs, budget=budget, alpha=alpha, seed=args.seed, progress=progress
            )
        )
    print(
        f"Interleaving against a 50/50 A/B split on the synthetic marketplace (k = {K}; "
        f"the same sequential test at {args.confidence:.0%}, checked after every request):"
    )
    header = (
        f"  {'scenario':<34} {'hires/request rt | lg':>22} {'method':<13} "
        f"{'right':>6} {'wrong':>6} {'none':>5} {'median':>8} {'p90':>8}"
    )
    print(header)
    for result in results:
        rates = f"{result.hire_rates['realtime']:.4f} | {result.hire_rates['legacy']:.4f}"
        for n, method in enumerate((result.interleaving, result.ab)):
            first = f"{result.scenario:<34} {rates:>22}" if n == 0 else " " * 57
            print(
                f"  {first} {method.method:<13} {method.right:>6} {method.wrong:>6} "
                f"{method.undecided:>5} {_count(method.median_requests):>8} "
                f"{_count(method.p90_requests):>8}"
            )
    for result in results:
        a, b = result.interleaving.median_requests, result.ab.median_requests
        if result.truth is not None and a and b:
            print(f"  {result.scenario}: A/B needed {b / a:.1f}x the requests (medians)")
        if result.truth is None:
            for method in (result.interleaving, result.ab):
                rate = method.wrong / method.runs
                print(
                    f"  no difference, {method.method}: a verdict in {method.wrong} of "
                    f"{method.runs} runs ({rate:.1%}; allowed {alpha:.0%}) within "
                    f"{result.budget:,} requests each"
                )
    if args.json:
        Path(args.json).write_text(json.dumps([r.view() for r in results], indent=2))
    return 0


def _count(value: Any) -> str:
    return "-" if value is None else f"{value:,.0f}"
