"""What both clients share: transport errors, the retry policy, and the wire format."""

from __future__ import annotations

import ssl
from collections.abc import Container, Mapping, Sequence
from typing import Any, Final

import attrs
import msgpack
import trio
from opentelemetry import trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from matchlight.address import Address
from matchlight.errors import Overloaded, Unavailable, error_from_wire

DEFAULT_HOST: Final = "127.0.0.1"
DEFAULT_PORT: Final = 7420
READ_SIZE: Final = 256 << 10
_MSGID_MASK: Final = 2**32 - 1


# -- transport errors (error answers are matchlight.errors classes) -------------------------


class ConnectionLost(ConnectionError):
    """The connection broke (or the server sent something that is not msgpack-RPC)
    before the answer arrived; whether the server acted on the request is unknown."""


class ClientClosed(trio.ClosedResourceError):
    """The client was closed by its owner; it makes no more calls."""


def _lost(message: str, cause: BaseException | None = None) -> ConnectionLost:
    exc = ConnectionLost(message)
    exc.__cause__ = cause
    return exc


# -- retries --------------------------------------------------------------------------------------

#: Methods whose repetition is harmless. ``ingest`` is one because event ids are
#: idempotency keys; ``recommend`` may log one more decision record.
IDEMPOTENT_METHODS: Final = frozenset(
    {"health", "auth", "get_item", "get_user", "search", "recommend", "stats", "ingest"}
)


@attrs.frozen(kw_only=True)
class RetryPolicy:
    """Which failed calls are sent again, and after which pauses.

    ``retries`` is how many times a call may be repeated after its first
    attempt; the n-th repeat waits ``min(first_delay * 2**(n-1), max_delay)``.
    """

    retries: int = attrs.field(default=3, validator=attrs.validators.ge(0))
    first_delay: float = 0.05
    max_delay: float = 2.0
    methods: frozenset[str] = IDEMPOTENT_METHODS

    def delays(self) -> tuple[float, ...]:
        """The pause before each repeat, in order."""
        return tuple(min(self.first_delay * 2**n, self.max_delay) for n in range(self.retries))

    def should_retry(self, method: str, outcome: object, *, sent: bool = True) -> bool:
        """Whether a call of ``method`` that ended with ``outcome`` may be sent again.

        Transient failures only: the connection broke or could not be made,
        no answer in time (both :class:`OSError`), :class:`Overloaded`,
        :class:`Unavailable`; and only for :attr:`methods`, unless the call was
        never ``sent`` (no connection could be made for it).
        """
        transient = isinstance(outcome, OSError | Overloaded | Unavailable)
        return transient and (method in self.methods or not sent)


def _policy(retries: int | RetryPolicy) -> RetryPolicy:
    return retries if isinstance(retries, RetryPolicy) else RetryPolicy(retries=retries)


def _settle(
    policy: RetryPolicy,
    methods: Sequence[str],
    todo: Sequence[int],
    outcomes: Sequence[Any],
    results: list[Any],
    may_retry: bool,
    sent: bool = True,
) -> list[int]:
    """Record one attempt's ``outcomes`` of calls ``todo``; return the calls to send again.

    Raises the transport failure (:class:`OSError`) of a call that is not retried.
    """
    again = []
    for i, outcome in zip(todo, outcomes, strict=True):
        results[i] = outcome
        if may_retry and policy.should_retry(methods[i], outcome, sent=sent):
            again.append(i)
    retried = set(again)
    for i in todo:
        if i not in retried and isinstance(results[i], OSError):
            raise results[i]
    return again


# -- wire ------------------------------------------------------------------------------------------

_PROPAGATOR: Final = TraceContextTextMapPropagator()


def inject_trace(params: Mapping[str, Any] | None) -> Mapping[str, Any] | None:
    """``params`` plus ``_trace`` (W3C trace context) if a valid span is current.

    The one way a caller's trace reaches the server (whose
    :meth:`~matchlight.server.telemetry.Telemetry.server_span` reads it back).
    Params that already carry ``_trace`` are returned unchanged (a ``_trace``
    the caller set itself is kept, as README promises), as are params when no
    span is current; otherwise a new map, and ``params`` is not modified. Uses
    the W3C propagator whatever the global propagator is.
    """
    if params is not None and "_trace" in params:
        return params
    if not trace.get_current_span().get_span_context().is_valid:
        return params
    carrier: dict[str, str] = {}
    _PROPAGATOR.inject(carrier)
    if "traceparent" not in carrier:
        return params
    return {**(params or {}), "_trace": carrier}


class _MsgIds:
    """Request ids 0, 1, …, 2**32 - 1, then 0 again, skipping ids still in use."""

    def __init__(self, start: int = 0) -> None:
        self._next = start & _MSGID_MASK

    def next(self, in_use: Container[int] = ()) -> int:
        while True:
            msgid = self._next
            self._next = (msgid + 1) & _MSGID_MASK
            if msgid not in in_use:
                return msgid


def _pack_request(msgid: int, method: str, params: Mapping[str, Any] | None) -> bytes:
    data: bytes = msgpack.packb([0, msgid, method, [] if params is None else [params]])
    return data


def _pack_notification(method: str, params: Mapping[str, Any] | None) -> bytes:
    data: bytes = msgpack.packb([2, method, [] if params is None else [params]])
    return data


def _new_unpacker() -> Any:
    return msgpack.Unpacker(raw=False, strict_map_key=False)


def _answers(unpacker: Any, data: bytes | bytearray) -> list[tuple[int, Any, Any]]:
    """Decode ``data`` into ``(msgid, error, result)`` answers.

    Raises ConnectionLost if it is not msgpack-RPC responses.
    """
    try:
        unpacker.feed(data)
        messages = list(unpacker)
    except (msgpack.UnpackException, ValueError, TypeError) as exc:
        raise _lost(f"undecodable answer from the server: {exc}", exc) from exc
    answers = []
    for message in messages:
        if type(message) is not list or len(message) != 4 or message[0] != 1:
            raise _lost(f"the server sent a message that is not a response: {message!r:.200}")
        msgid = message[1]
        if type(msgid) is not int:
            raise _lost(f"the server sent a response with msgid {msgid!r:.50}")
        answers.append((msgid, message[2], message[3]))
    return answers


def _outcome(error: Any, result: Any) -> Any:
    """The result of an answer, or the :class:`~matchlight.errors.RpcError` its error stands for."""
    return result if error is None else error_from_wire(error)


def _timeout_error(where: str, timeout: float) -> TimeoutError:
    return TimeoutError(f"no answer from {where} within {timeout:g} s")


@attrs.frozen(kw_only=True)
class _Endpoint:
    """The server's address and how to secure the connection to it."""

    address: Address
    tls: ssl.SSLContext | None
    server_hostname: str | None

    @classmethod
    def of(
        cls,
        host: str,
        port: int,
        unix: str | None,
        tls: bool | ssl.SSLContext,
        server_hostname: str | None,
    ) -> _Endpoint:
        context = ssl.create_default_context() if tls is True else tls or None
        if server_hostname is None and unix is None:
            server_hostname = host
        address = Address(host=host, port=port, unix=unix)
        return cls(address=address, tls=context, server_hostname=server_hostname)

    def __str__(self) -> str:
        return str(self.address)


def _check_timeout(timeout: float) -> float:
    if not timeout > 0:
        raise ValueError(f"timeout must be greater than 0, got {timeout!r}")
    return timeout
