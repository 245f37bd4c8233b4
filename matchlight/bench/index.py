"""``matchlight bench index``: filtered retrieval against SQLite, Tantivy and PostgreSQL, same run.

This module owns the method, the Matchlight engine, the timing and the report;
the catalogue and the query instances are :mod:`matchlight.bench.index_workload`, the
peer engines :mod:`matchlight.bench.index_peers`, the startup-rebuild phase
:mod:`matchlight.bench.index_rebuild`.

Method. The same synthetic catalogue is loaded into every engine, in item
order: Matchlight's ``index.Index`` in-process (one ``put`` per item), SQLite,
Tantivy and, only when ``--postgres DSN`` (or ``MATCHLIGHT_BENCH_POSTGRES``)
names a reachable server, PostgreSQL. Six query classes, each with
``--queries`` random instances (see :data:`~matchlight.bench.index_workload.CLASSES`).
One query is what ``search`` answers: the count of every match and the ids of
the first 100. Every engine computes both, on the caller's side of its API:
Matchlight parses the wire query and searches.

A first pass over every instance warms the caches and checks that every engine
returns the same total and ids as Matchlight (the run stops at the first
difference). Then each engine answers all of a class's instances, each timed
with ``perf_counter_ns``, in :data:`ROUNDS` rounds with the engines taking
turns going first; p50/p99 are over all the timings of a class (``--queries``
x rounds). Then
``--updates`` like-counter increments are applied to every engine one at a
time, each made visible to the next query (Matchlight ``put``; the peers'
ways are in :mod:`matchlight.bench.index_peers`), and as many again in one batch
(one transaction, one commit). Nothing is fsynced on any engine: the figure
is the cost of making a change searchable; Matchlight's durability lives in
its event log. After each update phase every query is checked again across
engines.

Before all that, unless ``--rebuild-items 0``, the startup-rebuild phase
times how long a starting server takes to rebuild its item index from an
LMDB event store of ``--rebuild-items`` items (:mod:`matchlight.bench.index_rebuild`).
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Final, Protocol

import attrs
import numpy as np

from index import Index, parse, parse_sort
from matchlight.bench import index_rebuild
from matchlight.bench.harness import percentiles
from matchlight.bench.index_peers import (
    POSTGRES_ENV,
    PostgresEngine,
    SqliteEngine,
    TantivyEngine,
    connect_postgres,
)
from matchlight.bench.index_workload import (
    CLASSES,
    KIND,
    LIMIT,
    BenchError,
    Case,
    Catalogue,
    Result,
    Runner,
    make_cases,
    make_catalogue,
    note,
)
from matchlight.cli.argtypes import non_negative_int, positive_int

TARGET: Final = 10.0
#: Timings of each query instance on each engine.
ROUNDS: Final = 3
LABELS: Final = {
    "matchlight": "Matchlight",
    "sqlite": "SQLite",
    "tantivy": "Tantivy",
    "postgres": "PostgreSQL",
}


# -- engines ----------------------------------------------------------------------------------


class Engine(Protocol):
    name: str

    def runner(self, kind: str) -> Runner:
        """The function answering one query of class ``kind``: (total, first ids)."""
        ...

    def update(self, ord_: int, likes: int) -> None:
        """Set one item's like counter and make the change visible to the next query."""
        ...

    def update_batch(self, changes: Sequence[tuple[int, int]]) -> None:
        """Set many like counters, visible to the next query once this returns."""
        ...

    def close(self) -> None: ...


