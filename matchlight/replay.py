"""Prequential replay: does real time beat the nightly batch on a stream in time order?

The protocol (run in-process on the engine: actor system, index, ranker):

1. Everything before the cut (``cut`` of the events, by time) is ingested
   and a LightFM model is trained on it.
2. At the cut, as a nightly batch job would, two frozen baselines are made:
   ``batch`` — the same ranker's and model's top lists for every user
   known then, from their state then, written as a legacy batch feed (one
   JSONL line per user on the ``default`` surface, the format
   :mod:`legacy_adapter.sources` reads) and served from a
   :class:`legacy_adapter.FeedStore` loaded with it; ``popularity`` — the
   most popular items then. Both serve their list without the items the user
   has interacted with since (what a batch feed's client does), and a user
   the batch never saw gets the popularity list. With ``batch_every_s`` the
   batch job runs again at that interval of stream time (the model stays
   the one trained at the cut); otherwise its lists stay those of the cut.
3. Then, in time order, for each positive event (``like``, ``save``,
   ``hire``) on an item new to the user, each system is first asked for
   its top ``k`` and only then is the event ingested (the real-time path
   sees every event, positive or not, as it happens). A hit is the event's
   item in the list; NDCG@k credits it by rank (one relevant item).

Results are reported overall, by the user's activity so far (events
before the request: ``<10``, ``10-50``, ``>50``), and by cohort: ``known``
users had events before the cut, ``new`` ones arrived after it (the batch
serves them the popularity list, as batch systems do). Each system's
``latency_ms`` is the time to answer (the real-time recommend; the batch's
feed lookup; the popularity list's filtering). Freshness: an event is
visible to the real-time path's next recommend once its ingest call returns
(read-your-writes), so ``freshness_ms`` is that call's duration; the batch
and popularity lists are ``staleness_s`` old at each request (stream time
since the job that made them).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import numpy as np
import trio

from actors import ActorSystem, MemoryEventStore, open_actor_system, user
from legacy_adapter import FeedStore, LoadReport, open_source
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
#: The surface the batch feed's lines are for (and the real-time path is asked on).
SURFACE: Final = "default"

Progress = Callable[[str], None]
#: Called as ``hook(event, system)`` right before each evaluated request; may be async.
RequestHook = Callable[[Mapping[str, Any], ActorSystem], Awaitable[None] | None]


@attrs.frozen(kw_only=True)
class ReplayConfig:
    #: Share of the events (in time order) before the cut.
    cut: float = 0.7
    k: int = 10
    training: TrainingConfig = attrs.field(factory=TrainingConfig)
    #: Stop after this many evaluated requests (None: the whole stream).
    max_requests: int | None = None
    #: Rerun the batch job every this many seconds of stream time (None: only at the cut).
    batch_every_s: float | None = None
    #: Keep the batch feed files and the feed store here (None: a temporary directory).
    feed_dir: Path | None = None


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


@attrs.define
class _Batch:
    """The batch path: its feed store, the job's fallback list, and what it served."""

    feed: FeedStore
    folder: Path
    #: The popularity list of the last job, served to users the feed has no list for.
    popular: list[str] = attrs.field(factory=list)
    #: Stream time of the last job.
    made_at: float = 0.0
    jobs: int = 0
    lines: int = 0
    last_report: LoadReport | None = None
    last_file: Path | None = None
    served: int = 0
    fallback: int = 0

    async def run_job(self, system: ActorSystem, ranker: RankerActor, at: float) -> None:
        """The nightly job at stream time ``at``: lists for every user known now, as a feed."""
        lists, self.popular = await _nightly(system, ranker)
        self.jobs += 1
        path = self.folder / f"batch-{self.jobs:04d}.jsonl"
        self.lines = await trio.to_thread.run_sync(write_feed, path, lists)
        self.last_report = await trio.to_thread.run_sync(self.feed.load, open_source(str(path)))
        if self.last_file is not None:
            self.last_file.unlink(missing_ok=True)  # the store holds what it said; keep one file
        self.last_file, self.made_at = path, at

    def serve(self, who: str, seen: set[str], k: int) -> list[str]:
        entry = self.feed.get(SURFACE, who)
        if entry is not None and entry.items:
            self.served += 1
            return _serve(entry.items, seen, k)
        self.fallback += 1
        return _serve(self.popular, seen, k)


def bucket_of(events_so_far: int) -> str:
    if events_so_far < 10:
        return "<10"
    return "10-50" if events_so_far <= 50 else ">50"


async def replay(
    records: Sequence[tuple[str, Mapping[str, Any]]],
    config: ReplayConfig | None = None,
    *,
    progress: Progress | None = None,
    on_request: RequestHook | None = None,
) -> dict[str, Any]:
    """Run the protocol over ``records`` (``("item"|"event", map)`` in time order).

    ``on_request(event, system)`` is called (and awaited if it returns an
    awaitable) right before the systems are asked about ``event``: the
    engine then holds exactly what came before it.

    Raises:
        ModelError: nothing before the cut to train on.
    """
    config = config or ReplayConfig()
    with _feed_folder(config.feed_dir) as folder:
        feed = FeedStore(folder / "store", isolate=False)
        try:
            return await _replay(records, config, progress, on_request, folder, feed)
        finally:
            feed.close()


