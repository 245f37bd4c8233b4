"""The load of ``matchlight bench`` (:mod:`matchlight.bench.e2e`): the catalogue, the events
and the client processes that send them.

The functions here run in client processes (``multiprocessing`` spawn context)
and talk to the server over their own connections: :func:`ingest_client`
keeps :data:`DEPTH` ``ingest`` calls of Zipf-distributed events in flight, or,
given a rate, sends one call at a time on a steady schedule (:func:`paced`);
:func:`recommend_client` calls ``recommend`` in a closed loop, or at a set rate (open
loop), and times every call (:func:`timed_calls`).
"""

from __future__ import annotations

import itertools
import random
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

from matchlight.bench.harness import IngestConnection, pack_ingest, zipf_cum
from matchlight.bench.index_workload import CITIES, TOPICS
from matchlight.client import Client, RpcError

HOST: Final = "127.0.0.1"
#: Ingest calls each ingest client keeps in flight (as ``bench ingest``'s default).
DEPTH: Final = 2
ITEM_BATCH: Final = 5_000
EVENT_TYPES: Final = ("view", "view", "view", "view", "click", "click", "like", "save")
ZIPF_S: Final = 1.1
RECOMMEND_K: Final = 10
CALL_TIMEOUT_S: Final = 120.0


def catalogue(n: int, seed: int) -> Iterator[list[dict[str, Any]]]:
    """The catalogue in ``upsert_items`` calls of :data:`ITEM_BATCH`."""
    rng = random.Random(f"e2e-items-{seed}")
    topic_cum, city_cum = zipf_cum(TOPICS, 1.0), zipf_cum(CITIES, 1.0)
    for lo in range(0, n, ITEM_BATCH):
        size = min(ITEM_BATCH, n - lo)
        topics = rng.choices(range(TOPICS), cum_weights=topic_cum, k=size)
        cities = rng.choices(range(CITIES), cum_weights=city_cum, k=size)
        yield [
            {
                "id": f"item-{lo + j}",
                "kind": "pro",
                "terms": {"topic": f"topic{topics[j]:03d}", "city": f"city{cities[j]:03d}"},
                "numbers": {"price": float(rng.randrange(2_000, 50_000)) / 100.0},
            }
            for j in range(size)
        ]


