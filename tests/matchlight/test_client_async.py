"""``matchlight.client``'s Trio client against an in-memory fake server that answers
out of order, drops connections, or never answers.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from opentelemetry.sdk.trace import TracerProvider

from matchlight.client import (
    AsyncClient,
    BadRequest,
    ClientClosed,
    ConnectionLost,
    Forbidden,
    NotFound,
    Overloaded,
    Unauthorized,
    open_client,
)
from matchlight.client import common as client_module

# -- the Trio client against an in-memory fake server ---------------------------------------------

Handler = Callable[["FakeServer", trio.abc.Stream, int, str, dict[str, Any]], Awaitable[None]]


async def echo(
    server: FakeServer, stream: trio.abc.Stream, msgid: int, method: str, params: dict[str, Any]
) -> None:
    await server.answer(stream, msgid, {"method": method, "n": params.get("n")})


class FakeServer:
    """Speaks msgpack-RPC over in-memory streams; ``handler`` decides each answer."""

    def __init__(self, nursery: trio.Nursery, handler: Handler = echo) -> None:
        self.nursery = nursery
        self.handler = handler
        self.connections = 0
        self.requests: list[tuple[int, int, str, dict[str, Any]]] = []  # (connection, msgid, …)
        self.refuse = False
        self.refusals = 0  # refuse this many connections, then accept again
        self._send_lock = trio.Lock()  # handlers answer concurrently; a stream takes one at a time

    async def open_stream(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if self.refuse or self.refusals:
            self.refusals = max(0, self.refusals - 1)
            raise ConnectionRefusedError("fake server refuses")
        self.connections += 1
        ours, theirs = trio.testing.memory_stream_pair()
        self.nursery.start_soon(self.serve, ours, self.connections)
        return theirs

    async def serve(self, stream: trio.abc.Stream, connection: int) -> None:
        unpacker = msgpack.Unpacker(raw=False)
        async with stream, trio.open_nursery() as nursery:
            while True:
                try:
                    data = await stream.receive_some()
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break  # a handler closed the connection
                if not data:
                    break
                unpacker.feed(data)
                for message in unpacker:
                    if message[0] != 0:
                        continue
                    _, msgid, method, params = message
                    p = params[0] if params else {}
                    self.requests.append((connection, msgid, method, p))
                    nursery.start_soon(self.handler, self, stream, msgid, method, p)
            nursery.cancel_scope.cancel()  # the client went away: so do pending answers

    async def answer(
        self, stream: trio.abc.Stream, msgid: int, result: Any, error: Any = None
    ) -> None:
        try:
            async with self._send_lock:
                await stream.send_all(msgpack.packb([1, msgid, error, result]))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass


@pytest.fixture
def fake(nursery: trio.Nursery, monkeypatch: pytest.MonkeyPatch) -> FakeServer:
    server = FakeServer(nursery)

    async def open_stream(self: AsyncClient) -> trio.abc.Stream:
        return await server.open_stream()

    monkeypatch.setattr(AsyncClient, "_open_stream", open_stream)
    return server


async def test_answers_out_of_order_reach_their_callers(fake: FakeServer) -> None:
    """The fake holds every answer until 40 calls from 40 tasks arrived, then answers backwards."""
    arrived: list[tuple[trio.abc.Stream, int, dict[str, Any]]] = []
    all_in = trio.Event()

    async def backwards(
        server: FakeServer, stream: trio.abc.Stream, msgid: int, method: str, p: dict[str, Any]
    ) -> None:
        arrived.append((stream, msgid, p))
        if len(arrived) == 40:
            for s, m, params in reversed(arrived):
                await server.answer(s, m, {"n": params["n"]})
            all_in.set()

    fake.handler = backwards
    got: dict[int, Any] = {}
    async with open_client() as c:

        async def one(n: int) -> None:
            got[n] = await c.call("get_item", {"n": n})

        async with trio.open_nursery() as nursery:
            for n in range(40):
                nursery.start_soon(one, n)
    assert got == {n: {"n": n} for n in range(40)}
    assert fake.connections == 1


async def test_call_many_pipelines_and_keeps_call_order(fake: FakeServer) -> None:
    async with open_client() as c:
        results = await c.call_many([("get_item", {"n": n}) for n in range(50)])
    assert [r["n"] for r in results] == list(range(50))
    assert fake.connections == 1


async def test_msgids_on_the_wire_wrap_at_2_to_the_32(fake: FakeServer) -> None:
    async with open_client() as c:
        c._ids = client_module._MsgIds(start=2**32 - 2)
        results = await c.call_many([("health", {"n": n}) for n in range(4)])
    assert [r["n"] for r in results] == [0, 1, 2, 3]
    assert [msgid for _, msgid, _, _ in fake.requests] == [2**32 - 2, 2**32 - 1, 0, 1]


async def test_error_answers_are_typed(fake: FakeServer) -> None:
    async def refuse(
        server: FakeServer, stream: trio.abc.Stream, msgid: int, method: str, p: dict[str, Any]
    ) -> None:
        await server.answer(stream, msgid, None, {"code": p["code"], "message": "no"})

    fake.handler = refuse
    async with open_client() as c:
        with pytest.raises(NotFound):
            await c.call("get_item", {"code": "not_found"})
        results = await c.call_many(
            [("get_item", {"code": "bad_request"}), ("get_item", {"code": "forbidden"})]
        )
    assert [type(r) for r in results] == [BadRequest, Forbidden]


async def test_trace_context_travels_in_the_params(fake: FakeServer) -> None:
    provider = TracerProvider()
    tracer = provider.get_tracer("test_client_unit")
    async with open_client() as c:
        with tracer.start_as_current_span("outer") as span:
            await c.call("get_item", {"n": 1})
        await c.call("health")
    (_, _, _, traced), (_, _, _, untraced) = fake.requests
    assert traced["_trace"]["traceparent"].split("-")[1] == format(
        span.get_span_context().trace_id, "032x"
    )
    assert "_trace" not in untraced
    provider.shutdown()


async def test_idempotent_call_is_retried_on_a_new_connection(
    fake: FakeServer, autojump_clock: trio.testing.MockClock
) -> None:
    async def drop_first(
        server: FakeServer, stream: trio.abc.Stream, msgid: int, method: str, p: dict[str, Any]
    ) -> None:
        if len(server.requests) == 1:
            await stream.aclose()
        else:
            await echo(server, stream, msgid, method, p)

    fake.handler = drop_first
    async with open_client() as c:
        assert (await c.call("get_item", {"n": 7}))["n"] == 7
    assert fake.connections == 2
    assert [(conn, method) for conn, _, method, _ in fake.requests] == [
        (1, "get_item"),
        (2, "get_item"),
    ]


async def test_non_idempotent_call_is_not_retried(
    fake: FakeServer, autojump_clock: trio.testing.MockClock
) -> None:
    async def drop(
        server: FakeServer, stream: trio.abc.Stream, msgid: int, method: str, p: dict[str, Any]
    ) -> None:
        await stream.aclose()

    fake.handler = drop
    async with open_client() as c:
        with pytest.raises(ConnectionLost):
            await c.call("upsert_items", {"items": []})
        assert [m for _, _, m, _ in fake.requests] == ["upsert_items"]
        with pytest.raises(ConnectionLost):
            await c.call("health")
    # health: the first attempt and three retries, each on a new connection.
    assert [m for _, _, m, _ in fake.requests][1:] == ["health"] * 4


async def test_non_idempotent_call_is_retried_while_it_cannot_connect(
    fake: FakeServer, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_client() as c:
        assert (await c.call("health", {"n": 1}))["n"] == 1
        conn = c._conn
        assert conn is not None
        conn.lose("the test dropped it")
        fake.refusals = 2
        assert (await c.call("upsert_items", {"n": 2}))["n"] == 2
    assert fake.connections == 2
    assert [m for _, _, m, _ in fake.requests] == ["health", "upsert_items"]


async def test_overloaded_is_retried_with_backoff_then_answered(
    fake: FakeServer, autojump_clock: trio.testing.MockClock
) -> None:
    times: list[float] = []

    async def busy_twice(
        server: FakeServer, stream: trio.abc.Stream, msgid: int, method: str, p: dict[str, Any]
    ) -> None:
        times.append(trio.current_time())
        if len(times) <= 2:
            await server.answer(stream, msgid, None, {"code": "overloaded", "message": "busy"})
        else:
            await echo(server, stream, msgid, method, p)

    fake.handler = busy_twice
    async with open_client() as c:
        assert (await c.call("search", {"n": 3}))["n"] == 3
    assert fake.connections == 1
    assert [b - a for a, b in itertools.pairwise(times)] == pytest.approx([0.05, 0.1])


async def test_overloaded_upsert_is_an_error_not_a_retry(fake: FakeServer) -> None:
    async def busy(
        server: FakeServer, stream: trio.abc.Stream, msgid: int, method: str, p: dict[str, Any]
    ) -> None:
        await server.answer(stream, msgid, None, {"code": "overloaded", "message": "busy"})

    fake.handler = busy
    async with open_client() as c:
        with pytest.raises(Overloaded):
            await c.call("upsert_items", {"items": []})
    assert len(fake.requests) == 1


async def test_timeout_raises_timeout_error_and_a_late_answer_is_dropped(
    fake: FakeServer, autojump_clock: trio.testing.MockClock
) -> None:
    async def slow_first(
        server: FakeServer, stream: trio.abc.Stream, msgid: int, method: str, p: dict[str, Any]
    ) -> None:
        if p.get("n") == "slow":
            await trio.sleep(100)
        await echo(server, stream, msgid, method, p)

    fake.handler = slow_first
    async with open_client(timeout=5, retries=0) as c:
        start = trio.current_time()
        with pytest.raises(TimeoutError):
            await c.call("get_item", {"n": "slow"})
        assert trio.current_time() - start == pytest.approx(5)
        await trio.sleep(200)  # the late answer arrives, and nobody waits for it
        assert (await c.call("get_item", {"n": "fast"}))["n"] == "fast"
    assert fake.connections == 1


async def test_timeouts_are_retried_per_attempt(
    fake: FakeServer, autojump_clock: trio.testing.MockClock
) -> None:
    async def never(
        server: FakeServer, stream: trio.abc.Stream, msgid: int, method: str, p: dict[str, Any]
    ) -> None:
        await trio.sleep_forever()

    fake.handler = never
    async with open_client(timeout=1, retries=2) as c:
        start = trio.current_time()
        with pytest.raises(TimeoutError):
            await c.call("health")
        assert trio.current_time() - start == pytest.approx(3 * 1 + 0.05 + 0.1)
    assert len(fake.requests) == 3


async def test_token_is_sent_on_every_new_connection(
    fake: FakeServer, autojump_clock: trio.testing.MockClock
) -> None:
    async def authed(
        server: FakeServer, stream: trio.abc.Stream, msgid: int, method: str, p: dict[str, Any]
    ) -> None:
        if method == "auth":
            await server.answer(stream, msgid, {"role": "read"})
        elif len(server.requests) == 2:
            await stream.aclose()  # the first real call: drop the connection
        else:
            await echo(server, stream, msgid, method, p)

    fake.handler = authed
    async with open_client(token="t" * 16) as c:
        assert c.role == "read"
        assert (await c.call("get_user", {"n": 1}))["n"] == 1
    assert [(conn, m) for conn, _, m, _ in fake.requests] == [
        (1, "auth"),
        (1, "get_user"),
        (2, "auth"),
        (2, "get_user"),
    ]
    assert fake.requests[0][3] == {"token": "t" * 16}


async def test_refused_token_raises_unauthorized_from_open_client(fake: FakeServer) -> None:
    async def refuse(
        server: FakeServer, stream: trio.abc.Stream, msgid: int, method: str, p: dict[str, Any]
    ) -> None:
        await server.answer(stream, msgid, None, {"code": "unauthorized", "message": "no"})

    fake.handler = refuse
    with pytest.raises(Unauthorized):
        async with open_client(token="wrong-token-wrong"):
            pytest.fail("connected with a refused token")


async def test_open_client_raises_connect_and_block_errors_unwrapped(fake: FakeServer) -> None:
    fake.refuse = True
    with pytest.raises(ConnectionRefusedError):
        async with open_client():
            pytest.fail("connected to a refusing server")
    fake.refuse = False
    with pytest.raises(KeyError):
        async with open_client():
            raise KeyError("from the block")


async def test_lost_connection_fails_every_pending_call(fake: FakeServer) -> None:
    arrived: list[trio.abc.Stream] = []

    async def hang_then_drop(
        server: FakeServer, stream: trio.abc.Stream, msgid: int, method: str, p: dict[str, Any]
    ) -> None:
        arrived.append(stream)
        if len(arrived) == 5:
            await stream.aclose()

    fake.handler = hang_then_drop
    failures: list[BaseException] = []
    async with open_client(retries=0) as c:

        async def one(n: int) -> None:
            try:
                await c.call("upsert_items", {"n": n})
            except ConnectionLost as exc:
                failures.append(exc)

        async with trio.open_nursery() as nursery:
            for n in range(5):
                nursery.start_soon(one, n)
    assert len(failures) == 5


async def test_closed_client_refuses_calls(fake: FakeServer) -> None:
    async with open_client() as c:
        await c.aclose()
        with pytest.raises(ClientClosed):
            await c.call("health")


async def test_closing_while_another_task_connects_leaves_no_connection_behind(
    fake: FakeServer, autojump_clock: trio.testing.MockClock
) -> None:
    async def slow_auth(
        server: FakeServer, stream: trio.abc.Stream, msgid: int, method: str, p: dict[str, Any]
    ) -> None:
        if server.connections > 1:
            await trio.sleep(10)
        await server.answer(stream, msgid, {"role": "read"})

    fake.handler = slow_auth
    with trio.fail_after(60):  # the block would never end if a reader task were left behind
        async with open_client(token="t" * 16) as c:
            conn = c._conn
            assert conn is not None
            conn.lose("the test dropped it")
            failures: list[BaseException] = []

            async def call() -> None:
                try:
                    await c.call("health")
                except ClientClosed as exc:
                    failures.append(exc)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(call)
                await trio.sleep(1)  # the call is connecting, waiting for its auth answer
                await c.aclose()
            assert len(failures) == 1
