"""``matchlight shadow-report``: judge each surface's real-time path against legacy.

    matchlight shadow-report --data DIR [--surface S] [--since T] [--k N]
                             [--html FILE] [--json FILE] [--max-error-rate R ...]
                             [--window S] [--engagement TYPES] [--confidence C]

Reads the comparison records the migration router writes to ``DIR/comparisons``
(also while a server runs on ``DIR``: LMDB readers do not block its writer),
prints a table per surface (overlap@k, Jaccard@k, RBO, Kendall's tau, latency
of both paths, error and fallback rates, the A/A noise floor and a verdict), and
optionally writes the same report as JSON and as a self-contained HTML page
with charts. Surfaces in ``interleave`` mode also get their interleaving
results: engagement is read from the event log (``DIR/events``, read-only)
for the users who were served interleaved lists. Exit 0 on success, 1 when
there is nothing to report or a file cannot be written or read.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import lmdb

from legacy_adapter.interleaving import (
    DEFAULT_WINDOW_S,
    NOT_ENGAGEMENT,
    Interaction,
    read_histories,
)
from legacy_adapter.metrics import DEFAULT_THRESHOLDS, Thresholds
from legacy_adapter.report import build_report, format_table
from legacy_adapter.report_html import render_html
from matchlight.cli.argtypes import (
    engagement_types,
    fraction,
    non_negative_float,
    non_negative_int,
    positive_int,
    share,
)
from matchlight.cli.command import Subparsers, add_command, fail

COMPARISONS: Final = "comparisons"
_PAGE: Final = 5000

if TYPE_CHECKING:
    from ranker import DecisionLog


def parse_since(text: str) -> float:
    """Unix seconds from ``text``: a number of seconds, or an ISO-8601 date or date-time.

    A date or date-time without a UTC offset is taken as UTC (``2026-11-28``,
    ``2026-11-28T10:00``, ``2026-11-28T10:00+01:00``, ``2026-11-28T10:00Z``).

    Raises:
        argparse.ArgumentTypeError: ``text`` is neither.
    """
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):
            raise argparse.ArgumentTypeError(f"not a time: {text!r}")
        return seconds
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not unix seconds or an ISO-8601 date/date-time: {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def register(sub: Subparsers) -> None:
    """Add ``shadow-report`` to the ``matchlight`` command line."""
    report = add_command(
        sub,
        "shadow-report",
        help="compare the real-time path with legacy per surface, with a verdict",
        description="Read the shadow comparisons in DIR/comparisons (also while a server "
        "runs) and print per surface: overlap@k and Jaccard@k, rank-biased overlap "
        "(RBO, p = 0.9), Kendall's tau on shared items, latency p50/p99 of both paths, "
        "error and fallback rates, the A/A noise floor (the real-time path against itself "
        "on repeated requests), and a verdict ('ready for canary', 'investigate' or 'not "
        "enough data') against the thresholds below.",
    )
    report.add_argument("--data", required=True, metavar="DIR", help="data directory")
    report.add_argument("--surface", metavar="S", help="only this surface (default: all)")
    report.add_argument(
        "--since",
        type=parse_since,
        metavar="T",
        help="only records at or after T: unix seconds or an ISO-8601 date or date-time "
        "(2026-11-28, 2026-11-28T10:00; UTC unless an offset is given)",
    )
    report.add_argument(
        "--k",
        type=positive_int,
        metavar="N",
        help="compare the top N of each list (default: each record's own k)",
    )
    report.add_argument("--html", metavar="FILE", help="also write an HTML report with charts")
    report.add_argument("--json", metavar="FILE", help="also write the report as JSON")
    _threshold_arguments(report)
    _interleaving_arguments(report)
    report.set_defaults(func=run)


def _threshold_arguments(report: argparse.ArgumentParser) -> None:
    """The verdict's thresholds (:class:`legacy_adapter.metrics.Thresholds`)."""
    t = DEFAULT_THRESHOLDS
    report.add_argument(
        "--min-requests",
        type=non_negative_int,
        default=t.min_requests,
        metavar="N",
        help="fewer comparisons is 'not enough data'",
    )
    report.add_argument(
        "--max-error-rate",
        type=fraction,
        default=t.max_error_rate,
        metavar="R",
        help="real-time errors per comparison, at most",
    )
    report.add_argument(
        "--max-fallback-rate",
        type=fraction,
        default=t.max_fallback_rate,
        metavar="R",
        help="fallbacks per served request, at most",
    )
    report.add_argument(
        "--max-p99-ms",
        type=non_negative_float,
        default=t.max_p99_ms,
        metavar="MS",
        help="real-time p99 latency, at most",
    )
    report.add_argument(
        "--min-rbo-vs-noise",
        type=non_negative_float,
        default=t.min_rbo_vs_noise,
        metavar="F",
        help="median RBO(real time, legacy) at least this fraction of the A/A noise-floor median",
    )
    report.add_argument(
        "--min-noise-samples",
        type=non_negative_int,
        default=t.min_noise_samples,
        metavar="N",
        help="A/A pairs needed to judge RBO against the noise floor",
    )


