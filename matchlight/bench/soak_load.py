"""The load of ``matchlight bench soak``: client processes that outlive the server they talk to.

Each function here runs in its own process (``multiprocessing`` spawn context),
with its own connection, and keeps working while the server is killed and
restarted under it: a call that fails because the connection broke or could
not be made waits a little and goes again to whatever server now listens on
the shared port (``port.value``).

- :func:`ingest_client` sends batches of interaction events, paced to its share
  of ``--rate``, with ids ``{run}-{client}-{n}``. Users are drawn Zipf-like
  (s = 0.5) from the fixed population; each user interacts with items of a
  personal taste set of :data:`TASTE` items drawn by item popularity (Zipf,
  s = 1.1), so that per-user state fills up during warm-up instead of growing
  for the whole run, and item popularity stays skewed. A batch is sent until the
  server acknowledges it, **with the same events** (ids are idempotency keys),
  so every batch is either acknowledged or, rarely, given up after repeated
  non-transient errors; the acknowledged batch numbers are its report.
- :func:`catalogue_client` changes the catalogue: upserts that move prices and
  topics, and removals of items that are re-added a few seconds later.
  ``upsert_items`` and ``remove_items`` are safe to repeat at the state level
  (the same fields again; removing a removed item is a no-op), so a call whose
  answer was lost is simply repeated.
- :func:`read_client` calls ``recommend``, ``search`` and ``get_item``, paced,
  timing each call with its wall-clock start so that the orchestrator can tell
  which calls overlapped a restart.

Errors are counted by contract code; a failure to reach the server (refused,
reset, closed: expected while it is down) is counted apart, as is a timeout.
"""

from __future__ import annotations

import bisect
import random
import time
from array import array
from collections import Counter
from collections.abc import Mapping
from typing import Any, Final

import attrs

from matchlight.bench.harness import zipf_cum
from matchlight.client import Client, RpcError

HOST: Final = "127.0.0.1"
#: Interaction types and how often each is drawn.
EVENT_TYPES: Final = ("view", "click", "like", "save", "dismiss", "hire")
EVENT_WEIGHTS: Final = (50, 20, 12, 6, 8, 4)
TOPICS: Final = 40
CITIES: Final = 20
#: Zipf exponents: over items (popularity) and over users (activity).
ZIPF_S: Final = 1.1
USER_ZIPF_S: Final = 0.5
#: Items in each user's taste set.
TASTE: Final = 20
#: Shared counters (an ``multiprocessing.Array('q')``): what the progress lines show.
ACKED, CONNECTION_FAILURES, INTERNAL = 0, 1, 2
#: Codes a call is repeated after; anything else is a real error answer.
TRANSIENT_CODES: Final = frozenset({"overloaded", "unavailable"})
#: A batch answered this many times with a non-transient error is given up.
MAX_HARD_ERRORS: Final = 5
#: After ``stop``, an unacknowledged batch is still retried for this long.
FINISH_S: Final = 120.0
BACKOFF_S: Final = (0.05, 0.1, 0.2, 0.5)
#: Removed items come back this long after their removal.
READD_AFTER_S: Final = 4.0


def item_id(k: int) -> str:
    return f"item-{k}"


def user_id(k: int) -> str:
    return f"user-{k}"


def catalogue_entry(k: int, rng: random.Random) -> dict[str, Any]:
    """Item ``k`` as ``upsert_items`` takes it, with a random topic, city and price."""
    return {
        "id": item_id(k),
        "kind": "pro",
        "terms": {"topic": f"topic{rng.randrange(TOPICS)}", "city": f"city{rng.randrange(CITIES)}"},
        "numbers": {"price": float(rng.randrange(2_000, 50_000)) / 100.0},
    }


def tastes(users: int, items: int, seed: int) -> list[list[str]]:
    """Each user's taste set: :data:`TASTE` item ids drawn by popularity, the same in every
    process for a ``seed``."""
    rng = random.Random(f"soak-tastes-{seed}")
    cum = zipf_cum(items, ZIPF_S)
    return [
        [item_id(k) for k in rng.choices(range(items), cum_weights=cum, k=TASTE)]
        for _ in range(users)
    ]


