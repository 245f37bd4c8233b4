"""The startup-rebuild phase of ``matchlight bench index``: the item index rebuilt from LMDB.

What a starting server does before it answers ``search``:
:func:`actors.item_index.rebuild_index` reads every item stream's latest
snapshot (plus any events after it) from the event store and loads the
searchable items into a fresh index.

Method. ``--rebuild-items`` items of the benchmark's synthetic catalogue
(:func:`~matchlight.bench.index_workload.make_catalogue`, same seed; the fields the
Matchlight engine puts: kind ``pro``, terms topic/city/tags, numbers
price/loc.lat/loc.lon) are written through the real actor system onto a real
:class:`actors.LmdbEventStore` in a temporary directory: upserts in batches of
:data:`UPSERT_BATCH`, then the like counters as ``like`` interactions from
:data:`USERS` synthetic users in batches of :data:`LIKE_BATCH`. Like events
are capped at :data:`LIKE_CAP` per item (about 1.9 per item on average, where
the uncapped counters average about 22): the rebuild reads one snapshot per
item whatever its counters hold, so the full counts would only make the setup
slower and the store larger. Leaving the actor system passivates every actor
and flushes its snapshot, as a clean shutdown does. The store is closed and
reopened, then the rebuild is timed :data:`RUNS` times with ``perf_counter``
(the page cache is warm: the store was just written).

The rebuilt index must hold every item and answer a few queries of every
class, plus two on the like counter, with the same totals and ids as the
benchmark's in-memory Matchlight index of the same catalogue with the capped
counts; otherwise :class:`~matchlight.bench.index_workload.BenchError`.
"""

from __future__ import annotations

import gc
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from actors import LmdbEventStore, RecordInteraction, UpsertItem, open_actor_system
from actors.item_index import rebuild_index
from index import Index, parse, parse_sort
from matchlight.bench.index_workload import (
    KIND,
    LIMIT,
    BenchError,
    Case,
    Catalogue,
    Result,
    make_cases,
    make_catalogue,
    note,
)

#: Like events written per item at most (see the module docstring).
LIKE_CAP: Final = 8
USERS: Final = 1_000
UPSERT_BATCH: Final = 2_000
LIKE_BATCH: Final = 5_000
#: Timed rebuilds; the report gives their minimum and median.
RUNS: Final = 3
#: Query instances of each class compared between the rebuilt and the in-memory index.
CHECK_QUERIES: Final = 5
#: The target: a rebuild of TARGET_ITEMS items within TARGET_S seconds. Judged only on a
#: store at least that large (scaled linearly above it): below, fixed costs would dominate.
TARGET_S: Final = 2.0
TARGET_ITEMS: Final = 100_000
#: A fixed clock for every event: the same seed writes the same store.
CLOCK: Final = 1_700_000_000.0


def _progress(before: int, done: int, total: int, what: str) -> None:
    """Note ``done`` of ``total`` when going from ``before`` to it passes a fifth of the way."""
    if before * 5 // total != done * 5 // total:
        note(f"bench index: rebuild store: {done:,} / {total:,} {what}")


async def _load(cat: Catalogue, store: LmdbEventStore) -> int:
    """Upsert every item and record its capped likes; return the like events written."""
    async with open_actor_system(store) as system:
        for start in range(0, len(cat), UPSERT_BATCH):
            ords = range(start, min(len(cat), start + UPSERT_BATCH))
            await system.upsert_items(
                [
                    UpsertItem(
                        event_id=f"bench-upsert-{ord_}",
                        item=cat.names[ord_],
                        ts=CLOCK,
                        kind=KIND,
                        terms=cat.terms(ord_),
                        numbers=cat.numbers(ord_),
                        active=None,
                    )
                    for ord_ in ords
                ]
            )
            _progress(start, ords.stop, len(cat), "items upserted")
        likes = [(ord_, k) for ord_, count in enumerate(cat.likes) for k in range(count)]
        for start in range(0, len(likes), LIKE_BATCH):
            batch = likes[start : start + LIKE_BATCH]
            await system.ingest(
                [
                    RecordInteraction(
                        id=f"bench-like-{ord_}-{k}",
                        type="like",
                        user=f"bench-user-{(ord_ * 31 + k) % USERS}",
                        item=cat.names[ord_],
                        ts=CLOCK + 1.0,
                    )
                    for ord_, k in batch
                ]
            )
            _progress(start, start + len(batch), len(likes), "like events recorded")
        note("bench index: rebuild store: passivating the actors (writes their snapshots)…")
    return len(likes)


def _answer(index: Index, case: Case) -> Result:
    sort = parse_sort(["price", "desc"]) if case.kind == "price_sorted" else None
    found = index.search(parse(case.wire), limit=LIMIT, sort=sort)
    return found.total, found.ids


