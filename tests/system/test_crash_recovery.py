"""``kill -9`` at any moment loses no acknowledged event and applies none twice (DESIGN.md).

Four clients stream ``ingest`` batches over their own connections while the
server is killed with SIGKILL at a seeded random moment; after a restart the
log, the item and user actors and the idempotency keys must agree with what
the clients were told. The cycle runs twice (the second kill lands while the
clients resend everything), with ``--snapshot-every 5`` so that recovery goes
through snapshots plus a tail of the log. A SIGTERM mid-stream must likewise
keep every acknowledged event, and exit 0.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from actors import InteractionRecorded, ItemUpserted, LmdbEventStore
from matchlight.client import Client
from matchlight.errors import RpcError

if TYPE_CHECKING:
    from tests.system.conftest import ServerProcess, StartServer

pytestmark = pytest.mark.system

SEED = 20_241_128
CLIENTS = 4
BATCH = 100
ITEMS = tuple(f"item-{k}" for k in range(50))
USERS = tuple(f"user-{k}" for k in range(200))
#: A stream stops here even if the kill never comes, so a broken test cannot run forever.
MAX_BATCHES_PER_CLIENT = 250
JOIN_TIMEOUT_S = 30.0
CALL_TIMEOUT_S = 15.0
T0 = 1_700_000_000.0


@dataclass
class Ack:
    round: int
    accepted: int
    duplicates: int


@dataclass
class Batch:
    events: list[dict[str, Any]]
    acks: list[Ack] = field(default_factory=list)

    @property
    def ids(self) -> set[str]:
        return {e["id"] for e in self.events}

    def acked_before(self, round_: int) -> bool:
        return any(a.round < round_ for a in self.acks)


class Workload:
    """The batches each client has generated so far (ids ``c{client}-{n}``), from a seed.

    Each client thread only touches its own list and its own random generator.
    """

    def __init__(self, seed: int) -> None:
        self.rngs = [random.Random(f"{seed}/{c}") for c in range(CLIENTS)]
        self.batches: list[list[Batch]] = [[] for _ in range(CLIENTS)]

    def new_batch(self, client: int) -> Batch:
        rng = self.rngs[client]
        first = len(self.batches[client]) * BATCH
        batch = Batch(
            events=[
                {
                    "id": f"c{client}-{n}",
                    "type": "like",
                    "user": rng.choice(USERS),
                    "item": rng.choice(ITEMS),
                    "ts": T0 + n / 1000,
                }
                for n in range(first, first + BATCH)
            ]
        )
        self.batches[client].append(batch)
        return batch

    def all_batches(self) -> list[Batch]:
        return [b for batches in self.batches for b in batches]

    def events(self) -> list[dict[str, Any]]:
        return [e for b in self.all_batches() for e in b.events]

    def acked_ids(self) -> set[str]:
        return {e["id"] for b in self.all_batches() if b.acks for e in b.events}


def stream(
    server: ServerProcess,
    workload: Workload,
    round_: int,
    *,
    resend: bool,
    extend: bool,
    kill_after_s: float | None = None,
    kill_after_acks: int | None = None,
    sigterm: bool = False,
) -> None:
    """Send batches from ``CLIENTS`` threads, each on its own connection, recording acks.

    Each client first resends all its batches (if ``resend``), then streams new
    ones (if ``extend``). The server is SIGKILLed (SIGTERMed with ``sigterm``)
    ``kill_after_s`` seconds after the first ack, or as soon as
    ``kill_after_acks`` batches were acked in this round, and every client must
    then have been cut off mid-stream; with neither, every client must finish
    cleanly.
    """
    killing = kill_after_s is not None or kill_after_acks is not None
    kill_now = threading.Event()
    lock = threading.Lock()
    acked = 0
    outcomes: list[BaseException | None] = [None] * CLIENTS

    def run(c: int) -> None:
        nonlocal acked
        try:
            with Client(server.host, server.port, timeout=CALL_TIMEOUT_S) as client:
                todo = list(workload.batches[c]) if resend else []
                i = 0
                while True:
                    if i < len(todo):
                        batch = todo[i]
                    elif extend and len(workload.batches[c]) < MAX_BATCHES_PER_CLIENT:
                        batch = workload.new_batch(c)
                    else:
                        return
                    i += 1
                    result = client.call("ingest", {"events": batch.events})
                    batch.acks.append(Ack(round_, result["accepted"], result["duplicates"]))
                    with lock:
                        acked += 1
                        if acked >= (kill_after_acks or 1):
                            kill_now.set()
        except Exception as exc:  # reported by the main thread
            outcomes[c] = exc

    threads = [threading.Thread(target=run, args=(c,), name=f"client-{c}") for c in range(CLIENTS)]
    for t in threads:
        t.start()
    try:
        if killing:
            assert kill_now.wait(timeout=JOIN_TIMEOUT_S), f"too few acks to kill: {outcomes}"
            if kill_after_s is not None:
                time.sleep(kill_after_s)
            if sigterm:
                assert server.terminate() == 0
            else:
                server.kill9()
    finally:
        deadline = time.monotonic() + JOIN_TIMEOUT_S
        for t in threads:
            t.join(timeout=max(0.0, deadline - time.monotonic()))
        if killing and server.running:
            server.kill9()  # the wait above failed: do not leave clients hanging
    assert not any(t.is_alive() for t in threads), "a client thread did not finish"
    for c, outcome in enumerate(outcomes):
        if not killing:
            assert outcome is None, f"round {round_}, client {c} failed: {outcome!r}"
        elif sigterm and isinstance(outcome, RpcError):
            # Draining: requests arriving after the signal are refused.
            assert outcome.code == "unavailable", f"round {round_}, client {c}: {outcome!r}"
        else:
            # A timeout would mean the server hung before the kill; anything
            # but a broken connection (an RpcError, say) is a server fault.
            assert isinstance(outcome, ConnectionError), (
                f"round {round_}, client {c} was not cut off mid-stream by the kill: {outcome!r}"
            )


@dataclass
class Log:
    seqs: list[int]
    interactions: list[InteractionRecorded]
    upserts: int


def read_log(data: Path) -> Log:
    """Every event in the (stopped) server's LMDB log."""
    store = LmdbEventStore(data / "events")
    try:
        seqs: list[int] = []
        interactions: list[InteractionRecorded] = []
        upserts = 0
        while page := store.read_all(after=seqs[-1] if seqs else 0):
            for stored in page:
                seqs.append(stored.seq)
                if type(stored.event) is InteractionRecorded:
                    interactions.append(stored.event)
                else:
                    assert type(stored.event) is ItemUpserted, stored
                    upserts += 1
        return Log(seqs=seqs, interactions=interactions, upserts=upserts)
    finally:
        store.close()


