"""msgpack-RPC conformance and per-connection isolation, against the real server process.

Undecodable input closes only the connection that sent it; a decodable message
of the wrong shape is answered with ``bad_request`` when it carries an integer
msgid and otherwise closes that connection; pipelined requests are all
answered under their own msgids; notifications are applied; SIGTERM stops the
server cleanly and keeps its data.
"""

from __future__ import annotations

import itertools
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import msgpack
import pytest

from matchlight.client import Client
from matchlight.errors import RpcError

if TYPE_CHECKING:
    from tests.system.conftest import ServerProcess

pytestmark = pytest.mark.system

TIMEOUT_S = 10.0
_ids = itertools.count()


def new_event(item: str = "iso-item", type_: str = "like") -> dict[str, Any]:
    n = next(_ids)
    return {
        "id": f"iso-{n}",
        "type": type_,
        "user": f"iso-user-{n % 7}",
        "item": item,
        "ts": 1.7e9 + n,
    }


class Raw:
    """A raw connection: send bytes or msgpack objects, read decoded messages, detect close."""

    def __init__(self, server: ServerProcess) -> None:
        self.sock = socket.create_connection((server.host, server.port), timeout=TIMEOUT_S)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)

    def send(self, message: Any) -> None:
        self.sock.sendall(msgpack.packb(message))

    def send_bytes(self, data: bytes) -> None:
        self.sock.sendall(data)

    def receive(self) -> Any:
        """The next message, within 10 s."""
        for message in self.unpacker:
            return message
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            data = self.sock.recv(1 << 16)
            if not data:
                raise ConnectionError("server closed the connection")
            self.unpacker.feed(data)
            for message in self.unpacker:
                return message

    def wait_closed(self) -> list[Any]:
        """Read until the server closes the connection (≤ 10 s); the messages read before."""
        messages = list(self.unpacker)
        deadline = time.monotonic() + TIMEOUT_S
        while time.monotonic() < deadline:
            self.sock.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                data = self.sock.recv(1 << 16)
            except ConnectionResetError:
                return messages
            except TimeoutError:
                break
            if not data:
                return messages
            self.unpacker.feed(data)
            messages.extend(self.unpacker)
        raise AssertionError(f"the server kept the connection open (read {messages!r})")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(shared_server: ServerProcess) -> Iterator[Any]:
    """A factory of raw connections to ``shared_server``, all closed at teardown."""
    opened: list[Raw] = []

    def connect(server: ServerProcess = shared_server) -> Raw:
        conn = Raw(server)
        opened.append(conn)
        return conn

    yield connect
    for conn in opened:
        conn.close()


def assert_serving(server: ServerProcess, *clients: Client) -> None:
    """``clients`` (opened earlier) and a new connection still get health and ingest answered."""
    try:
        for client in (*clients, server.client()):
            assert client.call("health")["status"] == "ok"
            event = new_event()
            assert client.call("ingest", {"events": [event]})["accepted"] == 1
    except OSError as exc:
        try:
            code = server.proc.wait(timeout=5) if server.proc else None
        except subprocess.TimeoutExpired:
            code = None
        raise AssertionError(
            f"the server stopped serving ({exc!r}); exit code {code}; "
            f"stderr:\n{server.stderr_text()[-3000:]}"
        ) from exc


# -- undecodable input ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "garbage",
    [
        pytest.param(b"\xc1\xc1\xc1", id="never-used-byte"),
        pytest.param(b"\x94\x00\x01\xc1", id="never-used-byte-inside-request"),
        pytest.param(b"\x91" * 5000 + b"\xc0", id="nested-5000-deep"),
        pytest.param(b"\xdd\xff\xff\xff\xff\x00", id="array32-of-4G-elements"),
        pytest.param(b"\xdf\xff\xff\xff\xff\x00", id="map32-of-4G-pairs"),
        pytest.param(b"\x94\x00\x01\xa6health\x91\xc7\x03\xff\x00\x00\x00", id="bad-timestamp-ext"),
    ],
)
def test_undecodable_bytes_close_only_their_connection(
    shared_server: ServerProcess, raw: Any, garbage: bytes
) -> None:
    before = shared_server.client()
    assert before.call("health")["status"] == "ok"
    conn = raw()
    conn.send_bytes(garbage)
    assert conn.wait_closed() == []
    assert_serving(shared_server, before)


