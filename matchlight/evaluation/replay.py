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
   cut); otherwise its lists stay those of the cut
   (:mod:`matchlight.evaluation.batch`).
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
baseline (:mod:`matchlight.evaluation.measures`, :mod:`matchlight.evaluation.report`).
Each system's ``latency_ms``
is the time to answer. Freshness: an event is visible to the real-time
path's next recommend once its ingest call returns (read-your-writes), so
``freshness_ms`` is that call's duration; the batch and popularity lists
are ``staleness_s`` old at each request (stream time since the job that
made them).

The code follows the steps: :func:`_history` ingests until the cut, :func:`_at_cut`
runs the first batch job, and :func:`_after_cut` replays the rest: the batch
schedule (:func:`_batch_schedule`), the evaluation of each request
(:func:`_evaluate`), then the event.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import math
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from matchlight.evaluation.baselines import ItemKnn, RealtimePopularity
from matchlight.evaluation.batch import BATCH_DEPTH, BatchPath, open_batch_path, serve_unseen
from matchlight.evaluation.datasets import Dataset, DatasetError, dataset_from_spec
from matchlight.evaluation.measures import Asked, Measures
from matchlight.evaluation.report import bucket_of, format_cohorts, format_table, format_timing
from matchlight.evaluation.synthetic import POSITIVE
from matchlight.evaluation.systems import (
    RealtimePath,
    ReplayServerError,
    open_in_process,
    open_over_rpc,
    parse_server,
)
from ranker import ModelError, TrainingConfig

__all__ = [
    "ReplayConfig",
    "count_events",
    "cut_index",
    "is_request",
    "main",
    "over_rpc",
    "replay",
]

INGEST_CHUNK: Final = 2000
UPSERT_CHUNK: Final = 1000
#: The cut the issue's protocol uses on real data (first 80% as history).
REAL_DATA_CUT: Final = 0.8
SYNTHETIC_CUT: Final = 0.7

#: ``("item", map)`` and ``("event", map)`` in time order.
Records = Sequence[tuple[str, Mapping[str, Any]]]
Progress = Callable[[str], None]
#: Called as ``hook(event, target)`` right before each evaluated request; may be async.
#: ``target`` is the in-process actor system (None over RPC).
RequestHook = Callable[[Mapping[str, Any], Any], Awaitable[None] | None]
#: Opens the real-time path for a run (in-process by default).
PathOpener = Callable[[TrainingConfig], contextlib.AbstractAsyncContextManager[RealtimePath]]


@attrs.frozen(kw_only=True)
class ReplayConfig:
    """How a replay runs: the cut, the list length, the training, and the batch's schedule."""

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
    records: Records,
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
    with open_batch_path(config.feed_dir, config.batch_every_s) as batch:
        async with opener(config.training) as path:
            return await _replay(records, config, path, batch, progress, on_request)


def over_rpc(
    server: str, *, server_data: Path | None = None, token: str | None = None
) -> PathOpener:
    """A :func:`replay` ``realtime`` opener for the server at ``HOST:PORT``."""

    @contextlib.asynccontextmanager
    async def opener(training: TrainingConfig) -> AsyncIterator[RealtimePath]:
        async with open_over_rpc(server, training, server_data=server_data, token=token) as path:
            yield path

    return opener


def count_events(records: Records) -> int:
    """How many of ``records`` are events (the rest are item upserts)."""
    return sum(1 for kind, _ in records if kind == "event")


def cut_index(records: Records, cut: float) -> int:
    """How many events lie before the cut: the first ``cut`` share of them, rounded down."""
    return int(count_events(records) * cut)


def is_request(event: Mapping[str, Any], seen: set[str]) -> bool:
    """Whether the replay evaluates a request before ``event`` (after the cut): a positive
    event on an item not in ``seen``, the items its user interacted with before."""
    return event["type"] in POSITIVE and event["item"] not in seen


@attrs.define
class _Every:
    """A progress line at most every 2 s: :meth:`due` says whether one may go now."""

    last: float = attrs.field(factory=time.monotonic)

    def due(self) -> bool:
        now = time.monotonic()
        if now - self.last <= 2.0:
            return False
        self.last = now
        return True


