"""Prequential replay: does real time beat the nightly batch and simple real-time baselines?

The protocol, written once (:func:`replay`) for a real-time path in-process
or over msgpack-RPC against a running server (:mod:`matchlight.evaluation.systems`):

1. Everything before the cut (``cut`` of the events, by time) is ingested
   (items upserted first, events in batches) and the real-time path is
   trained on it: in-process a LightFM model is fitted and swapped in; over
   RPC ``matchlight train`` runs on the server's data directory and the
   replay waits until ``stats`` reports the new model.
2. At the cut, as a nightly batch job would, two frozen baselines are made:
   ``batch`` — the real-time path's top lists for every user known then,
   from their state then, written as a legacy batch feed (one JSONL line
   per user on the ``default`` surface, the format
   :mod:`legacy_adapter.sources` reads) and served from a
   :class:`legacy_adapter.FeedStore` loaded with it; ``popularity`` — the
   items with the most positive events before the cut. Both serve their
   list without the items the user has interacted with since (what a
   batch feed's client does), and a user the batch never saw gets the
   popularity list. With ``batch_every_s`` the batch job runs again at
   that interval of stream time (the model stays the one trained at the
   cut); otherwise its lists stay those of the cut.
3. Two simple real-time baselines (:mod:`matchlight.evaluation.baselines`) see
   every event as it happens, history included: ``realtime_popularity``
   (decayed count of positive events, 7-day half-life) and ``item_knn``
   (co-occurrence of likes with the user's last 20 likes, filled with
   real-time popularity).
4. Then, in time order, for each positive event (``like``, ``save``,
   ``hire``) on an item new to the user, every system is first asked for
   its top ``k`` and only then is the event ingested (the real-time path
   and the baselines see every event, positive or not, as it happens). A
   hit is the event's item in the list; NDCG@k credits it by rank.

Results are reported overall, by the user's activity so far (events
before the request: ``<10``, ``10-50``, ``>50``), and by cohort: ``known``
users had events before the cut, ``new`` ones arrived after it; and as a
cohort table with each system's ratio to the best simple real-time
baseline (:mod:`matchlight.evaluation.report`). Each system's ``latency_ms``
is the time to answer. Freshness: an event is visible to the real-time
path's next recommend once its ingest call returns (read-your-writes), so
``freshness_ms`` is that call's duration; the batch and popularity lists
are ``staleness_s`` old at each request (stream time since the job that
made them).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import math
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import numpy as np
import trio

from legacy_adapter import FeedStore, LoadReport, open_source
from matchlight.evaluation.baselines import ItemKnn, RealtimePopularity
from matchlight.evaluation.report import (
    BUCKETS,
    COHORTS,
    SYSTEMS,
    Tally,
    bucket_of,
    cohort_table,
    cohort_table_html,
    format_cohorts,
    format_table,
    format_timing,
)
from matchlight.evaluation.synthetic import POSITIVE
from matchlight.evaluation.systems import (
    SURFACE,
    RealtimePath,
    nightly_lists,
    open_in_process,
    open_over_rpc,
)
from ranker import TrainingConfig

__all__ = [
    "BUCKETS",
    "COHORTS",
    "SYSTEMS",
    "ReplayConfig",
    "bucket_of",
    "cohort_table",
    "cohort_table_html",
    "format_cohorts",
    "format_table",
    "format_timing",
    "replay",
    "write_feed",
]

BATCH_DEPTH: Final = 60
INGEST_CHUNK: Final = 2000
UPSERT_CHUNK: Final = 1000
#: The cut the issue's protocol uses on real data (first 80% as history).
REAL_DATA_CUT: Final = 0.8
SYNTHETIC_CUT: Final = 0.7

Progress = Callable[[str], None]
#: Called as ``hook(event, target)`` right before each evaluated request; may be async.
#: ``target`` is the in-process actor system (None over RPC).
RequestHook = Callable[[Mapping[str, Any], Any], Awaitable[None] | None]
#: Opens the real-time path for a run (in-process by default).
PathOpener = Callable[[TrainingConfig], contextlib.AbstractAsyncContextManager[RealtimePath]]


@attrs.frozen(kw_only=True)
class ReplayConfig:
    #: Share of the events (in time order) before the cut.
    cut: float = SYNTHETIC_CUT
    k: int = 10
    training: TrainingConfig = attrs.field(factory=TrainingConfig)
    #: Stop after this many evaluated requests (None: the whole stream).
    max_requests: int | None = None
    #: Rerun the batch job every this many seconds of stream time (None: only at the cut).
    batch_every_s: float | None = None
    #: Keep the batch feed files and the feed store here (None: a temporary directory).
    feed_dir: Path | None = None


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

    async def run_job(
        self, path: RealtimePath, users: Sequence[str], popular: list[str], at: float
    ) -> None:
        """The nightly job at stream time ``at``: lists for every user known now, as a feed."""
        lists = await nightly_lists(path, users, BATCH_DEPTH)
        self.popular = popular
        self.jobs += 1
        target = self.folder / f"batch-{self.jobs:04d}.jsonl"
        self.lines = await trio.to_thread.run_sync(write_feed, target, lists)
        self.last_report = await trio.to_thread.run_sync(self.feed.load, open_source(str(target)))
        if self.last_file is not None:
            self.last_file.unlink(missing_ok=True)  # the store holds what it said; keep one file
        self.last_file, self.made_at = target, at

    def serve(self, who: str, seen: set[str], k: int) -> list[str]:
        entry = self.feed.get(SURFACE, who)
        if entry is not None and entry.items:
            self.served += 1
            return _serve(entry.items, seen, k)
        self.fallback += 1
        return _serve(self.popular, seen, k)


@attrs.define
class _Stream:
    """What the harness knows of the stream so far: each user's items and activity."""

    seen: dict[str, set[str]] = attrs.field(factory=dict)
    activity: dict[str, int] = attrs.field(factory=dict)
    #: Positive events per item so far (the frozen popularity list's order).
    positives: dict[str, int] = attrs.field(factory=dict)
    popularity: RealtimePopularity = attrs.field(factory=RealtimePopularity)
    knn: ItemKnn = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.knn = ItemKnn(self.popularity)

    def observe(self, event: Mapping[str, Any]) -> None:
        who = event["user"]
        self.seen.setdefault(who, set()).add(event["item"])
        self.activity[who] = self.activity.get(who, 0) + 1
        if event["type"] in POSITIVE:
            self.positives[event["item"]] = self.positives.get(event["item"], 0) + 1
        self.popularity.observe(event)
        self.knn.observe(event)

    def most_positive(self, depth: int) -> list[str]:
        """The items with the most positive events so far (ties: first seen first)."""
        return sorted(self.positives, key=lambda i: -self.positives[i])[:depth]


