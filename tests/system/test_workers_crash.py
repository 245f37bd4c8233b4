"""``serve --workers 3``: a worker's death loses no acknowledged event and applies none twice.

Four clients stream ``ingest`` batches (unique event ids) and resend a batch,
same ids, until it is acknowledged, while one worker is killed with SIGKILL
and its supervisor restarts it: the writer (forwarded writes wait or fail as
``unavailable`` and are resent), or a reader (its connections drop; clients
reconnect to the other). Afterwards the log holds every event exactly once
and every reader's counters are the log's. The supervisor's own death takes
its workers with it, and SIGTERM stops them all, keeping every acknowledged
event. A whole-node ``kill -9`` mid-stream is covered by
``test_crash_recovery`` (parametrized over ``--workers``).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import pytest

from actors import DirectoryLock, DirectoryLockedError
from matchlight.bench.harness import children_of
from matchlight.client import Client
from matchlight.errors import Overloaded, RpcError, Unavailable
from tests.system.conftest import (
    clients_by_reader,
    kill_process,
    process_gone,
    run_cli,
    wait_for,
    wait_restarted,
    worker_pids,
)
from tests.system.test_crash_recovery import (
    BATCH,
    CLIENTS,
    ITEMS,
    SEED,
    T0,
    USERS,
    Ack,
    Workload,
    check_recovery,
    like_counts,
    read_log,
    stream,
)

if TYPE_CHECKING:
    from tests.system.conftest import ServerProcess, StartServer

pytestmark = pytest.mark.system

READERS = ("reader-1", "reader-2")
#: Batches each client sends; the kill comes once a third of all of them are acknowledged.
BATCHES_PER_CLIENT = 12
KILL_AFTER_ACKS = CLIENTS * BATCHES_PER_CLIENT // 3
#: A deadline, not a benchmark: the node must take writes again this soon after a death.
RECOVERY_S = 5.0
#: How long a client keeps resending one batch before the test gives up on the node.
RESEND_FOR_S = 30.0
RESEND_PAUSE_S = 0.05
CALL_TIMEOUT_S = 15.0
#: Failures after which a call is resent: no answer, or the node cannot serve it now.
TRANSIENT = (OSError, Unavailable, Overloaded)


def start_node(start_server: StartServer, *args: str) -> ServerProcess:
    """A node of a writer and two readers (and ``serve`` flags ``args``) with :data:`ITEMS`
    in its catalogue."""
    server = start_server("--workers", "3", "--snapshot-every", "5", *args)
    with server.client() as client:
        client.call("upsert_items", {"items": [{"id": i} for i in ITEMS]})
    return server


class ResendingStream:
    """:data:`CLIENTS` threads, each on its own connection, ingest ``BATCHES_PER_CLIENT`` new
    batches of ``workload``, resending a batch (same ids) until it is acknowledged.

    ``ack_times`` holds when each acknowledgement came (``time.monotonic``);
    ``resends`` counts the calls that failed and were sent again.
    """

    def __init__(self, server: ServerProcess, workload: Workload) -> None:
        self.server = server
        self.workload = workload
        self.ack_times: list[float] = []
        self.resends = 0
        self._lock = threading.Lock()
        self._enough = threading.Event()
        self._failures: list[BaseException | None] = [None] * CLIENTS

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Run the clients for the block; at its end wait for them, and fail if one failed."""
        threads = [threading.Thread(target=self._run, args=(c,)) for c in range(CLIENTS)]
        for t in threads:
            t.start()
        try:
            yield
        finally:
            # A client gives up on a batch after RESEND_FOR_S (plus the call under way).
            deadline = time.monotonic() + RESEND_FOR_S + 2 * CALL_TIMEOUT_S
            for t in threads:
                t.join(timeout=max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "a client thread did not finish"
        for c, failure in enumerate(self._failures):
            assert failure is None, f"client {c} gave up: {failure!r}"

    def wait_kill_moment(self) -> None:
        """Wait until :data:`KILL_AFTER_ACKS` batches are acknowledged, and not all of them."""
        assert self._enough.wait(RESEND_FOR_S), f"fewer than {KILL_AFTER_ACKS} batches acknowledged"
        assert len(self.ack_times) < CLIENTS * BATCHES_PER_CLIENT, (
            "every batch was acknowledged before the kill: raise BATCHES_PER_CLIENT"
        )

    def _run(self, c: int) -> None:
        try:
            with contextlib.ExitStack() as stack:
                client: Client | None = None
                for _ in range(BATCHES_PER_CLIENT):
                    batch = self.workload.new_batch(c)
                    resend_until = time.monotonic() + RESEND_FOR_S
                    while True:
                        try:
                            if client is None:
                                client = stack.enter_context(self._connect())
                            result = client.call("ingest", {"events": batch.events})
                            break
                        except TRANSIENT:
                            if time.monotonic() > resend_until:
                                raise
                            with self._lock:
                                self.resends += 1
                            time.sleep(RESEND_PAUSE_S)
                    with self._lock:
                        batch.acks.append(Ack(1, result["accepted"], result["duplicates"]))
                        self.ack_times.append(time.monotonic())
                        if len(self.ack_times) >= KILL_AFTER_ACKS:
                            self._enough.set()
        except Exception as exc:  # reported by the main thread
            self._failures[c] = exc

    def _connect(self) -> Client:
        # No retries of its own: the stream resends, and counts it.
        return Client(self.server.host, self.server.port, timeout=CALL_TIMEOUT_S, retries=0)


def ingest_probe(server: ServerProcess, tag: str) -> tuple[str, float]:
    """Ingest one new event, resending it on new connections until it is acknowledged; its
    id, and the seconds that took."""
    probe = f"probe-{tag}"
    event = {"id": probe, "type": "like", "user": USERS[0], "item": ITEMS[0], "ts": T0}

    def acknowledged() -> bool:
        try:
            with Client(server.host, server.port, timeout=CALL_TIMEOUT_S, retries=0) as client:
                result = client.call("ingest", {"events": [event]})
        except TRANSIENT:
            return False
        # A duplicate: an earlier try was committed, but its answer lost.
        return bool(result["accepted"] + result["duplicates"] == 1)

    return probe, wait_for(f"ingest of {probe}", acknowledged, RESEND_FOR_S)


def check_acks(workload: Workload) -> None:
    """Every batch was acknowledged once, whole: new, or (resent after a lost answer) duplicate."""
    for batch in workload.all_batches():
        (ack,) = batch.acks
        assert ack.accepted + ack.duplicates == BATCH, ack
        assert ack.duplicates in (0, BATCH), f"batch not atomic: {ack}"


def check_exactly_once(server: ServerProcess, sent: set[str]) -> None:
    """Every reader's counters are the log's, and after a clean stop the log holds every
    id of ``sent`` (all acknowledged) exactly once, and nothing else."""
    counts = {name: like_counts(c) for name, c in clients_by_reader(server, len(READERS)).items()}
    assert server.terminate() == 0
    log = read_log(server.data)
    assert log.seqs == list(range(1, len(log.seqs) + 1)), "the log's seq has gaps"
    assert log.upserts == len(ITEMS)
    logged = Counter(e.id for e in log.interactions)
    twice = [i for i, n in logged.items() if n > 1]
    assert not twice, f"{len(twice)} event ids in the log twice, e.g. {twice[:5]}"
    lost = sent - logged.keys()
    assert not lost, f"{len(lost)} acknowledged events lost, e.g. {sorted(lost)[:5]}"
    assert logged.keys() == sent, "the log holds events nobody sent"
    expected = (
        Counter(e.item for e in log.interactions),
        Counter(e.user for e in log.interactions),
        len(log.seqs),
    )
    for name, seen in counts.items():
        assert seen == expected, f"{name}'s counters are not the log's"


def test_kill_9_of_the_writer_mid_stream_loses_nothing_and_applies_nothing_twice(
    start_server: StartServer,
) -> None:
    server = start_node(start_server)
    workload = Workload(SEED)
    writer = worker_pids(server)["writer"]
    ingesting = ResendingStream(server, workload)
    with ingesting.running():
        ingesting.wait_kill_moment()
        kill_process(writer)
        killed_at = time.monotonic()
        probe, took = ingest_probe(server, "after-writer-kill")
    assert took <= RECOVERY_S, f"no write was acknowledged within {RECOVERY_S:g} s of the kill"
    assert max(ingesting.ack_times) > killed_at, "the clients did not stream past the kill"

    figures = wait_restarted(server, "writer", writer)
    assert figures["restarts"] == 1
    with server.client() as client:
        assert client.call("stats")["workers_restarts_total"] == 1
    check_acks(workload)
    check_exactly_once(server, {*workload.acked_ids(), probe})


class MonotonicReads:
    """A thread that reads :data:`ITEMS`' like counters, and which reader answered, in a loop
    over ``client`` (which connects again when its connection breaks, to whichever reader
    the supervisor picks).

    A counter never goes down: a read sees every write acknowledged before it
    was sent, on whichever reader, restarted or not (``went_back`` lists any
    that did). ``answered_by`` holds when and by which reader each loop was answered.
    """

    def __init__(self, client: Client) -> None:
        self.answered_by: list[tuple[float, str]] = []
        self.went_back: list[tuple[str, int, int]] = []
        self._client = client
        self._stop = threading.Event()
        self._failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run)

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        """Read for the block; at its end stop, and fail if a read failed."""
        self._thread.start()
        try:
            yield
        finally:
            self._stop.set()
            self._thread.join(timeout=RESEND_FOR_S)
        assert not self._thread.is_alive(), "the reading thread did not finish"
        assert self._failure is None, f"a read failed: {self._failure!r}"

    def answered_since(self, moment: float) -> bool:
        """Whether a read was answered after ``moment`` (``time.monotonic``)."""
        return bool(self.answered_by) and self.answered_by[-1][0] > moment

    def _run(self) -> None:
        last: Counter[str] = Counter()
        reads = [("health", None), *[("get_item", {"id": i}) for i in ITEMS]]
        try:
            while not self._stop.is_set():
                try:
                    health, *states = self._client.call_many(reads)
                except OSError:  # cut off mid-call: the next call connects again
                    time.sleep(RESEND_PAUSE_S)
                    continue
                for item_id, state in zip(ITEMS, states, strict=True):
                    if isinstance(state, RpcError):
                        raise state
                    likes = state["counters"].get("like", 0)
                    if likes < last[item_id]:
                        self.went_back.append((item_id, last[item_id], likes))
                    last[item_id] = likes
                self.answered_by.append((time.monotonic(), health["worker"]))
        except Exception as exc:  # reported by running()
            self._failure = exc