async def _history(
    path: RealtimePath,
    records: Records,
    cut_at: int,
    stream: _Stream,
    say: Progress,
) -> tuple[int, float]:
    """Ingest until the cut; return where the rest of ``records`` starts and the cut's time.

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
    every = _Every()
    for start in range(0, len(history), INGEST_CHUNK):
        chunk = history[start : start + INGEST_CHUNK]
        await path.ingest(chunk)
        for body in chunk:
            stream.observe(body)
        if every.due():
            say(f"{start + len(chunk):,} of {len(history):,} events ingested")
    cut_ts = float(history[-1]["ts"]) if history else 0.0
    return position, cut_ts


@attrs.frozen(kw_only=True)
class _Systems:
    """Every system the replay asks, and what the frozen ones were made from at the cut."""

    path: RealtimePath
    batch: BatchPath
    #: The simple real-time baselines live in the stream (they see every event).
    stream: _Stream
    #: The frozen popularity list: the items with the most positive events before the cut.
    popular: Sequence[str]
    #: Users the batch knew: those with events before the cut.
    known: frozenset[str]
    #: Stream time of the cut.
    cut_ts: float
    k: int

    async def ask(self, who: str, item: str, latencies: Mapping[str, list[float]]) -> Asked:
        """Every system's top ``k`` for ``who``, each answer's time appended to ``latencies``.

        ``item`` (the revealed one) only feeds the real-time path's recall probe.
        """
        seen = self.stream.seen[who]
        t0 = time.perf_counter()
        answer = await self.path.recommend(who, self.k, item=item)
        latencies["realtime"].append(time.perf_counter() - t0)
        lists = {"realtime": answer.items}
        others: dict[str, Callable[[], list[str]]] = {
            "batch": lambda: self.batch.serve(who, seen, self.k),
            "popularity": lambda: serve_unseen(self.popular, seen, self.k),
            "realtime_popularity": lambda: self.stream.popularity.recommend(seen, self.k),
            "item_knn": lambda: self.stream.knn.recommend(who, seen, self.k),
        }
        for name, serve in others.items():
            t0 = time.perf_counter()
            lists[name] = serve()
            latencies[name].append(time.perf_counter() - t0)
        return Asked(lists=lists, retrieved=answer.retrieved, candidates=answer.candidates)


async def _at_cut(
    path: RealtimePath,
    stream: _Stream,
    batch: BatchPath,
    cut_ts: float,
    k: int,
    say: Progress,
) -> _Systems:
    """The nightly job at the cut, and the systems frozen then (the batch, popularity)."""
    popular = stream.most_positive(BATCH_DEPTH * 4)  # the popularity baseline stays the cut's
    await batch.run_job(path, list(stream.activity), popular, cut_ts)
    say(f"batch feed of {batch.lines:,} users written and loaded; replaying")
    return _Systems(
        path=path,
        batch=batch,
        stream=stream,
        popular=popular,
        known=frozenset(stream.activity),
        cut_ts=cut_ts,
        k=k,
    )


async def _batch_schedule(systems: _Systems, ts: float, say: Progress) -> None:
    """The batch schedule: before the event at stream time ``ts``, the job due by then, if any.

    The job runs at its scheduled time: it sees the events before it, no later.
    """
    at = systems.batch.due(ts)
    if at is None:
        return
    stream = systems.stream
    await systems.batch.run_job(
        systems.path, list(stream.activity), stream.most_positive(BATCH_DEPTH * 4), at
    )
    hours = (at - systems.cut_ts) / 3600
    say(f"batch job {systems.batch.jobs} at cut + {hours:.0f} h: {systems.batch.lines:,} lists")


async def _evaluate(systems: _Systems, event: Mapping[str, Any], measures: Measures) -> None:
    """The evaluation of one request: every system asked before ``event`` is revealed, and
    scored on the request's rows (all, the user's activity so far, known or new)."""
    who, item, ts = event["user"], event["item"], float(event["ts"])
    stream = systems.stream
    rows = (
        "all",
        bucket_of(stream.activity.get(who, 0)),
        "known" if who in systems.known else "new",
    )
    asked = await systems.ask(who, item, measures.latencies)
    measures.staleness["batch"].append(ts - systems.batch.made_at)
    measures.staleness["popularity"].append(ts - systems.cut_ts)
    measures.score(asked, item, rows)


async def _call_hook(hook: RequestHook | None, event: Mapping[str, Any], target: Any) -> None:
    """``hook(event, target)``, awaited if it returns an awaitable."""
    if hook is None:
        return
    maybe = hook(event, target)
    if inspect.isawaitable(maybe):
        await maybe


async def _after_cut(
    records: Records,
    systems: _Systems,
    config: ReplayConfig,
    on_request: RequestHook | None,
    say: Progress,
) -> Measures:
    """The stream after the cut, in time order: the batch schedule, then for each request
    every system asked and scored, then the event ingested and seen by the baselines.

    Stops after :attr:`ReplayConfig.max_requests` requests, if given.
    """
    path, stream, measures, every = systems.path, systems.stream, Measures(), _Every()
    for kind, body in records:
        if kind == "item":
            await path.upsert([body])
            continue
        await _batch_schedule(systems, float(body["ts"]), say)
        if is_request(body, stream.seen.setdefault(body["user"], set())):
            await _call_hook(on_request, body, path.hook_target)
            await _evaluate(systems, body, measures)
            if config.max_requests is not None and measures.evaluated >= config.max_requests:
                break
        t0 = time.perf_counter()
        await path.ingest([body])
        measures.freshness.append(time.perf_counter() - t0)
        stream.observe(body)
        if every.due():
            say(f"{measures.evaluated:,} requests evaluated")
    return measures


async def _replay(
    records: Records,
    config: ReplayConfig,
    path: RealtimePath,
    batch: BatchPath,
    progress: Progress | None,
    on_request: RequestHook | None,
) -> dict[str, Any]:
    """The protocol's stages in order: ingest until the cut, train, the batch job at the cut,
    then the stream after it with each request evaluated; the results :func:`replay` returns."""
    say = progress or (lambda _: None)
    cut_at = cut_index(records, config.cut)
    stream = _Stream()
    position, cut_ts = await _history(path, records, cut_at, stream, say)
    say(f"{cut_at:,} events before the cut ({path.where}); training")
    started = time.monotonic()
    model = await path.train(say)
    say(f"trained in {time.monotonic() - started:.1f} s; precomputing the batch lists")
    systems = await _at_cut(path, stream, batch, cut_ts, config.k, say)
    measures = await _after_cut(records[position:], systems, config, on_request, say)
    out = measures.results(config.k)
    out["protocol"] = {
        "realtime_path": path.where,
        "events": count_events(records),
        "cut": config.cut,
        "cut_events": cut_at,
        "cut_ts": cut_ts,
        "k": config.k,
        "evaluated": measures.evaluated,
        "model": model,
        "batch_feed": batch.describe(),
    }
    return out


def default_cut(dataset: str) -> float:
    """The cut when none is given: 0.8 on real data (the issue's protocol), 0.7 on synthetic."""
    return SYNTHETIC_CUT if dataset == "synthetic" else REAL_DATA_CUT


def main(args: argparse.Namespace) -> int:
    """``matchlight replay``: the protocol on a dataset; tables on stdout, optional JSON.

    Returns the exit status: 2 for bad arguments, a dataset that cannot be
    read or nothing to train on; 1 when the server failed; 0 otherwise.
    """
    problem = _argument_problem(args)
    if problem is not None:
        return _fail(problem)
    try:
        dataset = dataset_from_spec(
            args.dataset,
            seed=args.seed,
            consumers=args.consumers,
            pros=args.pros,
            cache_dir=getattr(args, "cache_dir", None),
            progress=_progress,
        )
    except DatasetError as exc:
        return _fail(str(exc))
    _print_dataset(dataset)
    config = _config(args)
    server = getattr(args, "server", None)
    where = "in-process" if server is None else f"over RPC at {server}"
    _progress(f"cut {config.cut:g}, k {config.k}, real-time path {where}")
    opener = _opener(args)
    try:
        results = trio.run(
            lambda: replay(dataset.records, config, progress=_progress, realtime=opener)
        )
    except ModelError as exc:
        return _fail(f"{dataset.name}: {exc}")
    except ReplayServerError as exc:
        print(f"matchlight replay: {exc}", file=sys.stderr)
        return 1
    results["protocol"]["dataset"] = dataset.summary()
    _print_results(results, config.k)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0


def _progress(message: str) -> None:
    print(f"replay: {message}", file=sys.stderr, flush=True)


def _fail(message: str) -> int:
    print(f"matchlight replay: {message}", file=sys.stderr)
    return 2


def _argument_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--batch-every``, ``--server`` or ``--server-data``, if anything."""
    every_h = getattr(args, "batch_every", None)
    if every_h is not None and not (math.isfinite(every_h) and every_h > 0):
        return f"--batch-every must be > 0 hours, got {every_h}"
    server = getattr(args, "server", None)
    server_data = getattr(args, "server_data", None)
    if server is None:
        return None if server_data is None else "--server-data needs --server HOST:PORT"
    try:
        parse_server(server)
    except ValueError as exc:
        return f"--server: {exc}"
    if server_data is not None and not Path(server_data).is_dir():
        return f"--server-data {server_data}: no such directory"
    return None


def _print_dataset(dataset: Dataset) -> None:
    """The dataset's one-line description and the bad lines it skipped (the first ones)."""
    print(f"dataset {dataset.describe()}")
    for bad in dataset.examples:
        print(f"  bad line {bad.line}: {bad.reason}")
    if dataset.bad > len(dataset.examples):
        print(f"  ... and {dataset.bad - len(dataset.examples):,} more bad lines")


def _config(args: argparse.Namespace) -> ReplayConfig:
    """The replay's settings from the command line (the cut defaults by dataset)."""
    every_h = getattr(args, "batch_every", None)
    return ReplayConfig(
        cut=args.cut if args.cut is not None else default_cut(args.dataset),
        k=args.k,
        training=TrainingConfig(epochs=args.epochs, seed=args.seed, threads=args.threads),
        max_requests=args.max_requests,
        batch_every_s=None if every_h is None else every_h * 3600.0,
        feed_dir=getattr(args, "feed_dir", None),
    )


def _opener(args: argparse.Namespace) -> PathOpener | None:
    """The real-time path over RPC with ``--server``; None (in-process) without it."""
    server = getattr(args, "server", None)
    if server is None:
        return None
    server_data = getattr(args, "server_data", None)
    return over_rpc(
        server,
        server_data=None if server_data is None else Path(server_data),
        token=getattr(args, "token", None),
    )


def _print_results(results: Mapping[str, Any], k: int) -> None:
    """The tables: every figure, latency and freshness, then the cohort table."""
    print(format_table(results, k))
    print()
    print(format_timing(results))
    print()
    print(format_cohorts(results["cohort_table"], k))
