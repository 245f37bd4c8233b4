"""The checks of ``matchlight bench soak``: the log against the acknowledgements, the state
against the log.

:func:`read_log` opens the (stopped) server's event store in-process and pages
through the whole log once. Events of this run's ingest clients (ids
``{run}-{client}-{n}``) are counted per id in a byte array per client, so a
log of millions of events is checked in little memory: an acknowledged id
counted 0 times is **lost**, any id counted twice is **in the log twice**.
The same pass folds what the server's state must be: per user, the number of
interactions per type; per item, the same since its latest removal (a removal
resets an item's counters) and whether it exists.

:func:`compare_state` asks a running server (started on the same data) for
every user's and item's ``counters`` and compares: a counter above the log's
count means events **applied twice**, below it events **missing from state**.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

from actors import InteractionRecorded, ItemRemoved, ItemUpserted, LmdbEventStore
from matchlight.client import Client, NotFound, RpcError

PAGE: Final = 10_000
#: Acknowledged ids also looked up in the store's idempotency index (a random sample).
IDEMPOTENCY_SAMPLE: Final = 50_000
EXAMPLES: Final = 10
CHUNK: Final = 500


@attrs.define(kw_only=True)
class ItemExpectation:
    """An item as the log says the server must show it."""

    counters: Counter[str] = attrs.field(factory=Counter)
    exists: bool = False


@attrs.define(kw_only=True)
class Expectations:
    """The state the log implies, per user and per item."""

    users: dict[str, Counter[str]] = attrs.field(factory=dict)
    items: dict[str, ItemExpectation] = attrs.field(factory=dict)
    last_seq: int = 0


def read_log(
    data: Path, run: str, clients: Mapping[int, Mapping[str, Any]]
) -> tuple[dict[str, Any], Expectations]:
    """Check the log in ``data/events`` against the ingest clients' reports.

    ``clients`` maps a client's index to its report (``batch``, ``batches``,
    ``acked_batches``). Returns the findings (a JSON-able map) and the state the
    log implies. Raises :class:`actors.StoreError` if the store cannot be read.
    """
    scan = _LogScan(
        mark=f"{run}-", counts={i: bytearray(r["batch"] * r["batches"]) for i, r in clients.items()}
    )
    with LmdbEventStore(data / "events") as store:
        while page := store.read_all(after=scan.seq, limit=PAGE):
            for stored in page:
                scan.add(stored.seq, stored.event)
        scan.expect.last_seq = scan.seq
        findings = _findings(scan.counts, clients, run)
        findings["idempotency"] = _idempotency(store, clients, run)
    twice_ours = findings.pop("_twice_ours")
    findings.update(
        events=scan.seq,
        seq_gaps=scan.gaps,
        by_type=dict(sorted(scan.totals.items())),
        other_interactions=scan.foreign,
        unexpected_ids=len(scan.unexpected),
        unexpected_examples=scan.unexpected[:EXAMPLES],
        in_log_twice=twice_ours + len(scan.twice_other),
        in_log_twice_examples=(findings.pop("_twice_examples") + scan.twice_other)[:EXAMPLES],
        users=len(scan.expect.users),
        items=len(scan.expect.items),
    )
    return findings, scan.expect


@attrs.define(kw_only=True)
class _LogScan:
    """One pass over the log: which of the run's ids it holds (``counts``: how many times
    each, per client), the other ids seen twice, and the state the events imply."""

    #: The prefix of this run's event ids.
    mark: str
    counts: dict[int, bytearray]
    seq: int = 0
    gaps: int = 0
    #: Interactions that are not this run's.
    foreign: int = 0
    totals: Counter[str] = attrs.field(factory=Counter)
    other_ids: set[str] = attrs.field(factory=set)
    twice_other: list[str] = attrs.field(factory=list)
    unexpected: list[str] = attrs.field(factory=list)
    expect: Expectations = attrs.field(factory=Expectations)

    def add(self, seq: int, event: Any) -> None:
        """The next stored event, at ``seq``."""
        self.gaps += seq != self.seq + 1
        self.seq = seq
        self.totals[type(event).__name__] += 1
        if isinstance(event, InteractionRecorded):
            self._interaction(event)
        else:
            self._catalogue(event)

    def _interaction(self, event: InteractionRecorded) -> None:
        if not _count_id(
            event.id, self.mark, self.counts, self.other_ids, self.twice_other, self.unexpected
        ):
            self.foreign += 1
        user = self.expect.users.get(event.user)
        if user is None:
            user = self.expect.users[event.user] = Counter()
        user[event.type] += 1
        _item(self.expect, event.item).counters[event.type] += 1

    def _catalogue(self, event: Any) -> None:
        if event.id in self.other_ids:
            self.twice_other.append(event.id)
        self.other_ids.add(event.id)
        state = _item(self.expect, event.item)
        if type(event) is ItemRemoved:
            state.counters.clear()
            state.exists = False
        elif type(event) is ItemUpserted:
            state.exists = True


def _item(expect: Expectations, item_id: str) -> ItemExpectation:
    state = expect.items.get(item_id)
    if state is None:
        state = expect.items[item_id] = ItemExpectation()
    return state


def _count_id(
    event_id: str,
    mark: str,
    counts: dict[int, bytearray],
    other_ids: set[str],
    twice_other: list[str],
    unexpected: list[str],
) -> bool:
    """Count one interaction's id; whether it is one of this run's."""
    if not event_id.startswith(mark):
        if event_id in other_ids:
            twice_other.append(event_id)
        other_ids.add(event_id)
        return False
    client, _, n = event_id[len(mark) :].partition("-")
    try:
        array, position = counts[int(client)], int(n)
        array[position] = min(array[position] + 1, 255)
    except (KeyError, ValueError, IndexError):
        unexpected.append(event_id)  # this run's mark, but no client sent it
    return True


def _findings(
    counts: Mapping[int, bytearray], clients: Mapping[int, Mapping[str, Any]], run: str
) -> dict[str, Any]:
    lost = acked = logged = logged_unacked = twice = 0
    lost_examples: list[str] = []
    twice_examples: list[str] = []
    for index, report in clients.items():
        array, size = counts[index], report["batch"]
        acked_batches = set(report["acked_batches"])
        for b in range(report["batches"]):
            chunk = array[b * size : (b + 1) * size]
            missing = chunk.count(0)
            present = size - missing
            logged += present
            if b in acked_batches:
                acked += size
                lost += missing
                if missing and len(lost_examples) < EXAMPLES:
                    lost_examples += [
                        f"{run}-{index}-{b * size + j}" for j, c in enumerate(chunk) if c == 0
                    ][: EXAMPLES - len(lost_examples)]
            else:
                logged_unacked += present
            if max(chunk, default=0) > 1:
                for j, c in enumerate(chunk):
                    if c > 1:
                        twice += 1
                        if len(twice_examples) < EXAMPLES:
                            twice_examples.append(f"{run}-{index}-{b * size + j}")
    return {
        "acked": acked,
        "logged_of_this_run": logged,
        "logged_not_acked": logged_unacked,
        "lost": lost,
        "lost_examples": lost_examples,
        "_twice_ours": twice,
        "_twice_examples": twice_examples,
    }


def _idempotency(
    store: LmdbEventStore, clients: Mapping[int, Mapping[str, Any]], run: str
) -> dict[str, Any]:
    """Look acknowledged ids up in the store's idempotency index: every one, or a sample of
    :data:`IDEMPOTENCY_SAMPLE` (without repeats) if there are more."""
    batches = [
        (f"{run}-{index}-", b * report["batch"])
        for index, report in clients.items()
        for b in report["acked_batches"]
    ]
    size = next(iter(clients.values()))["batch"] if clients else 1
    total = len(batches) * size
    positions: Iterable[int] = range(total)
    if total > IDEMPOTENCY_SAMPLE:
        positions = random.Random(run).sample(range(total), IDEMPOTENCY_SAMPLE)
    missing, checked = [], 0
    for position in positions:
        prefix, first = batches[position // size]
        event_id = f"{prefix}{first + position % size}"
        checked += 1
        if not store.contains(event_id):
            missing.append(event_id)
    return {"checked": checked, "missing": len(missing), "missing_examples": missing[:EXAMPLES]}


def compare_state(client: Client, expect: Expectations, catalogue: Iterable[str]) -> dict[str, Any]:
    """Compare every user's and item's counters on the server with what the log implies."""
    over = under = entities_over = entities_under = exists_wrong = 0
    examples: list[dict[str, Any]] = []

    def compare(kind: str, entity: str, state: Mapping[str, int], log: Mapping[str, int]) -> None:
        nonlocal over, under, entities_over, entities_under
        more = less = 0
        for event_type in set(state) | set(log):
            diff = state.get(event_type, 0) - log.get(event_type, 0)
            more += max(diff, 0)
            less += max(-diff, 0)
        over += more
        under += less
        entities_over += more > 0
        entities_under += less > 0
        if (more or less) and len(examples) < EXAMPLES:
            examples.append({"kind": kind, "id": entity, "state": dict(state), "log": dict(log)})

    users = sorted(expect.users)
    for chunk, answers in _ask(client, "get_user", users):
        for user, answer in zip(chunk, answers, strict=True):
            state = {} if isinstance(answer, NotFound) else _counters(answer, "get_user", user)
            compare("user", user, state, expect.users[user])
    items = sorted(set(expect.items) | set(catalogue))
    for chunk, answers in _ask(client, "get_item", items):
        for item, answer in zip(chunk, answers, strict=True):
            wanted = expect.items.get(item, ItemExpectation())
            if isinstance(answer, NotFound):
                state, exists = {}, False
            else:
                state, exists = _counters(answer, "get_item", item), bool(answer["exists"])
            if exists != wanted.exists:
                exists_wrong += 1
                if len(examples) < EXAMPLES:
                    examples.append({"kind": "item", "id": item, "exists": exists})
            compare("item", item, state, wanted.counters)
    log_seq = client.call("stats")["log_seq"]
    return {
        "users_checked": len(users),
        "items_checked": len(items),
        "applied_twice": over,
        "missing_from_state": under,
        "entities_over": entities_over,
        "entities_under": entities_under,
        "items_exists_wrong": exists_wrong,
        "examples": examples,
        "server_log_seq": log_seq,
        "log_seq_matches": log_seq == expect.last_seq,
    }


def _ask(client: Client, method: str, ids: list[str]) -> Iterable[tuple[list[str], list[Any]]]:
    for lo in range(0, len(ids), CHUNK):
        chunk = ids[lo : lo + CHUNK]
        yield chunk, client.call_many([(method, {"id": i}) for i in chunk])


def _counters(answer: Any, method: str, entity: str) -> dict[str, int]:
    if isinstance(answer, RpcError):
        raise RuntimeError(f"{method} {entity!r} failed: {answer.code}: {answer.message}")
    counters: dict[str, int] = answer["counters"]
    return counters
