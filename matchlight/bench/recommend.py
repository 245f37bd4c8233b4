"""``matchlight bench recommend``: in-process ``recommend`` latency over a 100,000-item catalogue.

The engine (actor system, index, ranker) runs in this process over an
in-memory event store: the benchmark times the ranker, not the disk.
It loads the retrieval benchmark's synthetic catalogue, ingests a history
of users who favour a few topics, trains a LightFM model on it, then
times ``recommend`` for a mix of users with history and new users on

- ``heuristic``: the default surface before any model exists;
- ``model``: the default surface with the model (1,000 of 100,000 items scored);
- ``surface``: a configured surface: city from the request context, a boost
  rule, at most 3 per topic, 10% exploration;
- ``stochastic``: the same surface serving a Plackett-Luce draw from its best 12
  instead of exploring, with each slot's exact probabilities;

and, as the peer measured in the same run, scoring the whole catalogue with
the same model (a numpy dot over every item's embedding, then the top k):
what a system without retrieval does for each request.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from typing import Any, Final

import attrs
import numpy as np
import trio

from actors import (
    ActorSystem,
    MemoryEventStore,
    RecordInteraction,
    UpsertItem,
    open_actor_system,
)
from matchlight.bench.harness import latency_summary
from matchlight.bench.index_workload import Catalogue, make_catalogue, note
from matchlight.cli.argtypes import positive_int
from matchlight.server.app import tune_gc
from ranker import (
    Model,
    RankerActor,
    RecommendRequest,
    TrainingConfig,
    fit,
    open_ranker,
    parse_surfaces,
    read_log,
)
from ranker.policy import BLEND_PARTS
from ranker.serving import serving_model

SURFACES: Final = {
    "surfaces": {
        "local": {
            "k": 10,
            "retrieval": {"term": ["city", "$context.city"]},
            "blend": {"model": 1.0, "popularity": 0.2, "affinity": 0.3},
            "rules": [{"action": "boost", "query": {"range": ["like", 5, None]}, "weight": 0.3}],
            "diversity": {"field": "topic", "max_per_value": 3},
            "exploration": {"share": 0.1, "seed": 1},
        },
        # The same, serving a Plackett-Luce draw (pool k + 2 = 12) instead of exploring.
        "stochastic": {
            "k": 10,
            "retrieval": {"term": ["city", "$context.city"]},
            "blend": {"model": 1.0, "popularity": 0.2, "affinity": 0.3},
            "rules": [{"action": "boost", "query": {"range": ["like", 5, None]}, "weight": 0.3}],
            "diversity": {"field": "topic", "max_per_value": 3},
            "stochastic": {"temperature": 0.5, "seed": 1},
        },
        # Every part of the score on: model, co-occurrence, trending, popularity, ...
        "every_part": {
            "k": 10,
            "blend": dict.fromkeys(BLEND_PARTS, 1.0),
        },
    }
}
TYPES: Final = ("view", "view", "view", "click", "like", "like", "save", "hire", "dismiss")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``matchlight bench recommend``."""
    parser.add_argument("--items", type=positive_int, default=100_000, help="catalogue size")
    parser.add_argument("--users", type=positive_int, default=20_000, help="users with history")
    parser.add_argument("--events", type=positive_int, default=200_000, help="history events")
    parser.add_argument(
        "--requests", type=positive_int, default=2000, help="timed requests per case"
    )
    parser.add_argument("--epochs", type=positive_int, default=5, help="training epochs")
    parser.add_argument("--seed", type=int, default=1, help="data seed")
    parser.add_argument("--json", metavar="FILE", help="also write the results as JSON")


def _latency(samples: list[float]) -> dict[str, float]:
    return latency_summary(samples, stats=("p50", "p99", "p999", "mean"))


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    """Load, time the heuristic ranker, train, time the model's cases and the peer."""
    rng = random.Random(args.seed)
    cat = make_catalogue(args.items, args.seed)
    store = MemoryEventStore()
    results: dict[str, Any] = {"items": args.items, "users": args.users, "events": args.events}
    async with open_actor_system(store) as system:
        started = time.perf_counter()
        await _load_catalogue(system, cat)
        events = _history(cat, args, rng)
        for lo in range(0, len(events), 10_000):
            await system.ingest(events[lo : lo + 10_000])
        note(
            f"loaded {args.items:,} items and {args.events:,} events "
            f"in {time.perf_counter() - started:.1f} s; timing the heuristic ranker"
        )
        tune_gc()  # as `matchlight serve` does once its state is loaded
        known = sorted({e.user for e in events})
        people = [rng.choice(known) if rng.random() < 0.8 else f"new-{n}" for n in range(10_000)]
        timer = _Timer(people=people, cities=sorted(set(cat.cities)), rng=rng)
        async with open_ranker(system, parse_surfaces(SURFACES)) as ranker:
            results["heuristic"] = await timer.time(ranker, "default", args.requests)
            model = await _train(store, args, results)
            await ranker.use_model(model)
            note(f"trained in {results['train_s']} s; timing the model and the surface")
            results["model"] = await timer.time(ranker, "default", args.requests)
            results["surface"] = await timer.time(ranker, "local", args.requests)
            results["stochastic"] = await timer.time(ranker, "stochastic", args.requests)
            results["every_part"] = await timer.time(ranker, "every_part", args.requests)
            results["cooccurrence"] = attrs.asdict(system.cooccurrence.statistics())
            results["peer_full_scan"] = await _peer_full_scan(
                system, model, len(cat), people, args.requests
            )
    return results