@pytest.mark.parametrize("reader", READERS)
def test_kill_9_of_a_reader_mid_stream_loses_nothing_and_the_node_keeps_answering(
    start_server: StartServer, reader: str
) -> None:
    """reader-1 also sends the snapshots; reader-2 restarts from them. The reading client
    starts on the reader that is killed."""
    server = start_node(start_server)
    workload = Workload(SEED + 1)
    ingesting = ResendingStream(server, workload)
    reads = MonotonicReads(clients_by_reader(server, len(READERS))[reader])
    old = worker_pids(server)[reader]
    with reads.running():
        wait_for("the reading client is answered", lambda: reads.answered_since(0.0))
        with ingesting.running():
            ingesting.wait_kill_moment()
            kill_process(old)
            killed_at = time.monotonic()
            wait_for(
                f"the reading client, on {reader} until the kill, is answered again",
                lambda: reads.answered_since(killed_at),
                RECOVERY_S,
            )
            probe, took = ingest_probe(server, f"after-{reader}-kill")
            assert took <= RECOVERY_S, f"no write acknowledged within {RECOVERY_S:g} s of the kill"
    assert {w for t, w in reads.answered_by if t < killed_at} == {reader}
    assert not reads.went_back, f"reads went back in time: {reads.went_back[:5]}"

    figures = wait_restarted(server, reader, old)
    assert figures["restarts"] == 1
    with server.client() as client:
        stats = client.call("stats")
    assert stats["workers_restarts_total"] == 1
    assert stats["workers"]["writer"]["restarts"] == 0
    check_acks(workload)
    check_exactly_once(server, {*workload.acked_ids(), probe})


