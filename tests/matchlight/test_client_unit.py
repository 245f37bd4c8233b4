"""``matchlight.client``'s pure parts: error mapping, retry policy, backoff, trace
injection, msgid wrap-around (the Trio client itself: ``test_client_async.py``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import trio.testing
from opentelemetry.sdk.trace import TracerProvider

import matchlight.errors
from matchlight.client import (
    IDEMPOTENT_METHODS,
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


def test_the_error_classes_are_the_errors_module_classes() -> None:
    """Server and client share one set: ``except NotFound`` means the same on both sides."""
    assert BadRequest is ErrorsBadRequest
    assert NotFound is ErrorsNotFound
    for cls in (Unauthorized, Forbidden, Overloaded, Unavailable, InternalError, RpcError):
        assert getattr(matchlight.errors, cls.__name__) is cls
    assert error_from_wire is matchlight.errors.error_from_wire


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