async def _load_catalogue(system: ActorSystem, cat: Catalogue) -> None:
    """Upsert the catalogue in batches of 5,000."""
    for lo in range(0, len(cat), 5000):
        await system.upsert_items(
            [
                UpsertItem(
                    event_id=f"bench-item-{i}",
                    item=cat.names[i],
                    ts=1.0,
                    kind="pro",
                    terms=cat.terms(i),
                    numbers=cat.numbers(i),
                )
                for i in range(lo, min(lo + 5000, len(cat)))
            ]
        )


def _history(
    cat: Catalogue, args: argparse.Namespace, rng: random.Random
) -> list[RecordInteraction]:
    """``--events`` interactions of Pareto-active users who favour two topics each."""
    by_topic: dict[str, list[int]] = {}
    for i, topic in enumerate(cat.topics):
        by_topic.setdefault(topic, []).append(i)
    topics = sorted(by_topic)
    tastes = [rng.sample(topics, 2) for _ in range(args.users)]
    events = []
    for n in range(args.events):
        u = int(rng.paretovariate(1.0)) % args.users
        pool = by_topic[rng.choice(tastes[u])]
        item = pool[min(int(rng.expovariate(1.0 / 30.0)), len(pool) - 1)]
        events.append(
            RecordInteraction(
                id=f"bench-ev-{n}",
                type=rng.choice(TYPES),
                user=f"user-{u}",
                item=cat.names[item],
                ts=1.7e9 + n,
            )
        )
    return events


@attrs.frozen(kw_only=True)
class _Timer:
    """Times ``recommend`` for the bench's users, each with a random city as context."""

    people: list[str]
    cities: list[str]
    rng: random.Random

    async def time(self, ranker: RankerActor, surface: str, count: int) -> dict[str, Any]:
        """Latency of ``count`` requests on ``surface`` (after a tenth as many to warm up)."""
        samples = []
        candidates = 0
        for n in range(count + count // 10):  # the first tenth warms up
            request = RecommendRequest(
                user=self.people[n % len(self.people)],
                surface=surface,
                k=10,
                context={"city": self.rng.choice(self.cities)},
            )
            t0 = time.perf_counter()
            result = await ranker.recommend(request)
            if n >= count // 10:
                samples.append(time.perf_counter() - t0)
                candidates += result.candidates
        return _latency(samples) | {"candidates_mean": round(candidates / count)}


async def _train(
    store: MemoryEventStore, args: argparse.Namespace, results: dict[str, Any]
) -> Model:
    """A LightFM model of the log (its training time goes to ``results["train_s"]``)."""
    note("training a model")
    t0 = time.perf_counter()
    data = await trio.to_thread.run_sync(read_log, store)
    model = await trio.to_thread.run_sync(
        lambda: fit(data, TrainingConfig(epochs=args.epochs, seed=args.seed), version="b")
    )
    results["train_s"] = round(time.perf_counter() - t0, 1)
    return model


async def _peer_full_scan(
    system: ActorSystem, model: Model, items: int, people: list[str], requests: int
) -> dict[str, float]:
    """The peer: score every item with the same model, then take the top k."""
    serving = serving_model(model, system.index, items)
    vectors, biases = serving.vectors[:items], serving.biases[:items]
    samples = []
    for n in range(requests):
        state = (await system.get_users([people[n % len(people)]]))[0]
        t0 = time.perf_counter()
        u, _ = model.user_representation(state.id, dict(state.affinity))
        scores = vectors @ u + biases
        top = np.argpartition(-scores, 10)[:10]
        top[np.argsort(-scores[top])]
        samples.append(time.perf_counter() - t0)
    return _latency(samples)


def main(args: argparse.Namespace) -> int:
    results = trio.run(_run, args)
    print(
        f"recommend in-process: {args.items:,} items, {args.events:,} events, "
        f"{args.users:,} users, k=10; {args.requests:,} requests per case"
    )
    header = f"{'case':<28} {'candidates':>10} {'p50 ms':>8} {'p99 ms':>8} {'p99.9 ms':>9}"
    print(header)
    print("-" * len(header))
    for case, label in (
        ("heuristic", "heuristic (no model)"),
        ("model", "model, default surface"),
        ("surface", "model, configured surface"),
        ("stochastic", "model, stochastic surface"),
        ("every_part", "model, every part on"),
        ("peer_full_scan", "peer: score all items"),
    ):
        row = results[case]
        print(
            f"{label:<28} {row.get('candidates_mean', args.items):>10} "
            f"{row['p50_ms']:>8.3f} {row['p99_ms']:>8.3f} {row['p999_ms']:>9.3f}"
        )
    co = results["cooccurrence"]
    print(
        f"co-occurrence: {co['items']:,} items with neighbours, {co['pairs']:,} pairs, "
        f"{co['users']:,} user windows, ~{co['memory_bytes'] / 2**20:.1f} MiB (estimated)"
    )
    peer = results["peer_full_scan"]["p50_ms"]
    print(
        f"p50 ratio, full-catalogue scoring / recommend (model): "
        f"{peer / results['model']['p50_ms']:.2f}x "
        "(the peer only scores; recommend also retrieves, blends, filters and logs)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)
    return 0