def test_the_supervisor_holds_the_data_directory_while_its_writer_restarts(
    start_server: StartServer,
) -> None:
    server = start_node(start_server)
    supervisor = server.proc.pid  # type: ignore[union-attr]
    kill_process(worker_pids(server)["writer"])

    # The writer is dead and (for at least a short pause) not yet replaced: the lock it
    # shared with the supervisor is still held.
    with pytest.raises(DirectoryLockedError, match=f"in use by pid {supervisor} "):
        DirectoryLock(server.data).acquire()
    second = run_cli("serve", "--data", str(server.data), "--listen", "127.0.0.1:0")
    assert second.returncode == 1, second.stderr
    assert f"is in use by pid {supervisor} (matchlight serve" in second.stderr
    # stats answers meanwhile (the log's figures then as a reader sees them).
    with server.client() as client:
        stats = client.call("stats")
    assert type(stats["writer_reachable"]) is bool
    assert stats["workers"]["writer"]["role"] == "writer"

    _, took = ingest_probe(server, "after-refusal")
    assert took <= RECOVERY_S, f"no write acknowledged within {RECOVERY_S:g} s of the kill"


def ingest_events(server: ServerProcess) -> list[dict[str, Any]]:
    """1,000 new events, ingested (and acknowledged) in one call."""
    events = [
        {"id": f"e-{n}", "type": "like", "user": USERS[n % 7], "item": ITEMS[n % 11], "ts": T0}
        for n in range(1000)
    ]
    with server.client() as client:
        assert client.call("ingest", {"events": events})["accepted"] == len(events)
    return events


