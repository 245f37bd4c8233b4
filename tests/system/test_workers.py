"""``matchlight serve --workers 3`` answers as one node: a writer and two readers, one address.

A write acknowledged through one reader is visible at once through the
other (read-your-writes across processes); writes through a reader get the
answers, errors included, a single-process node gives; ``stats`` shows every
worker. Crashes and stops are in ``test_workers_crash``.
"""

from __future__ import annotations

import os
import signal
from typing import TYPE_CHECKING, Any

import pytest

from actors.item_index import COUNTER_FIELDS
from matchlight.bench.harness import children_of
from matchlight.errors import RpcError
from matchlight.server.apply_board import STALE_S, ApplyBoard, board_path
from tests.system.conftest import clients_by_reader, process_gone, wait_for, worker_pids

if TYPE_CHECKING:
    from matchlight.client import Client
    from tests.system.conftest import StartServer

pytestmark = pytest.mark.system

READERS = ("reader-1", "reader-2")
T0 = 1_700_000_000.0


def readers(start_server: StartServer, *args: str) -> tuple[Client, Client]:
    """Start a node of a writer and two readers; a connection to each reader."""
    server = start_server("--workers", "3", *args)
    clients = clients_by_reader(server, len(READERS))
    assert tuple(clients) == READERS
    return clients["reader-1"], clients["reader-2"]


# -- read-your-writes -------------------------------------------------------------------------

PROBES = 200
PROBE_USERS = 20


def test_a_write_acknowledged_through_one_reader_is_visible_at_once_through_the_other(
    start_server: StartServer,
) -> None:
    """The e2e bench's freshness probe across processes: the like is the user's latest
    interaction, and the liked item (now seen) is no longer recommended."""
    one, other = readers(start_server)
    one.call("upsert_items", {"items": [{"id": f"pro-{n}", "kind": "pro"} for n in range(50)]})
    not_visible: list[int] = []
    still_recommended: list[int] = []
    for n in range(PROBES):
        writes, reads = (one, other) if n % 2 == 0 else (other, one)
        user = f"user-{n % PROBE_USERS}"
        listed = reads.call("recommend", {"user": user, "k": 5})["items"]
        assert listed, f"probe {n}: nothing to recommend to {user}"
        liked = listed[0]["id"]
        event = {"id": f"like-{n}", "type": "like", "user": user, "item": liked, "ts": T0 + n}
        assert writes.call("ingest", {"events": [event]})["accepted"] == 1
        latest = reads.call("get_user", {"id": user})["recent"][0]
        if (latest["item"], latest["type"]) != (liked, "like"):
            not_visible.append(n)
        after = reads.call("recommend", {"user": user, "k": 5})["items"]
        if any(entry["id"] == liked for entry in after):
            still_recommended.append(n)
    assert not not_visible, f"{len(not_visible)} of {PROBES} likes not in get_user at once"
    assert not still_recommended, (
        f"{len(still_recommended)} of {PROBES} liked items still recommended right after"
    )


# -- writes through a reader ------------------------------------------------------------------

#: ``--max-numeric-fields``: room for the standard event types' counters and ``rate``, so
#: that an item bringing this many new fields is refused by the write path (not by validation).
FIELD_LIMIT = len(COUNTER_FIELDS) + 1
WRITES: tuple[tuple[str, Any], ...] = (
    (
        "upsert_items",
        {
            "items": [
                {"id": "w-1", "kind": "pro", "terms": {"city": "austin"}, "numbers": {"rate": 1}},
                {"id": "w-2", "kind": "pro"},
            ]
        },
    ),
    (
        "ingest",
        {
            "events": [
                {"id": "e-1", "type": "like", "user": "u-1", "item": "w-1", "ts": T0},
                {"id": "e-2", "type": "view", "user": "u-2", "item": "w-2", "ts": T0 + 1},
            ]
        },
    ),
    ("ingest", {"events": [{"id": "e-1", "type": "like", "user": "u-1", "item": "w-1", "ts": T0}]}),
    ("ingest", {"events": [{"id": "e-3", "type": "like", "user": "u-1", "ts": T0}]}),
    ("ingest", {"events": "e-4"}),
    ("ingest", None),
    (
        "upsert_items",
        {"items": [{"id": "w-3", "numbers": {f"n{k}": 2.0 for k in range(FIELD_LIMIT)}}]},
    ),
    ("upsert_items", {"items": [{"kind": "pro"}]}),
    ("remove_items", {"ids": ["w-2"]}),
    ("remove_items", {"ids": ["w-2", "w-9"]}),
    ("ingest", {"events": [{"id": "e-5", "type": "view", "user": "u-3", "item": "w-1", "ts": T0}]}),
)


def answers(clients: tuple[Client, ...]) -> list[Any]:
    """Each of :data:`WRITES`' answers (its result, or its error's code and message), sent
    in turn over ``clients``, then what ``get_item`` and ``get_user`` say of the items and users."""
    out: list[Any] = []
    reads = [("get_item", {"id": "w-1"}), ("get_item", {"id": "w-2"}), ("get_user", {"id": "u-1"})]
    for n, (method, params) in enumerate([*WRITES, *reads]):
        try:
            out.append(clients[n % len(clients)].call(method, params))
        except RpcError as exc:
            out.append((exc.code, exc.message))
    return out