class MatchlightEngine:
    name = "matchlight"

    def __init__(self, cat: Catalogue) -> None:
        self.index = Index(counter_fields=["like", "view"])
        self._names = cat.names
        self._terms = [cat.terms(ord_) for ord_ in range(len(cat))]
        self._numbers = [cat.numbers(ord_) for ord_ in range(len(cat))]
        for ord_, likes in enumerate(cat.likes):
            self.update(ord_, likes)

    def runner(self, kind: str) -> Runner:
        index = self.index
        if kind == "price_sorted":
            sort_wire = ["price", "desc"]

            def sorted_search(case: Case) -> Result:
                found = index.search(parse(case.wire), limit=LIMIT, sort=parse_sort(sort_wire))
                return found.total, found.ids

            return sorted_search

        def search(case: Case) -> Result:
            found = index.search(parse(case.wire), limit=LIMIT)
            return found.total, found.ids

        return search

    def preparsed_runner(self, kind: str, cases: Sequence[Case]) -> Runner:
        """A runner for ``cases`` parsed beforehand (the ranker's in-process use).

        Reported beside the main figure, which includes parsing the wire query.
        """
        index = self.index
        parsed = {id(case): parse(case.wire) for case in cases}
        sort = parse_sort(["price", "desc"]) if kind == "price_sorted" else None

        def search(case: Case) -> Result:
            found = index.search(parsed[id(case)], limit=LIMIT, sort=sort)
            return found.total, found.ids

        return search

    def update(self, ord_: int, likes: int) -> None:
        # The same terms mapping as before: the index sees that terms did not change.
        self.index.put(
            self._names[ord_],
            kind=KIND,
            terms=self._terms[ord_],
            numbers=self._numbers[ord_],
            counters={"like": likes},
        )

    def update_batch(self, changes: Sequence[tuple[int, int]]) -> None:
        for ord_, likes in changes:
            self.update(ord_, likes)

    def close(self) -> None:
        pass


# -- measuring --------------------------------------------------------------------------------


def _summary(samples_ns: Sequence[int]) -> dict[str, float]:
    """p50 and p99 (nearest rank: always a measured timing) and the mean, in µs."""
    p50, p99 = percentiles(np.asarray(samples_ns) / 1000.0, (50, 99), nearest_rank=True)
    return {
        "p50_us": round(p50, 1),
        "p99_us": round(p99, 1),
        "mean_us": round(sum(samples_ns) / len(samples_ns) / 1000.0, 1),
    }


def _around(ids: list[str], position: int) -> str:
    shown = ", ".join(ids[position : position + 3])
    return f"[{shown}{', …' if len(ids) > position + 3 else ''}] of {len(ids)}"


def check(engines: Sequence[Engine], cases: dict[str, list[Case]]) -> tuple[int, int]:
    """Run every case on every engine; return (cases, comparisons) that all agreed.

    Raises:
        BenchError: the first case on which a peer's total or ids differ from Matchlight's.
    """
    reference, *peers = engines
    checked = comparisons = 0
    for kind, kind_cases in cases.items():
        expected_runner = reference.runner(kind)
        peer_runners = [(peer.name, peer.runner(kind)) for peer in peers]
        for case in kind_cases:
            total, ids = expected_runner(case)
            for name, run in peer_runners:
                got_total, got_ids = run(case)
                if got_total != total or got_ids != ids:
                    first = next(
                        (k for k, (a, b) in enumerate(zip(ids, got_ids, strict=False)) if a != b),
                        min(len(ids), len(got_ids)),
                    )
                    raise BenchError(
                        f"{LABELS[name]} disagrees with Matchlight on {case.describe()}: "
                        f"total {got_total}, Matchlight {total}; ids from position {first}: "
                        f"{_around(got_ids, first)}, Matchlight {_around(ids, first)}"
                    )
                comparisons += 1
            checked += 1
    return checked, comparisons


def time_rounds(
    runners: Sequence[tuple[str, Runner]], cases: Sequence[Case], rounds: int
) -> dict[str, list[int]]:
    """Nanoseconds per (runner, case), each runner running all the cases in turn.

    Runners take turns going first over ``rounds`` rounds, so drift in a shared
    machine's load hits every engine alike, while each engine still answers a
    run of queries with its own data in cache, as in service. The collector
    runs before each run, so earlier garbage costs nobody.
    """
    clock = time.perf_counter_ns
    samples: dict[str, list[int]] = {name: [] for name, _ in runners}
    for round_ in range(rounds):
        shift = round_ % len(runners)
        for name, run in (*runners[shift:], *runners[:shift]):
            gc.collect()
            timings = samples[name]
            for case in cases:
                t0 = clock()
                run(case)
                timings.append(clock() - t0)
    return samples


