"""The server's limits against the real process: depth, connection churn and caps, timeouts,
overload, and memory under a flood of requests from peers that never read their answers.

Whatever one connection does, the others keep being served (``assert_serving``).
"""

from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import pytest

from tests.system.test_rpc_isolation import TIMEOUT_S, Raw, assert_serving, new_event

if TYPE_CHECKING:
    from tests.system.conftest import ServerProcess, StartServer

pytestmark = pytest.mark.system


def rss_kib(server: ServerProcess) -> int:
    """The server process's resident memory, from /proc."""
    assert server.proc is not None
    for line in Path(f"/proc/{server.proc.pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS in /proc status")


def test_200000_nested_arrays_close_only_their_connection(server: ServerProcess) -> None:
    before = server.client()
    conn = Raw(server)
    try:
        conn.send_bytes(b"\x91" * 200_000 + b"\xc0")
        assert conn.wait_closed() == []
    finally:
        conn.close()
    assert_serving(server, before)


def test_200_connect_disconnect_cycles_leave_nothing_behind(start_server: StartServer) -> None:
    server = start_server("--workers", "1")  # one process: its connection counters see all
    before = server.client()
    baseline = before.call("stats")["connections_open"]
    for n in range(200):
        with socket.create_connection((server.host, server.port), timeout=TIMEOUT_S) as sock:
            if n % 2:  # half send a request and leave without reading the answer
                sock.sendall(msgpack.packb([0, n, "health", []]))
    deadline = time.monotonic() + TIMEOUT_S
    while before.call("stats")["connections_open"] != baseline:
        assert time.monotonic() < deadline, "closed connections are still counted as open"
        time.sleep(0.05)
    assert before.call("stats")["connections_total"] >= 201
    assert_serving(server, before)


def test_connections_beyond_the_cap_are_closed_at_once(start_server: StartServer) -> None:
    server = start_server("--max-connections", "3", "--workers", "1")  # limits are per process
    first = server.client()
    held = [Raw(server), Raw(server)]  # three open now
    try:
        extra = Raw(server)
        assert extra.wait_closed() == []
        extra.close()
        assert first.call("health")["status"] == "ok"
        held.pop().close()
        deadline = time.monotonic() + TIMEOUT_S
        while True:  # the slot frees once the server has seen the close
            again = Raw(server)
            again.send([0, 1, "health", []])
            try:
                assert again.receive()[2] is None
                break
            except ConnectionError:
                assert time.monotonic() < deadline, "a freed connection slot was never reused"
                time.sleep(0.05)
            finally:
                again.close()
        assert first.call("stats")["connections_refused"] >= 1
    finally:
        for conn in held:
            conn.close()


def test_idle_connections_and_slow_messages_are_closed(start_server: StartServer) -> None:
    server = start_server("--idle-timeout", "0.5", "--message-timeout", "0.5", "--workers", "1")
    idle = Raw(server)
    slow = Raw(server)
    try:
        slow.send_bytes(msgpack.packb([0, 1, "health", []])[:3])  # and never the rest
        started = time.monotonic()
        assert idle.wait_closed() == []
        assert slow.wait_closed() == []
        assert time.monotonic() - started < TIMEOUT_S
        # An active connection is not idle: it keeps working across several timeouts.
        client = server.client()
        for _ in range(4):
            assert client.call("health")["status"] == "ok"
            time.sleep(0.2)
        assert client.call("stats")["connections_timed_out"] >= 2
    finally:
        idle.close()
        slow.close()


def test_requests_beyond_the_in_flight_cap_are_answered_overloaded(
    start_server: StartServer,
) -> None:
    server = start_server("--max-in-flight", "1", "--workers", "1")  # limits are per process
    conn = Raw(server)
    try:
        events = [new_event(item=f"flood-{n % 50}") for n in range(20_000)]
        # Pipelined: the big ingest is still in flight when the health request is read.
        conn.send_bytes(
            msgpack.packb([0, 1, "ingest", [{"events": events}]])
            + msgpack.packb([0, 2, "health", []])
        )
        answers: dict[int, Any] = {}
        for _ in range(2):
            _, msgid, error, result = conn.receive()
            answers[msgid] = error if error is not None else result
        assert answers[2] == {"code": "overloaded", "message": answers[2]["message"]}
        assert answers[1]["accepted"] == 20_000  # the request in flight was not disturbed
    finally:
        conn.close()
    client = server.client()
    assert client.call("health")["status"] == "ok"
    assert client.call("stats")["overloaded"] >= 1


def test_memory_stays_bounded_under_a_flood_from_peers_that_never_read(
    server: ServerProcess,
) -> None:
    """Eight peers pipeline 2,000 searches each and never read: reading pauses, memory holds."""
    before = server.client()
    before.call("upsert_items", {"items": [{"id": f"m-{n}", "kind": "pro"} for n in range(2000)]})
    start = rss_kib(server)
    request = msgpack.packb([0, 1, "search", [{"filter": {"all": []}, "limit": 2000}]])
    floods = []
    try:
        for _ in range(8):
            sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT_S)
            sock.setblocking(False)
            floods.append(sock)
            payload = request * 2000  # 2,000 answers of ~20 KB each: 40 MB per peer if held
            sent = 0
            deadline = time.monotonic() + 5.0
            while sent < len(payload) and time.monotonic() < deadline:
                try:
                    sent += sock.send(payload[sent : sent + (1 << 16)])
                except BlockingIOError:
                    time.sleep(0.01)  # the server stopped reading: backpressure
        time.sleep(1.0)
        peak = rss_kib(server)
        assert_serving(server, before)
    finally:
        for sock in floods:
            sock.close()
    grown_mib = (peak - start) / 1024
    print(f"server RSS {start / 1024:.0f} MiB -> {peak / 1024:.0f} MiB under the flood")
    # Held in full, the answers alone would be 8 x 40 MB; backpressure keeps far below.
    assert grown_mib < 120, f"the server grew by {grown_mib:.0f} MiB"