def test_the_workers_exit_when_their_supervisor_is_killed_and_a_restart_loses_nothing(
    start_server: StartServer,
) -> None:
    server = start_node(start_server)
    events = ingest_events(server)
    supervisor = server.proc.pid  # type: ignore[union-attr]
    workers = children_of(supervisor)
    assert len(workers) == 3

    os.kill(supervisor, signal.SIGKILL)
    wait_for(
        "the workers exit after their supervisor's death",
        lambda: all(process_gone(pid) for pid in workers),
        RECOVERY_S,
    )
    server.kill9()  # only reaps it: it is dead
    server.start()  # the lock is free: no worker outlived the supervisor
    with server.client() as client:
        assert client.call("ingest", {"events": events})["duplicates"] == len(events)
    check_exactly_once(server, {e["id"] for e in events})


def test_sigterm_mid_stream_stops_every_worker_and_keeps_every_acknowledged_event(
    start_server: StartServer,
) -> None:
    server = start_node(start_server)
    workers = children_of(server.proc.pid)  # type: ignore[union-attr]
    assert len(workers) == 3
    workload = Workload(SEED + 2)
    stream(server, workload, 1, resend=False, extend=True, kill_after_s=0.5, sigterm=True)
    assert "matchlight stopped" in server.stderr_text()
    assert all(process_gone(pid) for pid in workers), "a worker outlived the stopped server"
    assert workload.acked_ids()
    check_recovery(server, workload)


def test_sigterm_while_the_writer_restarts_stops_every_worker_and_keeps_every_event(
    start_server: StartServer,
) -> None:
    """SIGTERM lands in the pause before the killed writer is replaced: the supervisor must
    not start it again, and must stop the readers and exit 0. (``--drain 1``: each reader's
    last snapshot flush waits up to that long for a writer that will not come back.)"""
    server = start_node(start_server, "--drain", "1")
    events = ingest_events(server)
    workers = children_of(server.proc.pid)  # type: ignore[union-attr]
    kill_process(worker_pids(server)["writer"])
    assert server.terminate() == 0
    assert "matchlight stopped" in server.stderr_text()
    assert all(process_gone(pid) for pid in workers), "a worker outlived the stopped server"
    server.start()
    check_exactly_once(server, {e["id"] for e in events})