def test_random_garbage_closes_only_its_connection(server: ServerProcess) -> None:
    """Seeded random blobs, each on its own connection, then EOF: the server closes each."""
    rng = random.Random(0)
    before = server.client()
    for _ in range(50):
        try:
            with socket.create_connection((server.host, server.port), timeout=TIMEOUT_S) as sock:
                sock.sendall(rng.randbytes(rng.randint(1, 300)))
                sock.shutdown(socket.SHUT_WR)
                deadline = time.monotonic() + TIMEOUT_S
                # Whatever the blob decoded to (it may even hold requests), EOF ends it.
                while sock.recv(1 << 16):
                    assert time.monotonic() < deadline, "connection left open after EOF"
        except OSError:  # reset, or closed before our shutdown
            pass
    assert_serving(server, before)


def test_map_with_array_key_closes_only_its_connection(server: ServerProcess) -> None:
    before = server.client()
    conn = Raw(server)
    try:
        conn.send_bytes(b"\x81\x91\x01\x02")  # the map {[1]: 2}
        conn.wait_closed()
    finally:
        conn.close()
    assert_serving(server, before)


def test_truncated_huge_length_header_does_not_block_other_connections(
    shared_server: ServerProcess, raw: Any
) -> None:
    """A str32 header announcing 4 GiB, then silence: the server waits, others are served."""
    before = shared_server.client()
    conn = raw()
    conn.send_bytes(b"\xdb\xff\xff\xff\xff" + b"abc")
    assert_serving(shared_server, before)
    conn.sock.shutdown(socket.SHUT_WR)
    assert conn.wait_closed() == []
    assert_serving(shared_server, before)


def test_message_over_the_size_limit_closes_only_its_connection(server: ServerProcess) -> None:
    before = server.client()
    chunk = b"x" * (1 << 20)
    sent = 0
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT_S) as sock:
        try:
            sock.sendall(b"\xdb\xff\xff\xff\xff")
            while sent < (96 << 20):  # the limit is 64 MiB
                sock.sendall(chunk)
                sent += len(chunk)
        except (ConnectionResetError, BrokenPipeError):
            pass
    assert sent < (96 << 20), "the server read 96 MiB of one message without closing"
    assert_serving(server, before)


# -- decodable messages of the wrong shape ------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        pytest.param([0, "notint", "health", []], id="string-msgid"),
        pytest.param([0, -1, "health", []], id="negative-msgid"),
        pytest.param([0, 2**32, "health", []], id="msgid-over-32-bits"),
        pytest.param([0, None, "health", []], id="null-msgid"),
        pytest.param({"a": 1}, id="map"),
        pytest.param([9], id="unknown-kind"),
        pytest.param([], id="empty-array"),
        pytest.param("health", id="string"),
        pytest.param(42, id="integer"),
        pytest.param([1, 5, None, {}], id="a-response"),
        pytest.param([2, "health"], id="notification-without-params"),
    ],
)
def test_non_request_messages_close_their_connection(
    shared_server: ServerProcess, raw: Any, message: Any
) -> None:
    before = shared_server.client()
    conn = raw()
    conn.send(message)
    assert conn.wait_closed() == []
    assert_serving(shared_server, before)


@pytest.mark.parametrize(
    "message",
    [
        pytest.param([0, 7], id="msgid-only"),
        pytest.param([0, 7, "health"], id="no-params"),
        pytest.param([0, 7, "health", [], "extra"], id="extra-element"),
    ],
)
def test_request_of_wrong_arity_with_int_msgid_gets_bad_request(raw: Any, message: Any) -> None:
    conn = raw()
    conn.send(message)
    kind, msgid, error, result = conn.receive()
    assert (kind, msgid, result) == (1, 7, None)
    assert error["code"] == "bad_request"
    # The connection stays usable.
    conn.send([0, 8, "health", []])
    assert conn.receive()[:3] == [1, 8, None]


def test_unknown_method_is_bad_request(shared_server: ServerProcess, raw: Any) -> None:
    with pytest.raises(RpcError) as info:
        shared_server.client().call("no_such_method")
    assert info.value.code == "bad_request"
    assert "no_such_method" in info.value.message
    conn = raw()
    conn.send([0, 1, 42, []])
    _, msgid, error, result = conn.receive()
    assert (msgid, error["code"], result) == (1, "bad_request", None)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="map"),
        pytest.param(None, id="null"),
        pytest.param("x", id="string"),
        pytest.param([1], id="array-of-int"),
        pytest.param([[]], id="array-of-array"),
        pytest.param([{}, {}], id="array-of-two-maps"),
    ],
)
@pytest.mark.parametrize("method", ["health", "get_item", "ingest", "stats"])
def test_params_other_than_empty_or_one_map_are_bad_request(
    raw: Any, method: str, params: Any
) -> None:
    conn = raw()
    conn.send([0, 3, method, params])
    _, msgid, error, result = conn.receive()
    assert (msgid, result) == (3, None)
    assert error["code"] == "bad_request", error
    assert "params" in error["message"]