def like_counts(client: Client) -> tuple[Counter[str], Counter[str], int]:
    """Per item and per user ``counters["like"]``, and the log's ``seq``, as the server says."""
    items: Counter[str] = Counter()
    for item_id, state in zip(
        ITEMS, client.call_many([("get_item", {"id": i}) for i in ITEMS]), strict=True
    ):
        assert not isinstance(state, RpcError), f"get_item {item_id}: {state!r}"
        assert state["exists"], state
        items[item_id] = state["counters"].get("like", 0)
    users: Counter[str] = Counter()
    for user_id, state in zip(
        USERS, client.call_many([("get_user", {"id": u}) for u in USERS]), strict=True
    ):
        if isinstance(state, RpcError):
            assert state.code == "not_found", f"get_user {user_id}: {state!r}"
            continue
        users[user_id] = state["counters"].get("like", 0)
    return +items, +users, client.call("stats")["log_seq"]


def check_recovery(server: ServerProcess, workload: Workload) -> None:
    """With the server dead: the log holds every acked event once and whole batches only;
    after a restart the actors' state is exactly the log's."""
    log = read_log(server.data)
    assert log.seqs == list(range(1, len(log.seqs) + 1)), "the log's seq has gaps"
    assert log.upserts == len(ITEMS)
    logged = [e.id for e in log.interactions]
    logged_ids = set(logged)
    assert len(logged_ids) == len(logged), "an event id is in the log twice"
    lost = workload.acked_ids() - logged_ids
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {sorted(lost)[:5]}"
    for batch in workload.all_batches():
        present = len(batch.ids & logged_ids)
        assert present in (0, BATCH), f"batch half applied: {present} of {BATCH} events logged"

    acked_per_item = Counter(e["item"] for b in workload.all_batches() if b.acks for e in b.events)
    server.restart()
    with server.client() as client:
        items, users, log_seq = like_counts(client)
    assert log_seq == len(log.seqs)
    for item_id in ITEMS:
        assert items[item_id] >= acked_per_item[item_id], f"{item_id} lost acknowledged likes"
    assert items == Counter(e.item for e in log.interactions)
    assert users == Counter(e.user for e in log.interactions)


