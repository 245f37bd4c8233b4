"""msgpack-RPC over a byte stream: framing, pipelining, per-connection isolation.

Spec: a request is ``[0, msgid, method, params]``, answered by
``[1, msgid, error, result]``; a notification ``[2, method, params]`` gets no
answer. Requests on one connection are handled concurrently (pipelining) and
answered as they finish, so responses may come out of order.

Input that cannot be decoded as msgpack closes that connection (there is no
msgid to answer); a decodable message of the wrong shape is answered with
``bad_request`` when it has an integer msgid and otherwise closes the
connection. Nothing one connection sends affects another.

Limits (:class:`Limits`) bound what one peer can make the server hold: the
size of a message and of its arrays, maps and strings (the msgpack
unpacker's own limits, checked from the headers before anything is
allocated), requests in flight per connection (reading pauses: backpressure)
and in total (beyond it requests are answered ``overloaded``), connections in
total (beyond it new ones are closed at once), and time: a connection idle
with nothing in flight, a message that arrives too slowly (slowloris), or a
peer that does not read its answers is closed.

Authentication (:mod:`matchlight.server.auth`): with tokens configured a connection
may call ``health`` and ``auth`` only until ``auth {token}`` gives it a
role; other calls are ``unauthorized``, and calls beyond the role's rights
``forbidden``. Without tokens every connection may call every method.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs
import msgpack
import trio

from actors import MatchlightError, RateLimitedLog, SystemClosedError
from matchlight.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    Overloaded,
    RpcError,
    Unauthorized,
    Unavailable,
)
from matchlight.server import auth, validation
from matchlight.server.telemetry import NOOP, OTHER_METHOD, Telemetry

log = logging.getLogger(__name__)

REQUEST: Final = 0
RESPONSE: Final = 1
NOTIFICATION: Final = 2

Handler = Callable[[Any], Awaitable[Mapping[str, Any]]]


@attrs.frozen(kw_only=True)
class Limits:
    #: Largest message (and so largest string or binary in one).
    max_message_bytes: int = 16 << 20
    #: Longest array and map in a message (a batch of events is one array).
    max_array_len: int = 1_000_000
    max_map_len: int = 100_000
    #: Requests handled at once per connection; beyond it reading pauses.
    max_in_flight: int = 64
    #: Requests handled at once in the whole server; beyond it answers are ``overloaded``.
    max_in_flight_total: int = 4096
    #: Open connections; beyond it new ones are closed at once.
    max_connections: int = 1024
    #: Close a connection with nothing in flight and nothing sent for this long.
    idle_timeout_s: float = 300.0
    #: Close a connection whose message started arriving this long ago and is still incomplete.
    message_timeout_s: float = 30.0
    #: Close a connection that does not take an answer for this long.
    send_timeout_s: float = 30.0
    #: Close a connection after this many failed ``auth`` calls.
    max_auth_failures: int = 5
    read_size: int = 256 << 10


@attrs.frozen(kw_only=True)
class RpcStatistics:
    """What the RPC layer has done since the server started (the ``stats`` contract's order)."""

    connections_open: int
    connections_total: int
    requests: int
    notifications: int
    #: Requests and notifications answered (or dropped) with an error.
    request_errors: int
    #: Input that is not msgpack-RPC; the connection was closed.
    protocol_errors: int
    connections_refused: int
    connections_timed_out: int
    overloaded: int
    unauthorized: int
    forbidden: int


@attrs.define(eq=False, kw_only=True)
class RpcCounters:
    """The live counts behind :class:`RpcStatistics` (the same fields).

    An :class:`RpcServer` counts into them; they are made apart from it so
    that the ``stats`` method can read them although the server is built from
    the methods.
    """

    connections_open: int = 0
    connections_total: int = 0
    requests: int = 0
    notifications: int = 0
    request_errors: int = 0
    protocol_errors: int = 0
    connections_refused: int = 0
    connections_timed_out: int = 0
    overloaded: int = 0
    unauthorized: int = 0
    forbidden: int = 0

    def statistics(self) -> RpcStatistics:
        """The counts as of now, frozen."""
        return RpcStatistics(**attrs.asdict(self))


@attrs.define(eq=False, kw_only=True)
class Session:
    """One connection's state: its role and how its ``auth`` calls went."""

    role: str | None
    #: The connection's handling, cancelled to close it.
    scope: trio.CancelScope
    auth_failures: int = 0
    #: Close the connection once the current answer is sent (too many failed auths).
    close_after_reply: bool = False

    def close(self) -> None:
        """Cut the connection off: its requests in flight are cancelled, unanswered."""
        self.scope.cancel()


@attrs.define(eq=False, kw_only=True)
class _Connection:
    """What serving one connection needs: its stream, decoder, send lock, slots and session."""

    stream: trio.abc.Stream
    session: Session
    unpacker: Any
    #: Serialises answers: requests finish concurrently, their bytes must not interleave.
    send_lock: trio.Lock = attrs.field(factory=trio.Lock)
    #: One per request in flight on this connection (``Limits.max_in_flight``).
    slots: trio.Semaphore
    #: Where the connection's requests run; cancelled to close the connection.
    nursery: trio.Nursery
    #: Bytes fed to the unpacker; ``unpacker.tell()`` is how many it consumed.
    fed: int = 0

    def partial_message(self) -> bool:
        """Whether a message has started arriving and is not complete yet."""
        consumed: int = self.unpacker.tell()
        return self.fed > consumed


class RpcServer:
    """Dispatches decoded messages to ``methods`` (name → async handler of the params).

    Counts what it does in ``counters`` (a new :class:`RpcCounters` unless given).
    """

    def __init__(
        self,
        methods: Mapping[str, Handler],
        limits: Limits | None = None,
        *,
        counters: RpcCounters | None = None,
        tokens: auth.Tokens | None = None,
        telemetry: Telemetry = NOOP,
    ) -> None:
        self.methods = methods
        self.limits = limits or Limits()
        self.tokens = tokens
        self.telemetry = telemetry
        self._counters = RpcCounters() if counters is None else counters
        #: A failure that repeats per request (a full disk) is logged once a minute per kind.
        self._log_errors = RateLimitedLog(log)
        self._draining = False
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    @property
    def counters(self) -> RpcCounters:
        """What this server counts (live)."""
        return self._counters

    def start_draining(self) -> None:
        """Refuse new requests with ``unavailable``; in-flight ones finish."""
        self._draining = True

    async def wait_idle(self) -> None:
        """Wait until no request is in flight. A checkpoint."""
        await self._idle.wait()

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until the peer closes it, breaks a limit or sends bad bytes.

        Requests in flight finish, and are answered, before the stream closes,
        unless the connection is cut off (an answer not taken in time, too many
        failed ``auth`` calls).
        """
        counters = self._counters
        if counters.connections_open >= self.limits.max_connections:
            counters.connections_refused += 1
            await trio.aclose_forcefully(stream)
            return
        counters.connections_open += 1
        counters.connections_total += 1
        try:
            async with stream, trio.open_nursery() as nursery:
                session = Session(
                    role=None if self.tokens is not None else auth.ADMIN,
                    scope=nursery.cancel_scope,
                )
                connection = _Connection(
                    stream=stream,
                    session=session,
                    unpacker=self._new_unpacker(),
                    slots=trio.Semaphore(self.limits.max_in_flight),
                    nursery=nursery,
                )
                await self._read_requests(connection)
        except trio.BrokenResourceError:
            pass
        finally:
            counters.connections_open -= 1

    def _new_unpacker(self) -> Any:
        """A decoder that refuses, from the headers, anything beyond :attr:`limits`."""
        limits = self.limits
        return msgpack.Unpacker(
            raw=False,
            # Non-string keys reach validation and get a bad_request that names
            # the field; unhashable keys (arrays, maps) raise TypeError in _decode.
            strict_map_key=False,
            max_buffer_size=limits.max_message_bytes,
            max_str_len=limits.max_message_bytes,
            max_bin_len=limits.max_message_bytes,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=0,
        )

    async def _read_requests(self, connection: _Connection) -> None:
        """Read, decode and start handling messages until the connection should close."""
        while True:
            data = await self._receive(connection)
            if not data:
                return
            messages = self._decode(connection, data)
            if messages is None:
                return
            for message in messages:
                if not await self._accept(message, connection):
                    return

    async def _receive(self, connection: _Connection) -> bytes | bytearray:
        """The next bytes from the peer; empty when it closed, broke, or waited too long.

        The wait is bounded by ``message_timeout_s`` inside a message, by
        ``idle_timeout_s`` with nothing in flight, and not at all while answers
        are pending (the peer is waiting for them).
        """
        limits = self.limits
        partial = connection.partial_message()
        if partial:
            timeout = limits.message_timeout_s
        elif connection.slots.value == limits.max_in_flight:
            timeout = limits.idle_timeout_s
        else:
            timeout = math.inf
        data: bytes | bytearray = b""
        with trio.move_on_after(timeout) as waited:
            try:
                data = await connection.stream.receive_some(limits.read_size)
            except trio.BrokenResourceError:
                return b""
        if waited.cancelled_caught:
            self._counters.connections_timed_out += 1
            why = "a message arriving too slowly" if partial else "idle"
            log.info("closing a connection: %s", why)
        return data

    def _decode(self, connection: _Connection, data: bytes | bytearray) -> list[Any] | None:
        """The complete messages ``data`` finishes; ``None`` if it cannot be decoded."""
        connection.fed += len(data)
        try:
            connection.unpacker.feed(data)
            return list(connection.unpacker)
        except (msgpack.UnpackException, ValueError, TypeError) as exc:
            # Undecodable bytes, too deep (StackError), too large (BufferFull, or
            # a header over a length limit), or an array or map used as a map key.
            self._counters.protocol_errors += 1
            log.info("closing connection on undecodable input: %r", exc)
            return None

    async def _accept(self, message: Any, connection: _Connection) -> bool:
        """Start handling one decoded message; False means close the connection."""
        counters = self._counters
        if type(message) is not list or not message:
            counters.protocol_errors += 1
            return False
        kind = message[0]
        if kind == REQUEST and len(message) == 4:
            _, msgid, method, params = message
            if type(msgid) is not int or not 0 <= msgid < 2**32:
                counters.protocol_errors += 1
                return False
            if self._in_flight >= self.limits.max_in_flight_total:
                counters.overloaded += 1
                overloaded = Overloaded("too many requests in flight; retry later")
                await self._send(connection, [RESPONSE, msgid, overloaded.to_wire(), None])
                return True
            await self._start(connection, self._request, msgid, method, params)
            return True
        if kind == NOTIFICATION and len(message) == 3:
            _, method, params = message
            if self._in_flight >= self.limits.max_in_flight_total:
                counters.overloaded += 1  # nobody to tell: dropped, and counted
                return True
            await self._start(connection, self._notification, method, params)
            return True
        if kind == REQUEST and len(message) >= 2 and type(message[1]) is int:
            malformed = BadRequest("a request is [0, msgid, method, params]")
            await self._send(connection, [RESPONSE, message[1], malformed.to_wire(), None])
            return True
        counters.protocol_errors += 1
        return False

    async def _start(
        self,
        connection: _Connection,
        handle: Callable[..., Awaitable[None]],
        *args: Any,
    ) -> None:
        """Take a slot (waiting for one: backpressure) and handle a message in the background."""
        await connection.slots.acquire()
        self._begin()
        connection.nursery.start_soon(handle, connection, *args)

    def _begin(self) -> None:
        self._in_flight += 1
        self._idle = trio.Event() if self._idle.is_set() else self._idle

    def _end(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()

    async def _call(self, method: Any, params: Any, session: Session) -> Mapping[str, Any]:
        """Handle one call inside its SERVER span (a child of the caller's ``_trace``, if any)."""
        known = type(method) is str and (method in self.methods or method == "auth")
        with self.telemetry.server_span(method if known else OTHER_METHOD, params):
            return await self._dispatch(method, params, session)

    async def _dispatch(self, method: Any, params: Any, session: Session) -> Mapping[str, Any]:
        if self._draining:
            raise Unavailable("the server is shutting down")
        if type(method) is not str:
            raise BadRequest("method name must be a string")
        if method == "auth":
            return self._auth(params, session)
        handler = self.methods.get(method)
        if handler is None:
            raise BadRequest(f"unknown method {method!r}")
        if not auth.allowed(session.role, method):
            if session.role is None:
                self._counters.unauthorized += 1
                raise Unauthorized(f"{method} needs a token: call auth first")
            self._counters.forbidden += 1
            raise Forbidden(f"role {session.role!r} may not call {method}")
        try:
            return await handler(params)
        except RpcError:
            raise
        except SystemClosedError as exc:
            raise Unavailable(str(exc)) from exc
        except MatchlightError as exc:
            self._log_errors.warning(f"{method}/{type(exc).__name__}", "%s failed", method, exc=exc)
            raise Unavailable(str(exc)) from exc
        except trio.TooSlowError as exc:
            raise Overloaded("request did not finish in time") from exc

    def _auth(self, params: Any, session: Session) -> Mapping[str, Any]:
        """``auth {token}`` → ``{role}``; gives the connection the token's role."""
        p = validation.params_map(params)
        token = validation.require(p, "token")
        if type(token) is not str:
            raise BadRequest("token: expected a string")
        if self.tokens is None:
            session.role = auth.ADMIN  # no tokens configured: everyone may do everything
            return {"role": auth.ADMIN}
        role = self.tokens.role_of(token)
        if role is None:
            session.auth_failures += 1
            self._counters.unauthorized += 1
            if session.auth_failures >= self.limits.max_auth_failures:
                session.close_after_reply = True
            raise Unauthorized("invalid token")
        session.role = role
        return {"role": role}

    async def _request(self, connection: _Connection, msgid: int, method: Any, params: Any) -> None:
        """Handle one request and send its answer (an error answer for any failure)."""
        session = connection.session
        self._counters.requests += 1
        try:
            try:
                result = await self._call(method, params, session)
                response = [RESPONSE, msgid, None, result]
            except RpcError as exc:
                self._counters.request_errors += 1
                response = [RESPONSE, msgid, exc.to_wire(), None]
            except Exception as exc:
                self._counters.request_errors += 1
                self._log_errors.error(
                    f"internal/{method}/{type(exc).__name__}",
                    "internal error in %r",
                    method,
                    exc=exc,
                )
                response = [RESPONSE, msgid, InternalError("internal error").to_wire(), None]
            sent = await self._send(connection, response)
            if not sent or session.close_after_reply:
                session.close()
        finally:
            connection.slots.release()
            self._end()

    async def _notification(self, connection: _Connection, method: Any, params: Any) -> None:
        """Handle one notification: no answer, so a failure is only counted and logged."""
        self._counters.notifications += 1
        try:
            await self._call(method, params, connection.session)
        except RpcError as exc:
            self._counters.request_errors += 1
            log.info("notification %r failed: %s", method, exc)
        except Exception as exc:
            self._counters.request_errors += 1
            self._log_errors.error(
                f"internal/{method}/{type(exc).__name__}",
                "internal error in notification %r",
                method,
                exc=exc,
            )
        finally:
            connection.slots.release()
            self._end()

    async def _send(self, connection: _Connection, response: list[Any]) -> bool:
        """Send one answer; False if the peer is gone or did not take it in time."""
        data = msgpack.packb(response, use_bin_type=True)
        try:
            with trio.fail_after(self.limits.send_timeout_s):
                async with connection.send_lock:
                    await connection.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # the peer went away; its answer has nowhere to go
        except trio.TooSlowError:
            self._counters.connections_timed_out += 1
            log.info("closing a connection that does not read its answers")
            return False
        return True