class Link:
    """One connection to the soak's server, made again after the server was killed.

    ``call`` raises what :meth:`Client.call` raises (``OSError`` when the
    server cannot be reached or the connection broke, :class:`RpcError` for
    an error answer); the next call connects again, to the port the
    orchestrator currently publishes. The client never retries by itself: the
    callers decide, and count every failure.
    """

    def __init__(self, port: Any, timeout: float) -> None:
        self._port = port
        self._timeout = timeout
        self._client: Client | None = None
        self._connected_to = 0

    def call(self, method: str, params: Mapping[str, Any]) -> Any:
        port = int(self._port.value)
        if self._client is None or self._connected_to != port:
            self.close()
            self._client = Client(HOST, port, timeout=self._timeout, retries=0)
            self._connected_to = port
        return self._client.call(method, params)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


class Tally:
    """Outcomes of calls, per method: errors by code, unreachable server, timeouts."""

    def __init__(self, shared: Any) -> None:
        self.shared = shared
        self.calls: Counter[str] = Counter()
        self.ok: Counter[str] = Counter()
        #: "method code" -> count
        self.errors: Counter[str] = Counter()
        self.connection: Counter[str] = Counter()
        self.timeouts: Counter[str] = Counter()
        self.messages: dict[str, str] = {}

    def failed(self, method: str, exc: BaseException) -> None:
        """Count a failed call; TimeoutError before OSError (it is one)."""
        if isinstance(exc, TimeoutError):
            self.timeouts[method] += 1
        elif isinstance(exc, OSError):
            self.connection[method] += 1
            with self.shared.get_lock():
                self.shared[CONNECTION_FAILURES] += 1
        elif isinstance(exc, RpcError):
            key = f"{method} {exc.code}"
            self.errors[key] += 1
            self.messages.setdefault(key, exc.message[:300])
            if exc.code == "internal":
                with self.shared.get_lock():
                    self.shared[INTERNAL] += 1

    def report(self) -> dict[str, Any]:
        return {
            "calls": dict(self.calls),
            "ok": dict(self.ok),
            "errors": dict(self.errors),
            "connection": dict(self.connection),
            "timeouts": dict(self.timeouts),
            "messages": self.messages,
        }


def _pause(seconds: float, stop: Any) -> None:
    """Sleep up to ``seconds``, returning early once ``stop`` is set."""
    if seconds > 0:
        stop.wait(seconds)


# -- ingest -------------------------------------------------------------------------------------


def ingest_client(
    index: int, config: Mapping[str, Any], port: Any, stop: Any, shared: Any, results: Any
) -> None:
    """Send paced ``ingest`` batches until ``stop``; put ``("ingest", index, report)``.

    ``config``: ``run``, ``users``, ``items``, ``batch``, ``rate`` (this
    client's events/s), ``seed``, ``timeout``.
    """
    batches = _Batches(index, config)
    interval = batches.size / config["rate"]
    link = Link(port, config["timeout"])
    tally = Tally(shared)
    outcome = _IngestOutcome(size=batches.size)
    batch_no = 0
    due = time.monotonic()
    while not stop.is_set():
        _pause(due - time.monotonic(), stop)
        if stop.is_set():
            break
        events = batches.make(batch_no)
        answer, attempts = _until_acked(link, tally, {"events": events}, stop)
        outcome.record(batch_no, answer, attempts)
        if answer is not None:
            with shared.get_lock():
                shared[ACKED] += batches.size
        batch_no += 1
        # Paced; after a long outage the schedule restarts rather than bursting to catch up.
        due = max(due + interval, time.monotonic() - 1.0)
    link.close()
    report = {"prefix": batches.prefix, "batch": batches.size, "batches": batch_no}
    results.put(("ingest", index, report | outcome.report() | tally.report()))