class Events:
    """Packed ``ingest`` requests of Zipf-distributed events, with ids unique per ``tag``."""

    def __init__(self, tag: str, users: int, items: int, batch: int, seed: int) -> None:
        self.tag = tag
        self.batch = batch
        self.rng = random.Random(f"e2e-events-{seed}-{tag}")
        self.users = range(users)
        self.items = range(items)
        self.user_cum = zipf_cum(users, ZIPF_S)
        self.item_cum = zipf_cum(items, ZIPF_S)
        self.seen_users: set[int] = set()
        self.made = 0

    def next(self, size: int) -> bytes:
        rng, n0 = self.rng, self.made
        us = rng.choices(self.users, cum_weights=self.user_cum, k=size)
        its = rng.choices(self.items, cum_weights=self.item_cum, k=size)
        types = rng.choices(EVENT_TYPES, k=size)
        self.seen_users.update(us)
        ts = time.time()
        events = [
            {
                "id": f"{self.tag}-{n0 + j}",
                "type": types[j],
                "user": f"user-{us[j]}",
                "item": f"item-{its[j]}",
                "ts": ts,
            }
            for j in range(size)
        ]
        self.made += size
        return pack_ingest(n0 // self.batch + 1, events)

    def calls(self, quota: int | None, prepared: int) -> Iterator[bytes]:
        """Up to ``quota`` events (``None``: no end), the first ``prepared`` calls encoded now."""
        total = quota if quota is not None else sys.maxsize
        sizes = (min(self.batch, total - lo) for lo in range(0, total, self.batch))
        ready = [self.next(size) for size in itertools.islice(sizes, prepared)]
        return itertools.chain(ready, (self.next(size) for size in sizes))


def paced(calls: Iterator[bytes], interval: float, stop: Callable[[], bool]) -> Iterator[bytes]:
    """``calls``, the n-th no sooner than ``n * interval`` seconds after the first, until
    ``stop()``.

    The schedule is fixed from the start: a call that comes late (the previous
    answer took longer than ``interval``) is sent at once and the ones after it
    keep their times, so the rate does not drift below the target while the
    server keeps up.
    """
    t0 = time.perf_counter()
    for n, call in enumerate(calls):
        wait = t0 + n * interval - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        if stop():
            return
        yield call


def ingest_client(
    port: int,
    tag: str,
    quota: int | None,
    prepared: int,
    config: dict[str, int],
    start: Any,
    stop: Any,
    results: Any,
) -> None:
    """A client process: ingest ``quota`` events (or until ``stop``), ``DEPTH`` calls in flight;
    with ``config["rate"]`` (events/s), one call in flight, paced to that rate (:func:`paced`).

    Puts ``("ready", tag)`` once its first ``prepared`` calls are encoded, then
    ``(tag, seconds, accepted, calls, sorted user numbers, each call's seconds)`` when done.
    """
    source = Events(tag, config["users"], config["items"], config["batch"], config["seed"])
    calls = source.calls(quota, prepared)
    rate = config.get("rate")
    connection = IngestConnection(HOST, port)
    results.put(("ready", tag))
    start.wait()
    t0 = time.perf_counter()
    if rate:
        calls = paced(calls, config["batch"] / rate, stop.is_set)
    latencies: list[float] = []
    accepted, acked = connection.pipeline(calls, 1 if rate else DEPTH, stop.is_set, latencies)
    seconds = time.perf_counter() - t0
    connection.close()
    results.put((tag, seconds, accepted, acked, sorted(source.seen_users), latencies))


def recommend_client(
    port: int,
    index: int,
    users: list[str],
    seconds: float,
    seed: int,
    start: Any,
    results: Any,
    rate: float | None = None,
) -> None:
    """A client process: ``recommend`` for ``seconds`` (see :func:`timed_calls` for
    ``rate``), timing every call.

    Puts ``("ready", index)``, then ``(index, elapsed, latencies in s, errors)``.
    """
    rng = random.Random(f"e2e-recommend-{seed}-{index}")
    with Client(HOST, port, timeout=CALL_TIMEOUT_S) as client:
        client.call("recommend", {"user": users[0], "k": RECOMMEND_K})  # connect and warm up
        results.put(("ready", index))
        start.wait()

        def call() -> None:
            client.call("recommend", {"user": rng.choice(users), "k": RECOMMEND_K})

        elapsed, samples, errors = timed_calls(call, seconds, rate)
        results.put((index, elapsed, samples, errors))


def timed_calls(
    call: Callable[[], object],
    seconds: float,
    rate: float | None,
    *,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[float, list[float], int]:
    """Make calls for ``seconds``; return the time taken, each call's latency in seconds
    and how many raised :class:`RpcError`.

    With no ``rate``, a closed loop: the next call as soon as the last returns, each
    timed from its start. With ``rate`` (calls/s), an open loop on a fixed schedule:
    the n-th call is due ``n / rate`` s after the first and is timed from when it was
    due, so a call sent late because the one before it was slow counts that wait, as
    it would for users who keep sending at that rate (the closed loop's own timing
    would hide it).
    """
    samples: list[float] = []
    errors = 0
    t0 = clock()
    if rate is None:
        now = t0
        while now < t0 + seconds:
            began = clock()
            try:
                call()
            except RpcError:
                errors += 1
            now = clock()
            samples.append(now - began)
        return now - t0, samples, errors
    for n in itertools.count():
        due = t0 + n / rate
        if due >= t0 + seconds:
            break
        wait = due - clock()
        if wait > 0:
            sleep(wait)
        try:
            call()
        except RpcError:
            errors += 1
        samples.append(clock() - due)
    return clock() - t0, samples, errors