def _check_cases(cat: Catalogue, seed: int) -> list[Case]:
    """A few instances of every class, and two queries the capped like counters can satisfy."""
    cases = [c for kind_cases in make_cases(cat, CHECK_QUERIES, seed).values() for c in kind_cases]
    city = cat.cities[0]
    cases.append(Case(kind="likes", min_likes=LIKE_CAP, wire={"range": ["like", LIKE_CAP, None]}))
    cases.append(
        Case(
            kind="term_likes",
            city=city,
            min_likes=2,
            wire={"all": [{"term": ["city", city]}, {"range": ["like", 2, None]}]},
        )
    )
    return cases


def _compare(rebuilt: Index, reference: Index, cases: Sequence[Case]) -> int:
    """Check ``rebuilt`` answers every case as ``reference`` does; return how many were compared.

    Raises:
        BenchError: it does not hold the reference's items, or a case's total or ids differ.
    """
    if len(rebuilt) != len(reference):
        raise BenchError(
            f"the rebuilt index holds {len(rebuilt):,} searchable items, "
            f"the in-memory one {len(reference):,}"
        )
    for case in cases:
        got, expected = _answer(rebuilt, case), _answer(reference, case)
        if got != expected:
            raise BenchError(
                f"the rebuilt index disagrees with the in-memory one on {case.describe()}: "
                f"total {got[0]}, expected {expected[0]}; first ids {got[1][:3]}, "
                f"expected {expected[1][:3]}"
            )
    return len(cases)


def _size(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def measure(items: int, seed: int, reference: Callable[[Catalogue], Index]) -> dict[str, Any]:
    """Write a store of ``items`` items, time its rebuild and check it against ``reference``.

    ``reference`` makes the benchmark's in-memory Matchlight index of a catalogue.

    Raises:
        BenchError: the rebuilt index differs from the reference.
    """
    note(f"bench index: rebuild: generating {items:,} items (seed {seed})…")
    full = make_catalogue(items, seed)
    cat = attrs.evolve(full, likes=[min(likes, LIKE_CAP) for likes in full.likes])
    del full
    with tempfile.TemporaryDirectory(prefix="matchlight-bench-rebuild-") as tmp:
        path = Path(tmp) / "store"
        t0 = time.perf_counter()
        store = LmdbEventStore(path)
        try:
            like_events = trio.run(_load, cat, store)
        finally:
            store.close()
        load_s = time.perf_counter() - t0
        store_bytes = _size(path)
        note(f"bench index: rebuild store written in {load_s:.1f} s; timing {RUNS} rebuilds…")
        store = LmdbEventStore(path)
        try:
            runs: list[float] = []
            rebuilt: Index | None = None
            for _ in range(RUNS):
                rebuilt = None  # the previous index is garbage before the next run starts
                gc.collect()
                t0 = time.perf_counter()
                rebuilt = rebuild_index(store)
                runs.append(time.perf_counter() - t0)
        finally:
            store.close()
    assert rebuilt is not None
    if len(rebuilt) != items:
        raise BenchError(
            f"the rebuilt index holds {len(rebuilt):,} searchable items, not {items:,}"
        )
    compared = _compare(rebuilt, reference(cat), _check_cases(cat, seed))
    best = min(runs)
    target_s = TARGET_S * items / TARGET_ITEMS if items >= TARGET_ITEMS else None
    return {
        "items": items,
        "searchable": len(rebuilt),
        "like_cap": LIKE_CAP,
        "like_events": like_events,
        "users": USERS,
        "load_s": round(load_s, 2),
        "runs_s": [round(s, 4) for s in runs],
        "min_s": round(best, 4),
        "median_s": round(statistics.median(runs), 4),
        "store_bytes": store_bytes,
        "queries_compared": compared,
        "target_s": None if target_s is None else round(target_s, 2),
        "target_met": None if target_s is None else best <= target_s,
    }


def _seconds(value: float) -> str:
    return f"{value:.2f} s" if value >= 0.1 else f"{value * 1000:.0f} ms"


def print_rebuild(rebuild: dict[str, Any]) -> None:
    """The rebuild phase's lines of the report."""
    mib = rebuild["store_bytes"] / 2**20
    size = f"{mib:,.0f}" if mib >= 10 else f"{mib:.1f}"
    print(
        f"\nstartup rebuild: {rebuild['searchable']:,} items from snapshots in "
        f"{_seconds(rebuild['min_s'])} (min of {len(rebuild['runs_s'])}; median "
        f"{_seconds(rebuild['median_s'])}), store {size} MiB"
    )
    print(
        f"  store written through the actor system in {rebuild['load_s']:.1f} s: "
        f"{rebuild['items']:,} upserts and {rebuild['like_events']:,} like events (at most "
        f"{rebuild['like_cap']} per item); {rebuild['queries_compared']} queries answered as "
        "the in-memory index does"
    )
    target = f"target ≤ {TARGET_S:.0f} s for {TARGET_ITEMS:,} items"
    if rebuild["target_met"] is None:
        print(f"{target}: not judged on {rebuild['items']:,} items")
        return
    if rebuild["items"] != TARGET_ITEMS:
        target += f" (scaled linearly: {rebuild['target_s']:.2f} s for {rebuild['items']:,})"
    verdict = "met" if rebuild["target_met"] else "missed"
    print(f"{target}: {verdict}, {_seconds(rebuild['min_s'])}")