class _Batches:
    """Client ``index``'s batches: Zipf-active users, each within their taste set, ids
    ``{run}-{index}-{n}``, stamped with the wall clock."""

    def __init__(self, index: int, config: Mapping[str, Any]) -> None:
        self.rng = random.Random(f"soak-ingest-{config['seed']}-{index}")
        users = config["users"]
        self.size: int = config["batch"]
        self.user_cum = zipf_cum(users, USER_ZIPF_S)
        self.user_ranks = range(users)
        # Rank k is user-k: the readers ask about the same active users.
        self.user_names = [user_id(k) for k in self.user_ranks]
        self.taste = tastes(users, config["items"], config["seed"])
        self.prefix = f"{config['run']}-{index}-"

    def make(self, batch_no: int) -> list[dict[str, Any]]:
        """Batch ``batch_no``'s events (drawn now: call it once per batch)."""
        rng, size = self.rng, self.size
        first = batch_no * size
        now = time.time()  # the wall clock: the server refuses events from the future
        us = rng.choices(self.user_ranks, cum_weights=self.user_cum, k=size)
        types = rng.choices(EVENT_TYPES, weights=EVENT_WEIGHTS, k=size)
        return [
            {
                "id": f"{self.prefix}{first + j}",
                "type": types[j],
                "user": self.user_names[us[j]],
                "item": self.taste[us[j]][rng.randrange(TASTE)],
                "ts": now,
            }
            for j in range(size)
        ]


@attrs.define(kw_only=True)
class _IngestOutcome:
    """What became of an ingest client's batches."""

    size: int
    acked: list[int] = attrs.field(factory=list)
    gave_up: list[int] = attrs.field(factory=list)
    accepted: int = 0
    duplicates: int = 0
    retried: int = 0
    partial: int = 0

    def record(self, batch_no: int, answer: dict[str, Any] | None, attempts: int) -> None:
        """Batch ``batch_no`` was answered ``answer`` (None: given up) after ``attempts``."""
        if answer is None:
            self.gave_up.append(batch_no)
        else:
            self.acked.append(batch_no)
            self.accepted += answer["accepted"]
            self.duplicates += answer["duplicates"]
            # All new or all duplicates (a resend of an applied batch); anything else is partial.
            if (
                answer["duplicates"] not in (0, self.size)
                or answer["accepted"] + answer["duplicates"] != self.size
            ):
                self.partial += 1
        self.retried += attempts > 1

    def report(self) -> dict[str, Any]:
        return {
            "acked_batches": self.acked,
            "gave_up_batches": self.gave_up,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "retried_batches": self.retried,
            "partial_batches": self.partial,
        }


def _until_acked(
    link: Link, tally: Tally, params: Mapping[str, Any], stop: Any
) -> tuple[dict[str, Any] | None, int]:
    """Send one ``ingest`` call until it is answered; (its result or None, attempts)."""
    attempts = hard = 0
    stopped_at: float | None = None
    while True:
        attempts += 1
        tally.calls["ingest"] += 1
        try:
            answer: dict[str, Any] = link.call("ingest", params)
        except (OSError, RpcError) as exc:
            tally.failed("ingest", exc)
            if isinstance(exc, RpcError) and exc.code not in TRANSIENT_CODES:
                hard += 1
                if hard >= MAX_HARD_ERRORS:
                    return None, attempts
            if stop.is_set():
                stopped_at = stopped_at or time.monotonic()
                if time.monotonic() - stopped_at > FINISH_S:
                    return None, attempts
            time.sleep(BACKOFF_S[min(attempts - 1, len(BACKOFF_S) - 1)])
            continue
        tally.ok["ingest"] += 1
        return answer, attempts


# -- catalogue ----------------------------------------------------------------------------------


