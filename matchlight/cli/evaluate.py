"""``matchlight evaluate``: off-policy estimates, checked on real logged bandit data.

    matchlight evaluate --open-bandit [--confidence 0.95] [--cache-dir DIR] [--json FILE]

Estimates each policy of the Open Bandit sample (a uniform-random and a Bernoulli
Thompson sampling policy, 10,000 logged rounds each, from the ``obp`` 0.4.1 wheel,
fetched with pip into the cache if missing) from the *other* policy's log with IPS,
self-normalised IPS and doubly robust estimators (:mod:`matchlight.evaluation.off_policy`),
and prints each estimate with its confidence interval, effective sample size and error
against the policy's on-policy click rate. Estimating a candidate surface config from
Matchlight's own decision log is not built yet.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from matchlight.cli.command import Subparsers, add_command, fail


def register(sub: Subparsers) -> None:
    """Add ``evaluate`` to the ``matchlight`` command line."""
    parser = add_command(
        sub,
        "evaluate",
        help="off-policy estimates (IPS, SNIPS, DR), checked on the Open Bandit sample",
        description="With --open-bandit: estimate each policy of the Open Bandit sample "
        "(uniform random and Bernoulli Thompson sampling, 10,000 logged rounds each, from the "
        "obp 0.4.1 wheel) from the other policy's log by IPS, self-normalised IPS and doubly "
        "robust estimation, each with a confidence interval and effective sample size, and "
        "print the error against the policy's own click rate. Estimates the log cannot "
        "support are refused with the reason.",
    )
    parser.add_argument(
        "--open-bandit",
        action="store_true",
        required=True,
        help="run the check on the Open Bandit sample (fetched with 'pip download' if missing)",
    )
    parser.add_argument(
        "--confidence",
        type=_confidence,
        default=0.95,
        metavar="LEVEL",
        help="the confidence intervals' level, between 0 and 1",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="where the downloaded wheel is kept (default $MATCHLIGHT_CACHE_DIR, else "
        "$XDG_CACHE_HOME/matchlight or ~/.cache/matchlight); a wheel or an unpacked "
        "directory of it may also be given with --wheel",
    )
    parser.add_argument("--wheel", type=Path, metavar="PATH", help="the obp 0.4.1 wheel to read")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    parser.set_defaults(func=run)


def _confidence(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"expected a level between 0 and 1, got {text}")
    return value


def run(args: argparse.Namespace) -> int:
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