@pytest.mark.parametrize("workers", ["1", "3"])
def test_kill_9_mid_stream_loses_no_acknowledged_event_and_applies_none_twice(
    start_server: StartServer, workers: str
) -> None:
    """With ``--workers 3`` the kill takes the supervisor, the writer and the readers at once."""
    rng = random.Random(SEED)
    server = start_server("--snapshot-every", "5", "--workers", workers)
    with server.client() as client:
        assert client.call("upsert_items", {"items": [{"id": i} for i in ITEMS]}) == {
            "accepted": len(ITEMS),
            "seq": len(ITEMS),
        }
    workload = Workload(SEED)

    # Cycle 1: kill while the clients stream new batches.
    stream(server, workload, 1, resend=False, extend=True, kill_after_s=rng.uniform(0.3, 1.0))
    assert workload.acked_ids(), "nothing was acknowledged before the kill"
    check_recovery(server, workload)

    # Cycle 2: kill while the clients resend every batch (acked or not) of cycle 1; the
    # moment is a share of the resend, not a time, so that it falls inside the resend.
    resent = len(workload.all_batches())
    kill_at = rng.randint(resent * 3 // 10, resent * 9 // 10)
    stream(server, workload, 2, resend=True, extend=True, kill_after_acks=kill_at)
    check_recovery(server, workload)

    # Resend every batch ever generated, acknowledged or not, with no kill.
    stream(server, workload, 3, resend=True, extend=False)
    batches = workload.all_batches()
    for batch in batches:
        for ack in batch.acks:
            assert ack.accepted + ack.duplicates == BATCH, ack
            assert ack.duplicates in (0, BATCH), f"batch not atomic: {ack}"
            if batch.acked_before(ack.round):
                assert ack.duplicates == BATCH, f"acked batch applied again in round {ack.round}"
    previously_acked = [b for b in batches if b.acked_before(3)]
    assert sum(b.acks[-1].duplicates for b in previously_acked) == BATCH * len(previously_acked)

    events = workload.events()
    expected_items = Counter(e["item"] for e in events)
    expected_users = Counter(e["user"] for e in events)
    expected_seq = len(ITEMS) + len(events)
    accepted = sum(a.accepted for b in batches for a in b.acks if a.round == 3)
    with server.client() as client:
        assert like_counts(client) == (expected_items, expected_users, expected_seq)
        assert client.call("stats")["events_committed"] == accepted

    # Resending everything again changes nothing.
    stream(server, workload, 4, resend=True, extend=False)
    assert all(b.acks[-1] == Ack(4, 0, BATCH) for b in batches)
    with server.client() as client:
        assert like_counts(client) == (expected_items, expected_users, expected_seq)
        assert client.call("stats")["events_committed"] == accepted

    # And a kill at rest recovers the same state (snapshots plus tails only).
    server.kill9()
    check_recovery(server, workload)
    with server.client() as client:
        assert like_counts(client) == (expected_items, expected_users, expected_seq)


def test_sigterm_mid_stream_exits_0_and_keeps_every_acknowledged_event(
    start_server: StartServer,
) -> None:
    server = start_server("--snapshot-every", "5")
    with server.client() as client:
        client.call("upsert_items", {"items": [{"id": i} for i in ITEMS]})
    workload = Workload(SEED + 1)
    stream(server, workload, 1, resend=False, extend=True, kill_after_s=0.5, sigterm=True)
    assert "matchlight stopped" in server.stderr_text()
    assert server.stdout_after_ready() == b""
    assert workload.acked_ids()
    check_recovery(server, workload)