async def _replay(
    records: Sequence[tuple[str, Mapping[str, Any]]],
    config: ReplayConfig,
    progress: Progress | None,
    on_request: RequestHook | None,
    folder: Path,
    feed: FeedStore,
) -> dict[str, Any]:
    say = progress or (lambda _: None)
    n_events = sum(1 for kind, _ in records if kind == "event")
    cut_at = int(n_events * config.cut)
    store = MemoryEventStore()
    seen: dict[str, set[str]] = {}
    activity: dict[str, int] = {}
    cut_ts = 0.0
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
                cut_ts = float(body["ts"])
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
        latencies: dict[str, list[float]] = {s: [] for s in SYSTEMS}
        staleness: dict[str, list[float]] = {"batch": [], "popularity": []}
        freshness: list[float] = []
        batch = _Batch(feed=feed, folder=folder)
        async with open_ranker(system) as ranker:
            await ranker.use_model(model)
            await batch.run_job(system, ranker, cut_ts)
            popular = list(batch.popular)  # the popularity baseline stays the cut's
            known = set(activity)  # users the batch knew: events before the cut
            every = config.batch_every_s
            next_job = math.inf if every is None else cut_ts + every
            say(f"batch feed of {batch.lines:,} users written and loaded; replaying")
            evaluated, last_report = 0, time.monotonic()
            for kind, body in records[position:]:
                if kind == "item":
                    await _upsert(system, body)
                    continue
                ts = float(body["ts"])
                if ts >= next_job and every is not None:
                    # The job runs at its scheduled time: it sees the events before it, no later.
                    at = next_job + math.floor((ts - next_job) / every) * every
                    await batch.run_job(system, ranker, at)
                    next_job = at + every
                    say(
                        f"batch job {batch.jobs} at cut + {(at - cut_ts) / 3600:.0f} h: "
                        f"{batch.lines:,} lists"
                    )
                who, item = body["user"], body["item"]
                mine = seen.setdefault(who, set())
                if body["type"] in POSITIVE and item not in mine:
                    if on_request is not None:
                        maybe = on_request(body, system)
                        if inspect.isawaitable(maybe):
                            await maybe
                    bucket = bucket_of(activity.get(who, 0))
                    cohort = "known" if who in known else "new"
                    t0 = time.perf_counter()
                    got = await ranker.recommend(
                        RecommendRequest(user=who, surface=SURFACE, k=config.k)
                    )
                    t1 = time.perf_counter()
                    from_batch = batch.serve(who, mine, config.k)
                    t2 = time.perf_counter()
                    from_popular = _serve(popular, mine, config.k)
                    t3 = time.perf_counter()
                    latencies["realtime"].append(t1 - t0)
                    latencies["batch"].append(t2 - t1)
                    latencies["popularity"].append(t3 - t2)
                    staleness["batch"].append(ts - batch.made_at)
                    staleness["popularity"].append(ts - cut_ts)
                    lists = {
                        "realtime": [entry["id"] for entry in got.items],
                        "batch": from_batch,
                        "popularity": from_popular,
                    }
                    for name, served in lists.items():
                        rank = served.index(item) if item in served else None
                        tallies[name]["all"].add(rank)
                        tallies[name][bucket].add(rank)
                        tallies[name][cohort].add(rank)
                    evaluated += 1
                    if config.max_requests is not None and evaluated >= config.max_requests:
                        break
                t0 = time.perf_counter()
                await _flush(system, [body])
                freshness.append(time.perf_counter() - t0)
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
        entry["latency_ms"] = _percentiles(latencies[name], 1000.0, 4)
        out[name] = entry
    out["realtime"]["freshness_ms"] = _percentiles(freshness, 1000.0, 4)
    for name, ages in staleness.items():
        out[name]["staleness_s"] = _percentiles(ages, 1.0, 1)
    report = batch.last_report
    out["protocol"] = {
        "events": n_events,
        "cut_events": cut_at,
        "cut_ts": cut_ts,
        "k": config.k,
        "evaluated": evaluated,
        "model": dict(model.facts),
        "batch_feed": {
            "format": "jsonl",
            "surface": SURFACE,
            "depth": BATCH_DEPTH,
            "jobs": batch.jobs,
            "every_s": every,
            "lines": batch.lines,
            "entries": None if report is None else report.entries,
            "bad": None if report is None else report.bad,
            "served": batch.served,
            "fallback": batch.fallback,
            "path": None
            if config.feed_dir is None or batch.last_file is None
            else str(batch.last_file),
        },
    }
    return out


