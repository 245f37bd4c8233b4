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
import math
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


def percentile(samples_ns: Sequence[int], q: float) -> float:
    """The nearest-rank ``q`` percentile of ``samples_ns``, in µs."""
    ordered = sorted(samples_ns)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1] / 1000.0


def _summary(samples_ns: Sequence[int]) -> dict[str, float]:
    return {
        "p50_us": round(percentile(samples_ns, 0.50), 1),
        "p99_us": round(percentile(samples_ns, 0.99), 1),
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
    agree = report["agreement"]
    print(
        f"\nall engines returned the same totals and ids: {agree['checked']:,} queries "
        f"({agree['comparisons']:,} comparisons) before updates, "
        f"{agree['after_updates']:,} after each visible update and "
        f"{agree['after_batch']:,} after the batch"
    )
    for p in peers:
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
    if report["rebuild"] is not None:
        index_rebuild.print_rebuild(report["rebuild"])


# -- the command ------------------------------------------------------------------------------


def run(args: argparse.Namespace, stack: ExitStack) -> dict[str, Any]:
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
    conn, why = connect_postgres(args.postgres)
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
    engines = [b.engine for b in built.values()]
    matchlight = built["matchlight"].engine
    assert isinstance(matchlight, MatchlightEngine)

    note("bench index: checking that every engine returns the same results (warm-up)…")
    checked, comparisons = check(engines, cases)

    classes: dict[str, Any] = {}
    for kind, kind_cases in cases.items():
        note(f"bench index: timing {kind}…")
        row: dict[str, Any] = {
            "description": CLASSES[kind],
            "median_total": int(np.median([matchlight.runner(kind)(c)[0] for c in kind_cases])),
        }
        runners = [(e.name, e.runner(kind)) for e in engines]
        runners.append(("matchlight_preparsed", matchlight.preparsed_runner(kind, kind_cases)))
        for name, timings in time_rounds(runners, kind_cases, ROUNDS).items():
            row[name] = _summary(timings)
        base = row["matchlight"]["p50_us"]
        row["ratio_p50"] = {
            e.name: round(row[e.name]["p50_us"] / base, 2) if base else None for e in engines[1:]
        }
        classes[kind] = row

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
        "updates": {"count": args.updates, "each": each, "batched_us_per_update": batched},
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