def catalogue_client(
    config: Mapping[str, Any], port: Any, stop: Any, shared: Any, results: Any
) -> None:
    """Change the catalogue until ``stop``; put ``("catalogue", 0, report)``.

    Every second: upsert ``config['changes']`` random items with a new price
    (and, for a third of them, a new topic). Every ``config['remove_every']``
    seconds: remove ``config['removals']`` items, each re-added (a full
    upsert) :data:`READD_AFTER_S` seconds later.
    """
    link = Link(port, config["timeout"])
    changes = _CatalogueChanges(config=config, link=link, tally=Tally(shared), stop=stop)
    next_change = time.monotonic() + 1.0
    next_removal = time.monotonic() + config["remove_every"]
    while not stop.is_set():
        _pause(min(next_change, next_removal) - time.monotonic(), stop)
        if stop.is_set():
            break
        now = time.monotonic()
        changes.readd(sorted(k for k, at in changes.removed.items() if at <= now))
        if now >= next_change:
            changes.change()
            next_change = now + 1.0
        if now >= next_removal:
            changes.remove()
            next_removal = now + config["remove_every"]
    # Put the removed items back, so that the final catalogue is whole.
    changes.readd(sorted(changes.removed), finishing=True)
    link.close()
    results.put(("catalogue", 0, changes.report()))


@attrs.define(kw_only=True)
class _CatalogueChanges:
    """The catalogue client's changes, each call repeated until answered, and their counts."""

    config: Mapping[str, Any]
    link: Link
    tally: Tally
    stop: Any
    rng: random.Random = attrs.field()
    #: Item number -> when to re-add it.
    removed: dict[int, float] = attrs.field(factory=dict)
    upserts: int = 0
    removals: int = 0
    readds: int = 0

    @rng.default
    def _rng(self) -> random.Random:
        return random.Random(f"soak-catalogue-{self.config['seed']}")

    def readd(self, due: list[int], *, finishing: bool = False) -> None:
        """Upsert the removed items ``due`` again, in full."""
        if not due:
            return
        entries = [catalogue_entry(k, self.rng) for k in due]
        params = {"items": entries}
        if _repeat(self.link, self.tally, "upsert_items", params, self.stop, finishing=finishing):
            self.readds += len(due)
            for k in due:
                del self.removed[k]

    def change(self) -> None:
        """New prices (and for a third, a new topic) for ``changes`` random present items."""
        rng, items = self.rng, self.config["items"]
        changed = []
        for k in rng.sample(range(items), min(self.config["changes"], items)):
            if k in self.removed:
                continue
            entry: dict[str, Any] = {
                "id": item_id(k),
                "numbers": {"price": float(rng.randrange(2_000, 50_000)) / 100.0},
            }
            if rng.random() < 1 / 3:
                entry["terms"] = {"topic": f"topic{rng.randrange(TOPICS)}"}
            changed.append(entry)
        if changed and _repeat(
            self.link, self.tally, "upsert_items", {"items": changed}, self.stop
        ):
            self.upserts += len(changed)

    def remove(self) -> None:
        """Remove ``removals`` random present items, to be re-added :data:`READD_AFTER_S` later."""
        candidates = [k for k in range(self.config["items"]) if k not in self.removed]
        chosen = self.rng.sample(candidates, min(self.config["removals"], len(candidates)))
        ids = [item_id(k) for k in chosen]
        if chosen and _repeat(self.link, self.tally, "remove_items", {"ids": ids}, self.stop):
            self.removals += len(chosen)
            for k in chosen:
                self.removed[k] = time.monotonic() + READD_AFTER_S

    def report(self) -> dict[str, Any]:
        counts = {"upserts": self.upserts, "removals": self.removals, "readds": self.readds}
        return counts | self.tally.report()


def _repeat(
    link: Link,
    tally: Tally,
    method: str,
    params: Mapping[str, Any],
    stop: Any,
    *,
    finishing: bool = False,
) -> bool:
    """Call until answered (or until ``stop``, unless ``finishing``); whether it succeeded."""
    attempts = 0
    began = time.monotonic()
    while True:
        attempts += 1
        tally.calls[method] += 1
        try:
            link.call(method, params)
        except (OSError, RpcError) as exc:
            tally.failed(method, exc)
            transient = isinstance(exc, OSError) or (
                isinstance(exc, RpcError) and exc.code in TRANSIENT_CODES
            )
            gone = not finishing and stop.is_set()
            if not transient or gone or time.monotonic() - began > FINISH_S:
                return False
            time.sleep(BACKOFF_S[min(attempts - 1, len(BACKOFF_S) - 1)])
            continue
        tally.ok[method] += 1
        return True