def write_feed(path: Path, lists: Mapping[str, tuple[Sequence[str], Sequence[float]]]) -> int:
    """Write ``user → (items, scores)`` as a legacy batch feed (JSONL) at ``path``. Blocking.

    One line per user with a non-empty list, on :data:`SURFACE`, in the format
    :func:`legacy_adapter.open_source` reads. Returns the lines written.
    """
    lines = 0
    with open(path, "w", encoding="utf-8") as f:
        for who, (items, scores) in lists.items():
            if not items:
                continue  # a batch job writes no line for a user it has nothing for
            line: dict[str, Any] = {"user": who, "surface": SURFACE, "items": list(items)}
            if len(scores) == len(items) and all(math.isfinite(s) for s in scores):
                line["scores"] = [round(float(s), 6) for s in scores]
            f.write(json.dumps(line, separators=(",", ":")) + "\n")
            lines += 1
    return lines


@contextlib.contextmanager
def _feed_folder(keep: Path | None) -> Iterator[Path]:
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        yield keep
        return
    with tempfile.TemporaryDirectory(prefix="matchlight-replay-") as tmp:
        yield Path(tmp)


def _percentiles(samples: Sequence[float], scale: float, digits: int) -> dict[str, float | None]:
    if not samples:
        return {"p50": None, "p99": None}
    values = np.asarray(samples, dtype=np.float64) * scale
    p50, p99 = np.percentile(values, [50, 99])
    return {"p50": round(float(p50), digits), "p99": round(float(p99), digits)}


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
) -> tuple[dict[str, tuple[list[str], list[float]]], list[str]]:
    """What a nightly job makes: per-user top lists with scores, and the popularity list.

    The per-user lists come from the same ranker and model as the real-time
    path, asked once per user known now: only freshness differs.
    """
    index, signals = system.index, system.signals
    live = to_docs(index.live)
    levels = signals.levels(live)
    popular = index.external(live[np.argsort(-levels, kind="stable")][: BATCH_DEPTH * 4].tolist())
    lists: dict[str, tuple[list[str], list[float]]] = {}
    for info in system.store.iter_streams(user.KIND):
        answer = await ranker.recommend(
            RecommendRequest(user=info.entity_id, surface=SURFACE, k=BATCH_DEPTH)
        )
        lists[info.entity_id] = (
            [entry["id"] for entry in answer.items],
            [float(entry["score"]) for entry in answer.items],
        )
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


def format_timing(results: Mapping[str, Any]) -> str:
    """Latency and freshness of each path as a terminal table (absent entries are skipped)."""
    header = f"{'system':<11} {'answer p50/p99 ms':>19}   freshness"
    lines = [header, "-" * (len(header) + 50)]
    for name in SYSTEMS:
        entry = results.get(name, {})
        latency = entry.get("latency_ms") or {}
        answer = f"{_num(latency.get('p50'))} / {_num(latency.get('p99'))}"
        if "freshness_ms" in entry:
            fresh = entry["freshness_ms"]
            note = (
                f"event visible after its ingest call: p50 {_num(fresh.get('p50'))} ms, "
                f"p99 {_num(fresh.get('p99'))} ms"
            )
        elif "staleness_s" in entry:
            age = entry["staleness_s"]
            note = f"list age at request: p50 {_age(age.get('p50'))}, p99 {_age(age.get('p99'))}"
        else:
            note = ""
        lines.append(f"{name:<11} {answer:>19}   {note}")
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} d"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"


def main(args: Any) -> int:
    """``matchlight replay``: the protocol on a dataset; tables on stdout, optional JSON."""
    import sys

    from matchlight.datasets import DatasetError, dataset_from_spec
    from ranker import ModelError

    def progress(message: str) -> None:
        print(f"replay: {message}", file=sys.stderr, flush=True)

    every_h = getattr(args, "batch_every", None)
    if every_h is not None and not (math.isfinite(every_h) and every_h > 0):
        print(f"matchlight replay: --batch-every must be > 0 hours, got {every_h}", file=sys.stderr)
        return 2
    try:
        dataset = dataset_from_spec(
            args.dataset, seed=args.seed, consumers=args.consumers, pros=args.pros
        )
    except DatasetError as exc:
        print(f"matchlight replay: {exc}", file=sys.stderr)
        return 2
    print(f"dataset {dataset.describe()}")
    for bad in dataset.examples:
        print(f"  bad line {bad.line}: {bad.reason}")
    if dataset.bad > len(dataset.examples):
        print(f"  ... and {dataset.bad - len(dataset.examples):,} more bad lines")
    config = ReplayConfig(
        cut=args.cut,
        k=args.k,
        training=TrainingConfig(epochs=args.epochs, seed=args.seed, threads=args.threads),
        max_requests=args.max_requests,
        batch_every_s=None if every_h is None else every_h * 3600.0,
        feed_dir=getattr(args, "feed_dir", None),
    )
    try:
        results = trio.run(lambda: replay(dataset.records, config, progress=progress))
    except ModelError as exc:
        print(f"matchlight replay: {dataset.name}: {exc}", file=sys.stderr)
        return 2
    results["protocol"]["dataset"] = dataset.summary()
    print(format_table(results, config.k))
    print()
    print(format_timing(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0