def _interleaving_arguments(report: argparse.ArgumentParser) -> None:
    """How interleaving impressions are credited and judged (:mod:`legacy_adapter.interleaving`)."""
    report.add_argument(
        "--window",
        type=non_negative_float,
        default=DEFAULT_WINDOW_S,
        metavar="S",
        help="an interaction that names no request_id is credited to the user's latest "
        "interleaved list holding the item, served at most S seconds before it",
    )
    report.add_argument(
        "--engagement",
        type=engagement_types,
        metavar="TYPES",
        help="comma-separated event types that count as engagement (default: every type but "
        f"{', '.join(sorted(NOT_ENGAGEMENT))})",
    )
    report.add_argument(
        "--confidence",
        type=share,
        default=0.95,
        metavar="C",
        help="level of the preference's confidence sequence, valid however often the report "
        "is read",
    )


def _histories(data: Path) -> Callable[[set[str]], dict[str, list[Interaction]]] | None:
    """Reads each user's interactions from ``data/events`` (read-only); None without a log."""
    path = data / "events"
    if not (path / "data.mdb").is_file():
        return None

    def histories(users: set[str]) -> dict[str, list[Interaction]]:
        from actors import LmdbEventStore

        with LmdbEventStore(path, readonly=True) as store:
            return read_histories(store, users)

    return histories


def _fail(message: str) -> int:
    return fail("shadow-report", message)


def _records(log: DecisionLog) -> Iterator[dict[str, Any]]:
    """Every record of the log, oldest first, a page at a time."""
    after = 0
    while True:
        page = log.read(after=after, limit=_PAGE)
        yield from page
        if len(page) < _PAGE:
            return
        after = page[-1]["seq"]


def _write(path: str, text: str) -> None:
    Path(path).write_text(text, encoding="utf-8")


def run(args: argparse.Namespace) -> int:
    """Run the report described by ``args``; return the exit code (0 done, 1 nothing or failed)."""
    # Imported here: the ranker package loads LightFM, which only this command needs.
    from actors import StoreError
    from ranker import DecisionLog, RankerError

    path = Path(args.data) / COMPARISONS
    # Checked first: DecisionLog would create an empty log where there is none.
    if not (path / "data.mdb").is_file():
        return _fail(
            f"no comparison records in {path}: run `matchlight serve` with a legacy feed "
            "and a surface in shadow, canary or live mode first"
        )
    thresholds = Thresholds(
        min_requests=args.min_requests,
        max_error_rate=args.max_error_rate,
        max_fallback_rate=args.max_fallback_rate,
        max_p99_ms=args.max_p99_ms,
        min_rbo_vs_noise=args.min_rbo_vs_noise,
        min_noise_samples=args.min_noise_samples,
    )
    try:
        log = DecisionLog(path)
    except RankerError as exc:
        return _fail(str(exc))
    try:
        report = build_report(
            _records(log),
            k=args.k,
            surface=args.surface,
            since=args.since,
            thresholds=thresholds,
            histories=_histories(Path(args.data)),
            window_s=args.window,
            engagement_types=args.engagement,
            confidence=args.confidence,
        )
    except (lmdb.Error, StoreError) as exc:  # e.g. the server grew the map while we read: try again
        return _fail(f"cannot read {path}: {exc}")
    finally:
        log.close()
    if not report["surfaces"]:
        scope = [f"surface {args.surface!r}"] if args.surface is not None else []
        if args.since is not None:
            scope.append(f"since {datetime.fromtimestamp(args.since, UTC).isoformat()}")
        return _fail(f"no records in {path}" + (f" for {' '.join(scope)}" if scope else ""))
    print(format_table(report))
    try:
        if args.json:
            _write(args.json, json.dumps(report, indent=2, allow_nan=False) + "\n")
            print(f"matchlight shadow-report: wrote {args.json}", file=sys.stderr)
        if args.html:
            _write(args.html, render_html(report))
            print(f"matchlight shadow-report: wrote {args.html}", file=sys.stderr)
    except OSError as exc:
        return _fail(f"cannot write the report: {exc}")
    return 0