def test_empty_params_and_one_map_are_both_accepted(raw: Any) -> None:
    conn = raw()
    conn.send([0, 1, "health", []])
    conn.send([0, 2, "health", [{}]])
    answers = {m[1]: m[2:] for m in (conn.receive(), conn.receive())}
    assert answers[1] == [None, {"status": "ok", "version": answers[1][1]["version"]}]
    assert answers[2] == answers[1]


# -- pipelining and notifications ----------------------------------------------------------


def test_300_pipelined_requests_are_each_answered_under_their_msgid(
    shared_server: ServerProcess, raw: Any
) -> None:
    item = "pipeline-item"
    client = shared_server.client()
    client.call("upsert_items", {"items": [{"id": item}]})
    rng = random.Random(300)
    msgids = rng.sample(range(2**32), 300)
    kinds = ["health", "get_item", "ingest"] * 100
    requests: dict[int, str] = {}
    payload = bytearray()
    for msgid, kind in zip(msgids, kinds, strict=True):
        if kind == "health":
            params: list[Any] = []
        elif kind == "get_item":
            params = [{"id": item}]
        else:
            params = [{"events": [new_event(item)]}]
        requests[msgid] = kind
        payload += msgpack.packb([0, msgid, kind, params])
    conn = raw()
    conn.send_bytes(bytes(payload))

    answered: dict[int, Any] = {}
    deadline = time.monotonic() + 30
    while len(answered) < len(requests):
        assert time.monotonic() < deadline, f"only {len(answered)} of 300 answered"
        kind, msgid, error, result = conn.receive()
        assert kind == 1
        assert msgid in requests, f"answer to unknown msgid {msgid}"
        assert msgid not in answered, f"msgid {msgid} answered twice"
        assert error is None, (requests[msgid], error)
        answered[msgid] = result
    for msgid, result in answered.items():
        if requests[msgid] == "health":
            assert result["status"] == "ok"
        elif requests[msgid] == "get_item":
            assert result["id"] == item
        else:
            assert (result["accepted"], result["duplicates"]) == (1, 0)
    assert client.call("get_item", {"id": item})["counters"] == {"like": 100}


def test_notification_is_applied_without_an_answer(shared_server: ServerProcess, raw: Any) -> None:
    item = "notified-item"
    conn = raw()
    conn.send([2, "ingest", [{"events": [new_event(item, "save") for _ in range(3)]}]])
    conn.send([0, 77, "health", []])
    assert conn.receive()[:3] == [1, 77, None], "the notification was answered"
    client = shared_server.client()
    deadline = time.monotonic() + TIMEOUT_S
    while True:
        (state,) = client.call_many([("get_item", {"id": item})])
        if isinstance(state, RpcError):
            assert state.code == "not_found", state
            counters = {}
        else:
            counters = state["counters"]
        if counters.get("save") == 3:
            break
        assert time.monotonic() < deadline, f"notification not applied: {counters}"
        time.sleep(0.01)
    # A notification that fails validation is dropped; the connection keeps working.
    client.notify("ingest", {"events": "not a list"})
    client.notify("no_such_method", None)
    assert client.call("health")["status"] == "ok"
    assert client.call("get_item", {"id": item})["counters"] == {"save": 3}


# -- shutdown ---------------------------------------------------------------------------------


def test_sigterm_exits_0_and_keeps_the_data(server: ServerProcess) -> None:
    item = "durable-item"
    client = server.client()
    client.call("upsert_items", {"items": [{"id": item, "terms": {"city": "austin"}}]})
    result = client.call("ingest", {"events": [new_event(item) for _ in range(7)]})
    assert result["accepted"] == 7
    before = client.call("get_item", {"id": item})
    idle = server.client()  # an open, idle connection must not hold the shutdown up

    assert server.terminate() == 0
    assert "matchlight stopped" in server.stderr_text()
    assert server.stdout_after_ready() == b""
    idle.close()

    server.restart()
    after = server.client()
    assert after.call("get_item", {"id": item}) == before
    assert after.call("stats")["log_seq"] == result["seq"]
