"""``matchlight bench write-path``: what each stage of a write costs per event, in one process
and split between a node's writer and each reader.

In-process and without RPC, so each stage is timed alone (``time.perf_counter``
around it, over the whole run): the same workload (``--items`` items, then
``--events`` interactions in calls of ``--batch``, Zipf users and items, four
event types) goes through

- **one process** (``serve --workers 1``): decode the call's msgpack, validate,
  decide (the item actors stamp each interaction with its item's terms), prepare
  (encode, stream keys), commit (one synced LMDB transaction), apply (user and
  item actors, index, signals, co-occurrence);
- **the writer** of ``serve --workers N``: decode, validate, decide (from its
  catalogue of item terms), prepare, commit, and its catalogue's upkeep;
- **each reader**, following the writer's log afterwards in the follower's pages:
  read and decode the events from LMDB, apply them as one process does.

Figures are microseconds per event; the sums are what one event costs each
process. A run takes about a minute.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import msgpack
import trio

from actors import LmdbEventStore, RecordInteraction, UpsertItem
from actors.events import StoredEvent
from actors.follower import DEFAULT_PAGE, LogFollower
from actors.store import EventStore, to_result
from actors.system import ActorSystem
from actors.write_path import Catalogue
from matchlight.cli.argtypes import positive_int
from matchlight.server import validation
from matchlight.server.app import tune_gc

TYPES: Final = ("view", "click", "like", "save")
Stages = dict[str, float]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``matchlight bench write-path``."""
    parser.add_argument("--items", type=positive_int, default=10_000, help="catalogue size")
    parser.add_argument("--users", type=positive_int, default=50_000, help="distinct users")
    parser.add_argument("--events", type=positive_int, default=100_000, help="events timed")
    parser.add_argument("--batch", type=positive_int, default=1000, help="events per call")
    parser.add_argument("--seed", type=int, default=1, help="workload seed")


class Timer:
    """Seconds spent per stage, summed over a run."""

    def __init__(self) -> None:
        self.seconds: Stages = defaultdict(float)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        yield
        self.seconds[name] += time.perf_counter() - started

    def per_event_us(self, events: int) -> Stages:
        return {name: round(s / events * 1e6, 2) for name, s in self.seconds.items()}