def plan_updates(cat: Catalogue, n: int, rng: random.Random) -> list[tuple[int, int]]:
    """``n`` like increments (ord, new count), applied to ``cat``.

    Half hit random items, half items just under 50 likes, so many cross the
    ``like >= 50`` threshold the queries ask about.
    """
    near = [o for o, likes in enumerate(cat.likes) if 30 <= likes < 50] or [0]
    changes = []
    for _ in range(n):
        ord_ = rng.randrange(len(cat)) if rng.random() < 0.5 else rng.choice(near)
        cat.likes[ord_] += rng.randint(1, 20)
        changes.append((ord_, cat.likes[ord_]))
    return changes


def time_updates(engine: Engine, changes: Sequence[tuple[int, int]]) -> list[int]:
    clock = time.perf_counter_ns
    samples = []
    for ord_, likes in changes:
        t0 = clock()
        engine.update(ord_, likes)
        samples.append(clock() - t0)
    return samples


@attrs.frozen(kw_only=True)
class _Built:
    engine: Engine
    seconds: float


def _build(name: str, make: Callable[[], Engine]) -> _Built:
    note(f"bench index: building {LABELS[name]}…")
    t0 = time.perf_counter()
    engine = make()
    seconds = time.perf_counter() - t0
    note(f"bench index: {LABELS[name]} built in {seconds:.1f} s")
    return _Built(engine=engine, seconds=seconds)


# -- reporting --------------------------------------------------------------------------------


def _cell(stats: dict[str, float]) -> str:
    return f"{stats['p50_us']:,.0f} / {stats['p99_us']:,.0f}"


def print_report(report: dict[str, Any]) -> None:
    """The report on stdout: latency per class, builds, updates, agreement, targets."""
    _print_latency(report)
    _print_updates(report)
    _print_verdicts(report)
    if report["rebuild"] is not None:
        index_rebuild.print_rebuild(report["rebuild"])


def _print_latency(report: dict[str, Any]) -> None:
    """p50 / p99 per query class and engine, with each peer's ratio to Matchlight."""
    engines: list[str] = report["engines"]
    peers = engines[1:]
    print(
        f"retrieval on {report['items']:,} items, {report['queries_per_class']} queries per class, "
        f"seed {report['seed']}; one query = total count + first {LIMIT} ids"
    )
    print(
        f"latency p50 / p99 in µs over {report['rounds']} timings of each query (lower is "
        "better); ratio = peer p50 / Matchlight p50\n"
    )
    header = f"{'class':<14}{'median hits':>12}"
    header += "".join(f"{LABELS[e]:>18}" for e in engines)
    header += "".join(f"{LABELS[p] + ' x':>13}" for p in peers)
    print(header)
    for kind, row in report["classes"].items():
        line = f"{kind:<14}{row['median_total']:>12,}"
        line += "".join(f"{_cell(row[e]):>18}" for e in engines)
        line += "".join(f"{row['ratio_p50'][p]:>12.1f}x" for p in peers)
        print(line)
    print(
        "Matchlight p50 with the query parsed beforehand (in-process use, not in the ratios): "
        + ", ".join(
            f"{kind} {row['matchlight_preparsed']['p50_us']:,.0f}"
            for kind, row in report["classes"].items()
        )
    )
    print()
    for kind, description in CLASSES.items():
        print(f"  {kind:<13} {description}")
    print()
    print("build: " + ", ".join(f"{LABELS[e]} {report['build_s'][e]:.1f} s" for e in engines))
    for name, why in report["skipped"].items():
        print(f"{LABELS[name]}: skipped, {why}")


