"""Prequential replay: does real time beat the nightly batch on a stream in time order?

The protocol (run in-process on the engine: actor system, index, ranker):

1. Everything before the cut (``cut`` of the events, by time) is ingested
   and a LightFM model is trained on it.
2. At the cut, as a nightly batch job would, two frozen baselines are made:
   ``batch`` — the same ranker's and model's top lists for every user
   known then, from their state then; ``popularity`` — the most popular items then. Both
   serve their list without the items the user has interacted with since
   (what a batch feed's client does), and a user the batch never saw gets
   the popularity list.
3. Then, in time order, for each positive event (``like``, ``save``,
   ``hire``) on an item new to the user, each system is first asked for
   its top ``k`` and only then is the event ingested (the real-time path
   sees every event, positive or not, as it happens). A hit is the event's
   item in the list; NDCG@k credits it by rank (one relevant item).

Results are reported overall, by the user's activity so far (events
before the request: ``<10``, ``10-50``, ``>50``), and by cohort: ``known``
users had events before the cut, ``new`` ones arrived after it (the batch
serves them the popularity list, as batch systems do).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

import attrs
import numpy as np
import trio

from actors import ActorSystem, MemoryEventStore, open_actor_system, user
from matchlight import validation
from matchlight.synthetic import POSITIVE
from ranker import RankerActor, RecommendRequest, TrainingConfig, fit, open_ranker, read_log
from ranker.stages import to_docs

SYSTEMS: Final = ("realtime", "batch", "popularity")
BUCKETS: Final = ("<10", "10-50", ">50")
#: Users the nightly batch knew (they had events before the cut), and those it did not.
COHORTS: Final = ("known", "new")
BATCH_DEPTH: Final = 60
INGEST_CHUNK: Final = 2000

Progress = Callable[[str], None]


@attrs.frozen(kw_only=True)
class ReplayConfig:
    #: Share of the events (in time order) before the cut.
    cut: float = 0.7
    k: int = 10
    training: TrainingConfig = attrs.field(factory=TrainingConfig)
    #: Stop after this many evaluated requests (None: the whole stream).
    max_requests: int | None = None


@attrs.define
class _Tally:
    requests: int = 0
    hits: int = 0
    ndcg: float = 0.0

    def add(self, rank: int | None) -> None:
        self.requests += 1
        if rank is not None:
            self.hits += 1
            self.ndcg += 1.0 / math.log2(rank + 2)

    def summary(self, k: int) -> dict[str, Any]:
        n = max(self.requests, 1)
        return {
            f"hit_rate@{k}": round(self.hits / n, 4),
            f"ndcg@{k}": round(self.ndcg / n, 4),
            "requests": self.requests,
        }


def bucket_of(events_so_far: int) -> str:
    if events_so_far < 10:
        return "<10"
    return "10-50" if events_so_far <= 50 else ">50"


async def replay(
    records: Sequence[tuple[str, Mapping[str, Any]]],
    config: ReplayConfig | None = None,
    *,
    progress: Progress | None = None,
) -> dict[str, Any]:
    """Run the protocol over ``records`` (``("item"|"event", map)`` in time order)."""
    config = config or ReplayConfig()
    say = progress or (lambda _: None)
    n_events = sum(1 for kind, _ in records if kind == "event")
    cut_at = int(n_events * config.cut)
    store = MemoryEventStore()
    seen: dict[str, set[str]] = {}
    activity: dict[str, int] = {}
    async with open_actor_system(store) as system:
        position, ingested = 0, 0
        pending_events: list[Mapping[str, Any]] = []
        while ingested + len(pending_events) < cut_at:
            kind, body = records[position]
            position += 1
            if kind == "item":
                await _flush(system, pending_events)
                ingested += len(pending_events)
                pending_events = []
                await _upsert(system, body)
            else:
                pending_events.append(body)
                seen.setdefault(body["user"], set()).add(body["item"])
                activity[body["user"]] = activity.get(body["user"], 0) + 1
                if len(pending_events) >= INGEST_CHUNK:
                    await _flush(system, pending_events)
                    ingested += len(pending_events)
                    pending_events = []
        await _flush(system, pending_events)
        say(f"ingested {cut_at:,} events before the cut; training")
        started = time.monotonic()
        data = await trio.to_thread.run_sync(read_log, store)
        model = await trio.to_thread.run_sync(
            lambda: fit(data, config.training, version="replay-cut")
        )
        say(f"trained in {time.monotonic() - started:.1f} s; precomputing the batch lists")
        tallies = {s: {b: _Tally() for b in ("all", *BUCKETS, *COHORTS)} for s in SYSTEMS}
        latencies: list[float] = []
        async with open_ranker(system) as ranker:
            await ranker.use_model(model)
            batch_lists, popular = await _nightly(system, ranker)
            evaluated, last_report = 0, time.monotonic()
            for kind, body in records[position:]:
                if kind == "item":
                    await _upsert(system, body)
                    continue
                who, item = body["user"], body["item"]
                mine = seen.setdefault(who, set())
                if body["type"] in POSITIVE and item not in mine:
                    bucket = bucket_of(activity.get(who, 0))
                    cohort = "known" if who in batch_lists else "new"
                    t0 = time.perf_counter()
                    got = await ranker.recommend(RecommendRequest(user=who, k=config.k))
                    latencies.append(time.perf_counter() - t0)
                    lists = {
                        "realtime": [entry["id"] for entry in got.items],
                        "batch": _serve(batch_lists.get(who, popular), mine, config.k),
                        "popularity": _serve(popular, mine, config.k),
                    }
                    for name, served in lists.items():
                        rank = served.index(item) if item in served else None
                        tallies[name]["all"].add(rank)
                        tallies[name][bucket].add(rank)
                        tallies[name][cohort].add(rank)
                    evaluated += 1
                    if config.max_requests is not None and evaluated >= config.max_requests:
                        break
                await _flush(system, [body])
                mine.add(item)
                activity[who] = activity.get(who, 0) + 1
                if time.monotonic() - last_report > 2.0:
                    say(f"{evaluated:,} requests evaluated")
                    last_report = time.monotonic()
    out: dict[str, Any] = {}
    for name in SYSTEMS:
        entry = tallies[name]["all"].summary(config.k)
        entry["by_activity"] = {b: tallies[name][b].summary(config.k) for b in BUCKETS}
        entry["by_cohort"] = {c: tallies[name][c].summary(config.k) for c in COHORTS}
        out[name] = entry
    if latencies:
        ms = np.array(latencies) * 1000
        out["realtime"]["latency_ms"] = {
            "p50": round(float(np.percentile(ms, 50)), 3),
            "p99": round(float(np.percentile(ms, 99)), 3),
        }
    out["protocol"] = {
        "events": n_events,
        "cut_events": cut_at,
        "k": config.k,
        "model": dict(model.facts),
    }
    return out


def _serve(ranked: Sequence[str], seen: set[str], k: int) -> list[str]:
    out = []
    for item_id in ranked:
        if item_id not in seen:
            out.append(item_id)
            if len(out) == k:
                break
    return out


async def _flush(system: ActorSystem, events: Iterable[Mapping[str, Any]]) -> None:
    events = list(events)
    if events:
        await system.ingest(validation.events({"events": events}))


async def _upsert(system: ActorSystem, body: Mapping[str, Any]) -> None:
    await system.upsert_items(validation.items({"items": [body]}, now=time.time()))


async def _nightly(
    system: ActorSystem, ranker: RankerActor
) -> tuple[dict[str, list[str]], list[str]]:
    """What a nightly job makes at the cut: per-user top lists, and the popularity list.

    The per-user lists come from the same ranker and model as the real-time
    path, asked once per user at the cut: only freshness differs.
    """
    index, signals = system.index, system.signals
    live = to_docs(index.live)
    masses = signals.masses(live)
    popular = index.external(live[np.argsort(-masses, kind="stable")][: BATCH_DEPTH * 4].tolist())
    lists: dict[str, list[str]] = {}
    for info in system.store.iter_streams(user.KIND):
        answer = await ranker.recommend(RecommendRequest(user=info.entity_id, k=BATCH_DEPTH))
        lists[info.entity_id] = [entry["id"] for entry in answer.items]
    return lists, popular


def format_table(results: Mapping[str, Any], k: int) -> str:
    """The comparison as a terminal table: hit rate and NDCG overall, by activity and cohort.

    Activity is the user's events before the request; ``known``/``new`` is
    whether the user had events before the cut (the batch knew them).
    """
    header = f"{'system':<11} {'users':<7} {'requests':>8} {f'hit@{k}':>8} {f'ndcg@{k}':>8}"
    lines = [header, "-" * len(header)]
    for name in SYSTEMS:
        entry = results[name]
        rows = [
            ("all", entry),
            *((b, entry["by_activity"][b]) for b in BUCKETS),
            *((c, entry["by_cohort"][c]) for c in COHORTS),
        ]
        for bucket, row in rows:
            lines.append(
                f"{name:<11} {bucket:<7} {row['requests']:>8} "
                f"{row[f'hit_rate@{k}']:>8.3f} {row[f'ndcg@{k}']:>8.3f}"
            )
    return "\n".join(lines)


def main(args: Any) -> int:
    """``matchlight replay``: the protocol on the synthetic marketplace; a table, optional JSON."""
    import json
    import sys

    from matchlight.synthetic import MarketplaceConfig, generate

    if args.dataset != "synthetic":
        print(
            f"matchlight replay: unknown dataset {args.dataset!r} (supported: synthetic)",
            file=sys.stderr,
        )
        return 2

    def progress(message: str) -> None:
        print(f"replay: {message}", file=sys.stderr, flush=True)

    market = generate(MarketplaceConfig(consumers=args.consumers, pros=args.pros, seed=args.seed))
    progress(
        f"synthetic marketplace: {args.consumers:,} consumers, {args.pros:,} pros, "
        f"{sum(1 for _ in market.events()):,} events"
    )
    config = ReplayConfig(
        cut=args.cut,
        k=args.k,
        training=TrainingConfig(epochs=args.epochs, seed=args.seed, threads=args.threads),
        max_requests=args.max_requests,
    )
    results = trio.run(lambda: replay(market.records, config, progress=progress))
    print(format_table(results, config.k))
    latency = results["realtime"].get("latency_ms")
    if latency:
        print(f"realtime recommend in-process: p50 {latency['p50']} ms, p99 {latency['p99']} ms")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0