async def replay(
    records: Sequence[tuple[str, Mapping[str, Any]]],
    config: ReplayConfig | None = None,
    *,
    progress: Progress | None = None,
    on_request: RequestHook | None = None,
    realtime: PathOpener | None = None,
) -> dict[str, Any]:
    """Run the protocol over ``records`` (``("item"|"event", map)`` in time order).

    ``realtime`` opens the real-time path (default: the engine in-process;
    see :func:`over_rpc`). ``on_request(event, target)`` is called (and
    awaited if it returns an awaitable) right before the systems are asked
    about ``event``: the real-time path then holds exactly what came before it.

    Raises:
        ModelError: nothing before the cut to train on (in-process).
        ReplayServerError: over RPC, the server failed or could not be trained.
    """
    config = config or ReplayConfig()
    opener = realtime or open_in_process
    with _feed_folder(config.feed_dir) as folder:
        feed = FeedStore(folder / "store", isolate=False)
        try:
            async with opener(config.training) as path:
                return await _replay(records, config, path, progress, on_request, folder, feed)
        finally:
            feed.close()


def over_rpc(
    server: str, *, server_data: Path | None = None, token: str | None = None
) -> PathOpener:
    """A :func:`replay` ``realtime`` opener for the server at ``HOST:PORT``."""

    @contextlib.asynccontextmanager
    async def opener(training: TrainingConfig) -> AsyncIterator[RealtimePath]:
        async with open_over_rpc(server, training, server_data=server_data, token=token) as path:
            yield path

    return opener


async def _history(
    path: RealtimePath,
    records: Sequence[tuple[str, Mapping[str, Any]]],
    cut_at: int,
    stream: _Stream,
    say: Progress,
) -> tuple[int, float]:
    """Ingest the records before the cut; return where the rest starts and the cut's time.

    Items are upserted first (each before its first event, as the stream
    has them), then the events in batches of :data:`INGEST_CHUNK`.
    """
    position = events = 0
    items: list[Mapping[str, Any]] = []
    history: list[Mapping[str, Any]] = []
    while events < cut_at:
        kind, body = records[position]
        position += 1
        if kind == "item":
            items.append(body)
        else:
            history.append(body)
            events += 1
    for start in range(0, len(items), UPSERT_CHUNK):
        await path.upsert(items[start : start + UPSERT_CHUNK])
    say(f"{len(items):,} items upserted; ingesting {len(history):,} events before the cut")
    last_report = time.monotonic()
    for start in range(0, len(history), INGEST_CHUNK):
        chunk = history[start : start + INGEST_CHUNK]
        await path.ingest(chunk)
        for body in chunk:
            stream.observe(body)
        if time.monotonic() - last_report > 2.0:
            say(f"{start + len(chunk):,} of {len(history):,} events ingested")
            last_report = time.monotonic()
    cut_ts = float(history[-1]["ts"]) if history else 0.0
    return position, cut_ts