def test_writes_through_the_readers_get_the_answers_of_a_single_process_node(
    start_server: StartServer,
) -> None:
    """Results and errors alike: validation's, and the write path's own refusal of numeric
    fields beyond ``--max-numeric-fields`` (both nodes must count the fields in use alike);
    then the state the writes left, read through the readers."""
    limit = ("--max-numeric-fields", str(FIELD_LIMIT))
    single = start_server("--workers", "1", *limit)
    with single.client() as client:
        expected = answers((client,))
    assert expected[3] == ("bad_request", "events[0].item: missing")
    assert expected[6][0] == "bad_request"
    assert "'n0' would be a new numeric field" in expected[6][1]
    assert expected[8] == {"removed": 1, "seq": 5}

    through_readers = answers(readers(start_server, *limit))
    assert through_readers == expected


# -- connections ------------------------------------------------------------------------------


def test_each_new_connection_goes_to_the_reader_with_the_fewest_open(
    start_server: StartServer,
) -> None:
    """The supervisor balances connections over the readers, and learns when they close."""
    server = start_server("--workers", "3")
    opened = [server.client() for _ in range(4)]
    try:
        workers = [client.call("health")["worker"] for client in opened]
        assert workers == ["reader-1", "reader-2", "reader-1", "reader-2"]
        for client in (opened[1], opened[3]):
            client.close()

        def reader_2_idle() -> bool:
            figures = opened[0].call("stats")["workers"]["reader-2"]
            return bool(figures["connections_open"] == 0)

        wait_for("reader-2's connections closed", reader_2_idle)
        more = [server.client() for _ in range(2)]
        opened += more
        assert [client.call("health")["worker"] for client in more] == ["reader-2"] * 2
    finally:
        for client in opened:
            client.close()


# -- stats ------------------------------------------------------------------------------------


def test_stats_shows_every_worker_alive_and_the_node_totals_are_their_sums(
    start_server: StartServer,
) -> None:
    server = start_server("--workers", "3")
    clients = clients_by_reader(server, len(READERS))
    for n, client in enumerate(clients.values()):
        client.call("upsert_items", {"items": [{"id": f"i-{n}"}]})
        client.call("get_item", {"id": f"i-{n}"})

    def caught_up() -> bool:
        workers = clients["reader-1"].call("stats")["workers"]
        return len(workers) == 3 and all(
            workers[name].get("applied_seq") == workers["writer"]["log_seq"] == 2
            for name in READERS
        )

    wait_for("every reader's figures show the whole log applied", caught_up)
    # The writer sees on the apply board that both readers are live and caught up.
    with ApplyBoard(board_path(server.data / "run"), len(READERS)) as board:
        assert board.slowest() == 2
    for name, client in clients.items():
        stats = client.call("stats")
        assert stats["worker"] == name
        assert stats["log_seq"] == stats["follower_applied_seq"] == 2
        workers = stats["workers"]
        assert {w: figures["role"] for w, figures in workers.items()} == {
            "reader-1": "reader",
            "reader-2": "reader",
            "writer": "writer",
        }
        pids = [figures["pid"] for figures in workers.values()]
        assert sorted(pids) == sorted(children_of(server.proc.pid))  # type: ignore[union-attr]
        assert not any(process_gone(pid) for pid in pids)
        assert stats["workers_requests_total"] == sum(w["requests"] for w in workers.values())
        assert stats["workers_rss_anon_mib_total"] == pytest.approx(
            sum(w["RssAnon"] for w in workers.values()), abs=0.05
        )
        assert stats["workers_restarts_total"] == 0
        assert stats["writes_held"] == 0
        assert all(w["restarts"] == 0 for w in workers.values())
        assert all(w["VmRSS"] >= w["RssAnon"] > 0 for w in workers.values())


# -- readers kept within reach ---------------------------------------------------------------


def test_a_stopped_reader_holds_writes_for_about_a_second_and_then_catches_up(
    start_server: StartServer,
) -> None:
    """``--max-apply-lag``: while reader-2 is stopped (SIGSTOP), a write through reader-1 is
    held once the log is that far ahead of it, but only until reader-2 has not posted its
    progress for ``STALE_S``: a reader that does not follow is not waited for. Continued,
    it applies everything before it answers."""
    server = start_server("--workers", "3", "--max-apply-lag", "200")
    clients = clients_by_reader(server, len(READERS))
    one, other = clients["reader-1"], clients["reader-2"]
    one.call("upsert_items", {"items": [{"id": "i-0"}]})
    assert other.call("get_item", {"id": "i-0"})["exists"]  # reader-2 has applied the log
    stopped = worker_pids(server)["reader-2"]
    os.kill(stopped, signal.SIGSTOP)
    try:
        for call in range(10):
            events = [
                {"id": f"v-{call}-{n}", "type": "view", "user": f"u-{n}", "item": "i-0", "ts": T0}
                for n in range(100)
            ]
            assert one.call("ingest", {"events": events})["accepted"] == 100
        stats = one.call("stats")
    finally:
        os.kill(stopped, signal.SIGCONT)
    assert stats["writes_held"] >= 1
    # Held from when the log ran 200 ahead until reader-2's last post was STALE_S old.
    assert 0 < stats["writes_held_s"] <= STALE_S + 1.0
    assert other.call("get_item", {"id": "i-0"})["counters"]["view"] == 1000