# -- reads --------------------------------------------------------------------------------------

#: Read operations and their shares of the read rate.
READS: Final = ("recommend", "search", "get_item")
READ_WEIGHTS: Final = (60, 25, 15)


def read_client(
    index: int, config: Mapping[str, Any], port: Any, stop: Any, shared: Any, results: Any
) -> None:
    """Paced reads until ``stop``; put ``("read", index, report)``.

    Each successful call leaves its wall-clock start and duration (s) under its
    method in ``samples``; ``get_item`` answering ``not_found`` (an item
    removed a moment ago) counts as a success of its own kind, not an error.
    """
    rng = random.Random(f"soak-read-{config['seed']}-{index}")
    users, items = config["users"], config["items"]
    user_cum, item_cum = zipf_cum(users, USER_ZIPF_S), zipf_cum(items, ZIPF_S)
    interval = 1.0 / config["rate"]
    link = Link(port, config["timeout"])
    reads = _Reads(tally=Tally(shared))
    due = time.monotonic()
    while not stop.is_set():
        _pause(due - time.monotonic(), stop)
        if stop.is_set():
            break
        method = rng.choices(READS, weights=READ_WEIGHTS)[0]
        params = _read_params(method, rng, users, items, user_cum, item_cum)
        reads.call(link, method, params, stop)
        due = max(due + interval, time.monotonic() - 1.0)
    link.close()
    results.put(("read", index, reads.report()))


@attrs.define(kw_only=True)
class _Reads:
    """The read client's calls: timings of the successful ones and what they answered."""

    tally: Tally
    #: method -> (wall-clock starts, durations in s) of its successful calls.
    samples: dict[str, tuple[array[float], array[float]]] = attrs.field(
        factory=lambda: {m: (array("d"), array("d")) for m in READS}
    )
    models: Counter[str] = attrs.field(factory=Counter)
    not_found: int = 0
    empty: int = 0

    def call(self, link: Link, method: str, params: Mapping[str, Any], stop: Any) -> None:
        """Make one call, timed, and count its outcome."""
        self.tally.calls[method] += 1
        began, t0 = time.time(), time.perf_counter()
        try:
            answer = link.call(method, params)
        except (OSError, RpcError) as exc:
            if isinstance(exc, RpcError) and exc.code == "not_found" and method == "get_item":
                self.not_found += 1
            else:
                self.tally.failed(method, exc)
                if isinstance(exc, OSError):
                    _pause(0.1, stop)  # the server is down: do not spin
            return
        seconds = time.perf_counter() - t0
        self.tally.ok[method] += 1
        starts, durations = self.samples[method]
        starts.append(began)
        durations.append(seconds)
        if method == "recommend":
            self.models[str(answer.get("model"))] += 1
            self.empty += not answer.get("items")

    def report(self) -> dict[str, Any]:
        return {
            "samples": {m: (list(s), list(d)) for m, (s, d) in self.samples.items()},
            "models": dict(self.models),
            "get_item_not_found": self.not_found,
            "recommend_empty": self.empty,
            **self.tally.report(),
        }


def _read_params(
    method: str,
    rng: random.Random,
    users: int,
    items: int,
    user_cum: list[float],
    item_cum: list[float],
) -> dict[str, Any]:
    if method == "recommend":
        rank = bisect.bisect_left(user_cum, rng.random() * user_cum[-1])
        return {"user": user_id(min(rank, users - 1)), "k": 10}
    if method == "get_item":
        rank = bisect.bisect_left(item_cum, rng.random() * item_cum[-1])
        return {"id": item_id(min(rank, items - 1))}
    topic = {"term": ["topic", f"topic{rng.randrange(TOPICS)}"]}
    shape = rng.randrange(3)
    if shape == 0:
        query: dict[str, Any] = topic
    elif shape == 1:
        query = {"all": [topic, {"term": ["city", f"city{rng.randrange(CITIES)}"]}]}
    else:
        low = float(rng.randrange(20, 400))
        query = {"all": [topic, {"range": ["price", low, low + 100.0]}]}
    return {"filter": query, "limit": 20}