async def _replay(
    records: Sequence[tuple[str, Mapping[str, Any]]],
    config: ReplayConfig,
    path: RealtimePath,
    progress: Progress | None,
    on_request: RequestHook | None,
    folder: Path,
    feed: FeedStore,
) -> dict[str, Any]:
    say = progress or (lambda _: None)
    n_events = sum(1 for kind, _ in records if kind == "event")
    cut_at = int(n_events * config.cut)
    stream = _Stream()
    position, cut_ts = await _history(path, records, cut_at, stream, say)
    say(f"{cut_at:,} events before the cut ({path.where}); training")
    started = time.monotonic()
    model = await path.train(say)
    say(f"trained in {time.monotonic() - started:.1f} s; precomputing the batch lists")
    tallies = {s: {row: Tally() for row in ("all", *BUCKETS, *COHORTS)} for s in SYSTEMS}
    latencies: dict[str, list[float]] = {s: [] for s in SYSTEMS}
    staleness: dict[str, list[float]] = {"batch": [], "popularity": []}
    freshness: list[float] = []
    recalled = [0, 0]  # revealed items among the candidates, requests that reported it
    candidates: list[int] = []
    batch = _Batch(feed=feed, folder=folder)
    popular = stream.most_positive(BATCH_DEPTH * 4)  # the popularity baseline stays the cut's
    await batch.run_job(path, list(stream.activity), popular, cut_ts)
    known = set(stream.activity)  # users the batch knew: events before the cut
    every = config.batch_every_s
    next_job = math.inf if every is None else cut_ts + every
    say(f"batch feed of {batch.lines:,} users written and loaded; replaying")
    evaluated, last_report = 0, time.monotonic()
    k = config.k
    for kind, body in records[position:]:
        if kind == "item":
            await path.upsert([body])
            continue
        ts = float(body["ts"])
        if ts >= next_job and every is not None:
            # The job runs at its scheduled time: it sees the events before it, no later.
            at = next_job + math.floor((ts - next_job) / every) * every
            await batch.run_job(
                path, list(stream.activity), stream.most_positive(BATCH_DEPTH * 4), at
            )
            next_job = at + every
            say(
                f"batch job {batch.jobs} at cut + {(at - cut_ts) / 3600:.0f} h: "
                f"{batch.lines:,} lists"
            )
        who, item = body["user"], body["item"]
        mine = stream.seen.setdefault(who, set())
        if body["type"] in POSITIVE and item not in mine:
            if on_request is not None:
                maybe = on_request(body, path.hook_target)
                if inspect.isawaitable(maybe):
                    await maybe
            rows = (
                "all",
                bucket_of(stream.activity.get(who, 0)),
                "known" if who in known else "new",
            )
            lists: dict[str, list[str]] = {}
            t0 = time.perf_counter()
            answer = await path.recommend(who, k, item=item)
            t1 = time.perf_counter()
            lists["realtime"] = answer.items
            latencies["realtime"].append(t1 - t0)
            for name in ("batch", "popularity", "realtime_popularity", "item_knn"):
                t0 = time.perf_counter()
                if name == "batch":
                    lists[name] = batch.serve(who, mine, k)
                elif name == "popularity":
                    lists[name] = _serve(popular, mine, k)
                elif name == "realtime_popularity":
                    lists[name] = stream.popularity.recommend(mine, k)
                else:
                    lists[name] = stream.knn.recommend(who, mine, k)
                latencies[name].append(time.perf_counter() - t0)
            staleness["batch"].append(ts - batch.made_at)
            staleness["popularity"].append(ts - cut_ts)
            if answer.retrieved is not None:
                recalled[0] += answer.retrieved
                recalled[1] += 1
            if answer.candidates is not None:
                candidates.append(answer.candidates)
            for name, served in lists.items():
                rank = served.index(item) if item in served else None
                for row in rows:
                    tallies[name][row].add(rank)
            evaluated += 1
            if config.max_requests is not None and evaluated >= config.max_requests:
                break
        t0 = time.perf_counter()
        await path.ingest([body])
        freshness.append(time.perf_counter() - t0)
        stream.observe(body)
        if time.monotonic() - last_report > 2.0:
            say(f"{evaluated:,} requests evaluated")
            last_report = time.monotonic()
    out: dict[str, Any] = {}
    for name in SYSTEMS:
        entry = tallies[name]["all"].summary(k)
        entry["by_activity"] = {b: tallies[name][b].summary(k) for b in BUCKETS}
        entry["by_cohort"] = {c: tallies[name][c].summary(k) for c in COHORTS}
        entry["latency_ms"] = _percentiles(latencies[name], 1000.0, 4)
        out[name] = entry
    out["realtime"]["freshness_ms"] = _percentiles(freshness, 1000.0, 4)
    out["realtime"]["retrieval_recall"] = (
        {"share": round(recalled[0] / recalled[1], 4), "reported": recalled[1]}
        if recalled[1]
        else None
    )
    out["realtime"]["candidates_mean"] = (
        round(float(np.mean(candidates)), 1) if candidates else None
    )
    for name, ages in staleness.items():
        out[name]["staleness_s"] = _percentiles(ages, 1.0, 1)
    out["cohort_table"] = cohort_table(out, k)
    report = batch.last_report
    out["protocol"] = {
        "realtime_path": path.where,
        "events": n_events,
        "cut": config.cut,
        "cut_events": cut_at,
        "cut_ts": cut_ts,
        "k": k,
        "evaluated": evaluated,
        "model": model,
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


def default_cut(dataset: str) -> float:
    """The cut when none is given: 0.8 on real data (the issue's protocol), 0.7 on synthetic."""
    return SYNTHETIC_CUT if dataset == "synthetic" else REAL_DATA_CUT


def main(args: Any) -> int:
    """``matchlight replay``: the protocol on a dataset; tables on stdout, optional JSON."""
    import sys

    from matchlight.evaluation.datasets import DatasetError, dataset_from_spec
    from matchlight.evaluation.systems import ReplayServerError, parse_server
    from ranker import ModelError

    def progress(message: str) -> None:
        print(f"replay: {message}", file=sys.stderr, flush=True)

    def fail(message: str) -> int:
        print(f"matchlight replay: {message}", file=sys.stderr)
        return 2

    every_h = getattr(args, "batch_every", None)
    if every_h is not None and not (math.isfinite(every_h) and every_h > 0):
        return fail(f"--batch-every must be > 0 hours, got {every_h}")
    server = getattr(args, "server", None)
    server_data = getattr(args, "server_data", None)
    if server is not None:
        try:
            parse_server(server)
        except ValueError as exc:
            return fail(f"--server: {exc}")
        if server_data is not None and not Path(server_data).is_dir():
            return fail(f"--server-data {server_data}: no such directory")
    elif server_data is not None:
        return fail("--server-data needs --server HOST:PORT")
    try:
        dataset = dataset_from_spec(
            args.dataset,
            seed=args.seed,
            consumers=args.consumers,
            pros=args.pros,
            cache_dir=getattr(args, "cache_dir", None),
            progress=progress,
        )
    except DatasetError as exc:
        return fail(str(exc))
    print(f"dataset {dataset.describe()}")
    for bad in dataset.examples:
        print(f"  bad line {bad.line}: {bad.reason}")
    if dataset.bad > len(dataset.examples):
        print(f"  ... and {dataset.bad - len(dataset.examples):,} more bad lines")
    cut = args.cut if args.cut is not None else default_cut(args.dataset)
    config = ReplayConfig(
        cut=cut,
        k=args.k,
        training=TrainingConfig(epochs=args.epochs, seed=args.seed, threads=args.threads),
        max_requests=args.max_requests,
        batch_every_s=None if every_h is None else every_h * 3600.0,
        feed_dir=getattr(args, "feed_dir", None),
    )
    opener = (
        None
        if server is None
        else over_rpc(
            server,
            server_data=None if server_data is None else Path(server_data),
            token=getattr(args, "token", None),
        )
    )
    where = "in-process" if server is None else f"over RPC at {server}"
    progress(f"cut {cut:g}, k {config.k}, real-time path {where}")
    try:
        results = trio.run(
            lambda: replay(dataset.records, config, progress=progress, realtime=opener)
        )
    except ModelError as exc:
        return fail(f"{dataset.name}: {exc}")
    except ReplayServerError as exc:
        print(f"matchlight replay: {exc}", file=sys.stderr)
        return 1
    results["protocol"]["dataset"] = dataset.summary()
    print(format_table(results, config.k))
    print()
    print(format_timing(results))
    print()
    print(format_cohorts(results["cohort_table"], config.k))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0
