"""``matchlight.client`` without a server process: error mapping, retry policy, backoff,
trace injection, msgid wrap-around, and the Trio client against an in-memory fake
server that answers out of order, drops connections, or never answers.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import msgpack
import pytest
import trio
import trio.testing
from opentelemetry.sdk.trace import TracerProvider

from matchlight.client import (
    IDEMPOTENT_METHODS,
    AsyncClient,
    BadRequest,
    ClientClosed,
    ConnectionLost,
    Forbidden,
    InternalError,
    NotFound,
    Overloaded,
    RetryPolicy,
    RpcError,
    Unauthorized,
    Unavailable,
    error_from_wire,
    inject_trace,
    open_client,
)
from matchlight.client import common as client_module
from matchlight.errors import BadRequest as ErrorsBadRequest
from matchlight.errors import NotFound as ErrorsNotFound

# -- error mapping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "cls"),
    [
        ("bad_request", BadRequest),
        ("unauthorized", Unauthorized),
        ("forbidden", Forbidden),
        ("not_found", NotFound),
        ("overloaded", Overloaded),
        ("unavailable", Unavailable),
        ("internal", InternalError),
    ],
)
def test_each_contract_code_maps_to_its_class(code: str, cls: type[RpcError]) -> None:
    error = error_from_wire({"code": code, "message": "what went wrong"})
    assert type(error) is cls
    assert isinstance(error, RpcError)
    assert (error.code, error.message) == (code, "what went wrong")
    assert error.to_wire() == {"code": code, "message": "what went wrong"}


def test_bad_request_and_not_found_are_the_errors_module_classes() -> None:
    assert BadRequest is ErrorsBadRequest
    assert NotFound is ErrorsNotFound


def test_unknown_code_is_a_plain_rpc_error() -> None:
    error = error_from_wire({"code": "teapot", "message": "short and stout"})
    assert type(error) is RpcError
    assert (error.code, error.message) == ("teapot", "short and stout")


@pytest.mark.parametrize(
    ("wire", "message"),
    [
        pytest.param("boom", "boom", id="string"),
        pytest.param(42, "42", id="integer"),
        pytest.param({"message": "no code"}, "no code", id="no-code"),
        pytest.param({"code": 7, "message": "x"}, "x", id="code-not-a-string"),
        pytest.param({"code": "internal"}, "", id="no-message"),
    ],
)
def test_malformed_error_is_internal(wire: Any, message: str) -> None:
    error = error_from_wire(wire)
    assert type(error) is InternalError
    assert error.message == message


def test_connection_lost_and_timeout_are_os_errors_not_rpc_errors() -> None:
    assert issubclass(ConnectionLost, ConnectionError)
    assert not issubclass(ConnectionLost, RpcError)
    assert issubclass(ClientClosed, trio.ClosedResourceError)


# -- retry policy --------------------------------------------------------------------------------

NOT_RETRIED = ("upsert_items", "remove_items", "set_migration", "no_such_method")


@pytest.mark.parametrize("method", sorted(IDEMPOTENT_METHODS))
@pytest.mark.parametrize(
    "outcome",
    [
        ConnectionLost("gone"),
        TimeoutError("slow"),
        ConnectionRefusedError("refused"),
        Overloaded("busy"),
        Unavailable("draining"),
    ],
    ids=type,
)
def test_idempotent_methods_are_retried_on_transient_failures(
    method: str, outcome: BaseException
) -> None:
    assert RetryPolicy().should_retry(method, outcome)


@pytest.mark.parametrize("method", NOT_RETRIED)
@pytest.mark.parametrize(
    "outcome", [ConnectionLost("gone"), TimeoutError("slow"), Overloaded("busy")], ids=type
)
def test_methods_minting_events_are_never_retried(method: str, outcome: BaseException) -> None:
    assert not RetryPolicy().should_retry(method, outcome)


@pytest.mark.parametrize("method", NOT_RETRIED)
def test_any_call_that_was_never_sent_is_retried(method: str) -> None:
    """No connection could be made for it: the server cannot have acted on it."""
    policy = RetryPolicy()
    assert policy.should_retry(method, ConnectionRefusedError("refused"), sent=False)
    assert policy.should_retry(method, Unavailable("draining"), sent=False)
    assert not policy.should_retry(method, Unauthorized("bad token"), sent=False)


def test_the_idempotent_methods_are_the_documented_ones() -> None:
    assert {
        "health",
        "auth",
        "get_item",
        "get_user",
        "search",
        "recommend",
        "stats",
        "ingest",
    } == IDEMPOTENT_METHODS


@pytest.mark.parametrize(
    "outcome",
    [
        BadRequest("bad"),
        NotFound("none"),
        Unauthorized("who"),
        Forbidden("no"),
        InternalError("bug"),
        RpcError("teapot", "x"),
        {"status": "ok"},
        None,
    ],
    ids=repr,
)
def test_answers_and_permanent_errors_are_not_retried(outcome: Any) -> None:
    assert not RetryPolicy().should_retry("get_item", outcome)


def test_a_policy_can_name_its_own_methods() -> None:
    policy = RetryPolicy(methods=frozenset({"set_migration"}))
    assert policy.should_retry("set_migration", ConnectionLost("gone"))
    assert not policy.should_retry("health", ConnectionLost("gone"))


# -- backoff -------------------------------------------------------------------------------------


def test_default_backoff_doubles_from_50_ms_three_times() -> None:
    assert RetryPolicy().delays() == pytest.approx((0.05, 0.1, 0.2))


def test_backoff_is_capped_and_zero_retries_means_no_pause() -> None:
    policy = RetryPolicy(retries=6, first_delay=0.1, max_delay=0.5)
    assert policy.delays() == pytest.approx((0.1, 0.2, 0.4, 0.5, 0.5, 0.5))
    assert RetryPolicy(retries=0).delays() == ()


def test_negative_retries_are_refused() -> None:
    with pytest.raises(ValueError, match="retries"):
        RetryPolicy(retries=-1)


def test_settle_retries_only_idempotent_transient_failures() -> None:
    methods = ["get_item", "get_item", "ingest", "search"]
    results: list[Any] = [None] * 4
    outcomes = [{"id": "a"}, Overloaded("busy"), TimeoutError("slow"), NotFound("none")]
    again = client_module._settle(RetryPolicy(), methods, [0, 1, 2, 3], outcomes, results, True)
    assert again == [1, 2]
    assert results[0] == {"id": "a"}
    assert isinstance(results[3], NotFound)


def test_settle_raises_a_lost_call_that_may_not_be_retried() -> None:
    lost = ConnectionLost("gone")
    with pytest.raises(ConnectionLost):
        client_module._settle(RetryPolicy(), ["upsert_items"], [0], [lost], [None], may_retry=True)
    # Out of retries: the last failure of an idempotent call is raised too.
    with pytest.raises(TimeoutError):
        client_module._settle(
            RetryPolicy(), ["health"], [0], [TimeoutError("slow")], [None], may_retry=False
        )
    # Out of retries, an error answer is a value.
    results: list[Any] = [None]
    assert (
        client_module._settle(RetryPolicy(), ["health"], [0], [Overloaded("x")], results, False)
        == []
    )
    assert isinstance(results[0], Overloaded)


# -- trace injection -----------------------------------------------------------------------------

TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-[0-9a-f]{2}")


@pytest.fixture
def tracer() -> Iterator[Any]:
    """A tracer of a local SDK provider (the global provider stays untouched)."""
    provider = TracerProvider()
    yield provider.get_tracer("test_client_unit")
    provider.shutdown()


def test_no_current_span_leaves_params_alone() -> None:
    params = {"id": "i1"}
    assert inject_trace(params) is params
    assert inject_trace(None) is None


def test_current_span_adds_its_traceparent(tracer: Any) -> None:
    params = {"id": "i1"}
    with tracer.start_as_current_span("request") as span:
        traced = inject_trace(params)
        context = span.get_span_context()
    assert traced is not None
    assert traced["id"] == "i1"
    match = TRACEPARENT.fullmatch(traced["_trace"]["traceparent"])
    assert match is not None
    assert match.group(1) == format(context.trace_id, "032x")
    assert match.group(2) == format(context.span_id, "016x")
    assert params == {"id": "i1"}, "the caller's params were changed"


def test_current_span_traces_a_call_without_params(tracer: Any) -> None:
    with tracer.start_as_current_span("request"):
        traced = inject_trace(None)
    assert traced is not None
    assert set(traced) == {"_trace"}
    assert TRACEPARENT.fullmatch(traced["_trace"]["traceparent"])


def test_explicit_trace_is_kept(tracer: Any) -> None:
    explicit = {"traceparent": "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"}
    params = {"id": "i1", "_trace": explicit}
    with tracer.start_as_current_span("request"):
        assert inject_trace(params) is params


# -- msgids --------------------------------------------------------------------------------------


def test_msgids_wrap_at_2_to_the_32() -> None:
    ids = client_module._MsgIds(start=2**32 - 2)
    assert [ids.next() for _ in range(4)] == [2**32 - 2, 2**32 - 1, 0, 1]


def test_msgids_skip_ids_still_in_use() -> None:
    ids = client_module._MsgIds(start=2**32 - 1)
    assert ids.next({2**32 - 1, 0, 1}) == 2
    assert ids.next() == 3


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