def _calls(args: argparse.Namespace) -> list[bytes]:
    """The ingest calls as a client encodes them (Zipf users and items)."""
    rng = random.Random(args.seed)
    now = time.time()
    calls = []
    for b in range(args.events // args.batch):
        events = [
            {
                "id": f"e{b}-{k}",
                "type": rng.choice(TYPES),
                "user": f"user{int(rng.paretovariate(1.2)) % args.users}",
                "item": f"i{int(rng.paretovariate(1.1)) % args.items}",
                "ts": now,
            }
            for k in range(args.batch)
        ]
        calls.append(msgpack.packb([{"events": events}]))
    return calls


def _catalogue(args: argparse.Namespace) -> list[UpsertItem]:
    return [
        UpsertItem(
            event_id=f"u{i}",
            item=f"i{i}",
            ts=1.0,
            kind="pro",
            terms={"category": (f"c{i % 40}",), "city": (f"city{i % 50}",)},
            numbers={"price": float(i % 300)},
        )
        for i in range(args.items)
    ]


async def one_process(store: LmdbEventStore, args: argparse.Namespace) -> Stages:
    """The single process's write path, stage by stage."""
    timer = Timer()
    system = ActorSystem(store)
    async with trio.open_nursery() as nursery:
        await nursery.start(system.items.run)
        await nursery.start(system.users.run)
        await _commit_and_apply(store, await system._decide(_catalogue(args)), system)
        for raw in _calls(args):
            commands = _decode_and_validate(raw, timer)
            with timer.stage("decide"):
                events = await system._decide(commands)
            await _commit_and_apply(store, events, system, timer)
        nursery.cancel_scope.cancel()
    return timer.per_event_us(args.events)


def _decode_and_validate(raw: bytes, timer: Timer) -> list[RecordInteraction]:
    """An encoded ``ingest`` call as commands (two timed stages, as the RPC server does)."""
    with timer.stage("decode"):
        params = msgpack.unpackb(raw)
    with timer.stage("validate"):
        return validation.events(validation.params_map(params))


def _commit(store: EventStore, events: list[Any], timer: Timer) -> Sequence[StoredEvent]:
    """Prepare and commit ``events`` (two timed stages); what was stored."""
    with timer.stage("prepare"):
        prepared = store.prepare(events)
    with timer.stage("commit"):
        (written,) = store.write([prepared])
    assert not isinstance(written, Exception)
    return to_result(prepared, written).stored


async def _commit_and_apply(
    store: EventStore, events: list[Any], system: ActorSystem, timer: Timer | None = None
) -> None:
    timer = timer or Timer()
    stored = _commit(store, events, timer)
    with timer.stage("apply"):
        await (await system._dispatch(stored)).wait()


def writer(store: LmdbEventStore, args: argparse.Namespace) -> Stages:
    """The writer worker's write path, stage by stage (no actors: its catalogue only)."""
    timer = Timer()
    catalogue = Catalogue()
    _write(store, catalogue, [e for c in _catalogue(args) for e in catalogue.decide(c)])
    for raw in _calls(args):
        commands = _decode_and_validate(raw, timer)
        with timer.stage("decide"):
            events = [event for command in commands for event in catalogue.decide(command)]
        _write(store, catalogue, events, timer)
    return timer.per_event_us(args.events)


def _write(
    store: EventStore, catalogue: Catalogue, events: list[Any], timer: Timer | None = None
) -> None:
    timer = timer or Timer()
    stored = _commit(store, events, timer)
    with timer.stage("catalogue"):
        catalogue.apply(stored)


async def reader(store: LmdbEventStore, args: argparse.Namespace) -> Stages:
    """A reader worker following what :func:`writer` wrote, page by page."""
    timer = Timer()
    system = ActorSystem(store, save_snapshot=lambda snapshot: None)
    follower = LogFollower(store, system._apply_followed, start=0)
    async with trio.open_nursery() as nursery:
        await nursery.start(system.items.run)
        await nursery.start(system.users.run)
        page = store.read_all(after=0, limit=args.items)  # the catalogue: not timed
        await (await system._dispatch(page)).wait()
        follower.applied = page[-1].seq
        while True:
            with timer.stage("read and decode"):
                page = store.read_all(after=follower.applied, limit=DEFAULT_PAGE)
            if not page:
                break
            with timer.stage("apply"):  # as a reader does: at once, on this task
                await system._apply_followed(page)
            follower.applied = page[-1].seq
        nursery.cancel_scope.cancel()
    return timer.per_event_us(args.events)


def main(args: argparse.Namespace) -> int:
    """Time both write paths on fresh stores; print microseconds per event and stage."""
    tune_gc()  # as the server does
    rows: list[tuple[str, Stages]] = []
    for raw in _calls(args):  # warm up, so that the first path timed pays no more than others
        validation.events(validation.params_map(msgpack.unpackb(raw)))
    with tempfile.TemporaryDirectory(prefix="matchlight-write-path-") as tmp:
        runs: list[tuple[str, Callable[[LmdbEventStore], Stages]]] = [
            ("one process", lambda store: trio.run(one_process, store, args)),
            ("writer worker", lambda store: writer(store, args)),
        ]
        for name, run in runs:
            print(f"  {name} …", file=sys.stderr, flush=True)
            with LmdbEventStore(Path(tmp) / name.replace(" ", "-")) as store:
                rows.append((name, run(store)))
        print("  each reader worker …", file=sys.stderr, flush=True)
        with LmdbEventStore(Path(tmp) / "writer-worker", readonly=True) as store:
            rows.append(("each reader worker", trio.run(reader, store, args)))
    print(
        f"\nmatchlight bench write-path — µs per event, {args.events:,} events in calls of "
        f"{args.batch:,}, {args.items:,} items, {args.users:,} users, in-process (no RPC)"
    )
    for name, stages in rows:
        parts = ", ".join(f"{stage} {us:.2f}" for stage, us in stages.items())
        print(f"{name:>20}: {sum(stages.values()):6.1f}  ({parts})")
    return 0