def _print_updates(report: dict[str, Any]) -> None:
    """The cost of a visible update per engine, one at a time and batched."""
    engines: list[str] = report["engines"]
    updates = report["updates"]
    print(
        f"\nupdates: {updates['count']:,} like increments, each visible to the next query, "
        f"in µs per update; batched = {updates['count']:,} in one commit"
    )
    print(
        f"{'engine':<12}{'p50':>10}{'p99':>10}{'mean':>10}{'batched':>10}"
        f"{'p50 / Matchlight p50':>22}"
    )
    base = updates["each"]["matchlight"]["p50_us"]
    for e in engines:
        each = updates["each"][e]
        ratio = each["p50_us"] / base if base else float("inf")
        print(
            f"{LABELS[e]:<12}{each['p50_us']:>10,.1f}{each['p99_us']:>10,.1f}"
            f"{each['mean_us']:>10,.1f}{updates['batched_us_per_update'][e]:>10,.1f}"
            f"{ratio:>21.1f}x"
        )


def _print_verdicts(report: dict[str, Any]) -> None:
    """How many comparisons agreed, and which classes meet the target against each peer."""
    agree = report["agreement"]
    print(
        f"\nall engines returned the same totals and ids: {agree['checked']:,} queries "
        f"({agree['comparisons']:,} comparisons) before updates, "
        f"{agree['after_updates']:,} after each visible update and "
        f"{agree['after_batch']:,} after the batch"
    )
    for p in report["engines"][1:]:
        misses = [
            f"{kind} {row['ratio_p50'][p]:.1f}x"
            for kind, row in report["classes"].items()
            if row["ratio_p50"][p] < TARGET
        ]
        met = len(report["classes"]) - len(misses)
        verdict = f"misses: {', '.join(misses)}" if misses else "all met"
        print(
            f"target ≥ {TARGET:.0f}x {LABELS[p]} at p50: {met}/{len(report['classes'])} "
            f"classes ({verdict})"
        )


# -- the command ------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``matchlight bench index``."""
    parser.add_argument("--items", type=positive_int, default=100_000, help="catalogue size")
    parser.add_argument(
        "--queries", type=positive_int, default=300, help="random query instances per class"
    )
    parser.add_argument(
        "--updates",
        type=positive_int,
        default=1000,
        help="like-counter updates timed per engine, and again batched",
    )
    parser.add_argument("--seed", type=int, default=1, help="catalogue and query seed")
    parser.add_argument(
        "--rebuild-items",
        type=non_negative_int,
        default=100_000,
        metavar="N",
        help="items in the LMDB event store whose startup index rebuild is timed first; 0 skips it",
    )
    parser.add_argument(
        "--postgres",
        metavar="DSN",
        help="PostgreSQL to compare with (default: $MATCHLIGHT_BENCH_POSTGRES; skipped if unset "
        "or unreachable)",
    )
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def run(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
    """Every phase of the bench; the report. Engines close when ``stack`` does.

    Raises:
        BenchError: an engine disagreed with Matchlight.
    """
    # First, in a process holding nothing else yet, as a starting server does.
    rebuild = None
    if args.rebuild_items:
        rebuild = index_rebuild.measure(
            args.rebuild_items, args.seed, lambda cat: MatchlightEngine(cat).index
        )
    note(f"bench index: generating {args.items:,} items (seed {args.seed})…")
    cat = make_catalogue(args.items, args.seed)
    cases = make_cases(cat, args.queries, args.seed)
    tmp = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="matchlight-bench-index-")))
    built, skipped = _build_engines(cat, tmp, args.postgres, stack)
    engines = [b.engine for b in built.values()]

    note("bench index: checking that every engine returns the same results (warm-up)…")
    checked, comparisons = check(engines, cases)
    classes = {kind: _time_class(engines, kind, kind_cases) for kind, kind_cases in cases.items()}
    updates, after_updates, after_batch = _time_all_updates(engines, cat, cases, args)
    return {
        "items": args.items,
        "queries_per_class": args.queries,
        "seed": args.seed,
        "limit": LIMIT,
        "rounds": ROUNDS,
        "engines": list(built),
        "skipped": skipped,
        "build_s": {name: round(b.seconds, 2) for name, b in built.items()},
        "classes": classes,
        "updates": updates,
        "agreement": {
            "checked": checked,
            "comparisons": comparisons,
            "agreed": comparisons,
            "after_updates": after_updates,
            "after_batch": after_batch,
        },
        "target_ratio": TARGET,
        "target_met": {
            kind: {
                p: ratio is not None and ratio >= TARGET for p, ratio in row["ratio_p50"].items()
            }
            for kind, row in classes.items()
        },
        "rebuild": rebuild,
    }


def _build_engines(
    cat: Catalogue, tmp: Path, postgres: str | None, stack: ExitStack
) -> tuple[dict[str, _Built], dict[str, str]]:
    """Matchlight (first: the reference), SQLite, and Tantivy and PostgreSQL when available.

    Returns the engines built, by name, and why each missing one was skipped.
    """
    built: dict[str, _Built] = {}
    skipped: dict[str, str] = {}

    def keep(name: str, make: Callable[[], Engine]) -> None:
        built[name] = _build(name, make)
        stack.callback(built[name].engine.close)

    keep("matchlight", lambda: MatchlightEngine(cat))
    keep("sqlite", lambda: SqliteEngine(cat, tmp))
    try:
        import tantivy  # noqa: F401
    except ImportError:
        skipped["tantivy"] = "the tantivy package is not installed (pip install tantivy)"
    else:
        keep("tantivy", lambda: TantivyEngine(cat))
    conn, why = connect_postgres(postgres)
    if conn is None:
        skipped["postgres"] = why
    else:
        import psycopg

        try:
            keep("postgres", lambda: PostgresEngine(cat, conn))
        except psycopg.Error as exc:
            conn.close()
            skipped["postgres"] = f"cannot load the table: {str(exc).strip() or type(exc).__name__}"
    for name, reason in skipped.items():
        note(f"bench index: {LABELS[name]} skipped: {reason}")
    return built, skipped


def _time_class(engines: Sequence[Engine], kind: str, cases: Sequence[Case]) -> dict[str, Any]:
    """One class's row: its median hit count, each engine's timings and ratio to Matchlight."""
    note(f"bench index: timing {kind}…")
    matchlight = engines[0]
    assert isinstance(matchlight, MatchlightEngine)
    row: dict[str, Any] = {
        "description": CLASSES[kind],
        "median_total": int(np.median([matchlight.runner(kind)(c)[0] for c in cases])),
    }
    runners = [(e.name, e.runner(kind)) for e in engines]
    runners.append(("matchlight_preparsed", matchlight.preparsed_runner(kind, cases)))
    for name, timings in time_rounds(runners, cases, ROUNDS).items():
        row[name] = _summary(timings)
    base = row["matchlight"]["p50_us"]
    row["ratio_p50"] = {
        e.name: round(row[e.name]["p50_us"] / base, 2) if base else None for e in engines[1:]
    }
    return row


def _time_all_updates(
    engines: Sequence[Engine],
    cat: Catalogue,
    cases: dict[str, list[Case]],
    args: argparse.Namespace,
) -> tuple[dict[str, Any], int, int]:
    """``--updates`` visible updates one at a time, then as many in one batch, on each engine.

    Returns the figures and how many queries agreed after each phase.
    """
    note(f"bench index: {args.updates:,} visible updates per engine…")
    rng = random.Random(f"updates-{args.seed}")
    each_changes = plan_updates(cat, args.updates, rng)
    each = {e.name: _summary(time_updates(e, each_changes)) for e in engines}
    after_updates, _ = check(engines, cases)
    batch_changes = plan_updates(cat, args.updates, rng)
    batched = {}
    for engine in engines:
        t0 = time.perf_counter_ns()
        engine.update_batch(batch_changes)
        batched[engine.name] = round((time.perf_counter_ns() - t0) / len(batch_changes) / 1000, 1)
    after_batch, _ = check(engines, cases)
    figures = {"count": args.updates, "each": each, "batched_us_per_update": batched}
    return figures, after_updates, after_batch


def main(args: argparse.Namespace) -> int:
    if not args.postgres:
        args.postgres = os.environ.get(POSTGRES_ENV) or None
    with ExitStack() as stack:
        try:
            report = run(args, stack)
        except BenchError as exc:
            print(f"matchlight bench index: {exc}", file=sys.stderr)
            return 1
    print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0
