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
    FORBIDDEN,
    INTERNAL,
    OVERLOADED,
    UNAUTHORIZED,
    UNAVAILABLE,
    BadRequest,
    RpcError,
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


@attrs.define(eq=False)
class RpcStatistics:
    connections_open: int = 0
    connections_total: int = 0
    connections_refused: int = 0
    connections_timed_out: int = 0
    requests: int = 0
    notifications: int = 0
    errors: int = 0
    protocol_errors: int = 0
    overloaded: int = 0
    unauthorized: int = 0
    forbidden: int = 0


@attrs.define(eq=False)
class Session:
    """One connection's state: its role and how its ``auth`` calls went."""

    role: str | None
    auth_failures: int = 0
    #: Close the connection once the current answer is sent (too many failed auths).
    close_after_reply: bool = False
    #: The connection's handling, cancelled to close it.
    scope: trio.CancelScope | None = None

    def close(self) -> None:
        if self.scope is not None:
            self.scope.cancel()


class RpcServer:
    """Dispatches decoded messages to ``methods`` (name → async handler of the params)."""

    def __init__(
        self,
        methods: Mapping[str, Handler],
        limits: Limits | None = None,
        *,
        tokens: auth.Tokens | None = None,
        telemetry: Telemetry = NOOP,
    ) -> None:
        self.methods = methods
        self.limits = limits or Limits()
        self.tokens = tokens
        self.telemetry = telemetry
        self.stats = RpcStatistics()
        #: A failure that repeats per request (a full disk) is logged once a minute per kind.
        self._log_errors = RateLimitedLog(log)
        self._draining = False
        self._in_flight = 0
        self._idle = trio.Event()
        self._idle.set()

    def start_draining(self) -> None:
        """Refuse new requests with ``unavailable``; in-flight ones finish."""
        self._draining = True

    async def wait_idle(self) -> None:
        """Wait until no request is in flight. A checkpoint."""
        await self._idle.wait()

    async def serve_stream(self, stream: trio.abc.Stream) -> None:
        """Serve one connection until the peer closes it, breaks a limit or sends bad bytes."""
        limits = self.limits
        if self.stats.connections_open >= limits.max_connections:
            self.stats.connections_refused += 1
            await trio.aclose_forcefully(stream)
            return
        self.stats.connections_open += 1
        self.stats.connections_total += 1
        unpacker = msgpack.Unpacker(
            raw=False,
            # Non-string keys reach validation and get a bad_request that names
            # the field; unhashable keys (arrays, maps) raise TypeError below.
            strict_map_key=False,
            max_buffer_size=limits.max_message_bytes,
            max_str_len=limits.max_message_bytes,
            max_bin_len=limits.max_message_bytes,
            max_array_len=limits.max_array_len,
            max_map_len=limits.max_map_len,
            max_ext_len=0,
        )
        session = Session(role=None if self.tokens is not None else auth.ADMIN)
        send_lock = trio.Lock()
        slots = trio.Semaphore(limits.max_in_flight)
        fed = 0  # bytes fed to the unpacker; unpacker.tell() is how many it consumed
        try:
            async with stream, trio.open_nursery() as nursery:
                session.scope = nursery.cancel_scope
                while True:
                    partial = fed > unpacker.tell()
                    if partial:
                        timeout = limits.message_timeout_s
                    elif slots.value == limits.max_in_flight:
                        timeout = limits.idle_timeout_s
                    else:
                        timeout = math.inf  # answers are pending: the peer waits for them
                    data: bytes | bytearray = b""
                    with trio.move_on_after(timeout) as waited:
                        try:
                            data = await stream.receive_some(limits.read_size)
                        except trio.BrokenResourceError:
                            break
                    if waited.cancelled_caught:
                        self.stats.connections_timed_out += 1
                        why = "a message arriving too slowly" if partial else "idle"
                        log.info("closing a connection: %s", why)
                        break
                    if not data:
                        break
                    fed += len(data)
                    try:
                        unpacker.feed(data)
                        messages = list(unpacker)
                    except (msgpack.UnpackException, ValueError, TypeError) as exc:
                        # Undecodable bytes, too deep (StackError), too large
                        # (BufferFull, or a header over a length limit), or an
                        # array or map used as a map key.
                        self.stats.protocol_errors += 1
                        log.info("closing connection on undecodable input: %r", exc)
                        return
                    for message in messages:
                        accepted = await self._accept(
                            message, stream, send_lock, slots, nursery, session
                        )
                        if not accepted:
                            return
                # Peer closed its side: finish in-flight requests, then close.
        except trio.BrokenResourceError:
            pass
        finally:
            self.stats.connections_open -= 1

    async def _accept(
        self,
        message: Any,
        stream: trio.abc.Stream,
        send_lock: trio.Lock,
        slots: trio.Semaphore,
        nursery: trio.Nursery,
        session: Session,
    ) -> bool:
        """Start handling one decoded message; False means close the connection."""
        if type(message) is not list or not message:
            self.stats.protocol_errors += 1
            return False
        kind = message[0]
        if kind == REQUEST and len(message) == 4:
            _, msgid, method, params = message
            if type(msgid) is not int or not 0 <= msgid < 2**32:
                self.stats.protocol_errors += 1
                return False
            if self._in_flight >= self.limits.max_in_flight_total:
                self.stats.overloaded += 1
                error = RpcError(OVERLOADED, "too many requests in flight; retry later")
                await self._send(stream, send_lock, [RESPONSE, msgid, error.to_wire(), None])
                return True
            await slots.acquire()
            self._begin()
            nursery.start_soon(
                self._request, msgid, method, params, stream, send_lock, slots, session
            )
            return True
        if kind == NOTIFICATION and len(message) == 3:
            _, method, params = message
            if self._in_flight >= self.limits.max_in_flight_total:
                self.stats.overloaded += 1  # nobody to tell: dropped, and counted
                return True
            await slots.acquire()
            self._begin()
            nursery.start_soon(self._notification, method, params, slots, session)
            return True
        if kind == REQUEST and len(message) >= 2 and type(message[1]) is int:
            await self._send(
                stream,
                send_lock,
                [
                    RESPONSE,
                    message[1],
                    BadRequest("a request is [0, msgid, method, params]").to_wire(),
                    None,
                ],
            )
            return True
        self.stats.protocol_errors += 1
        return False

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
            raise RpcError(UNAVAILABLE, "the server is shutting down")
        if type(method) is not str:
            raise BadRequest("method name must be a string")
        if method == "auth":
            return self._auth(params, session)
        handler = self.methods.get(method)
        if handler is None:
            raise BadRequest(f"unknown method {method!r}")
        if not auth.allowed(session.role, method):
            if session.role is None:
                self.stats.unauthorized += 1
                raise RpcError(UNAUTHORIZED, f"{method} needs a token: call auth first")
            self.stats.forbidden += 1
            raise RpcError(FORBIDDEN, f"role {session.role!r} may not call {method}")
        try:
            return await handler(params)
        except RpcError:
            raise
        except SystemClosedError as exc:
            raise RpcError(UNAVAILABLE, str(exc)) from exc
        except MatchlightError as exc:
            self._log_errors.warning(f"{method}/{type(exc).__name__}", "%s failed", method, exc=exc)
            raise RpcError(UNAVAILABLE, str(exc)) from exc
        except trio.TooSlowError as exc:
            raise RpcError(OVERLOADED, "request did not finish in time") from exc

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
            self.stats.unauthorized += 1
            if session.auth_failures >= self.limits.max_auth_failures:
                session.close_after_reply = True
            raise RpcError(UNAUTHORIZED, "invalid token")
        session.role = role
        return {"role": role}

    async def _request(
        self,
        msgid: int,
        method: Any,
        params: Any,
        stream: trio.abc.Stream,
        send_lock: trio.Lock,
        slots: trio.Semaphore,
        session: Session,
    ) -> None:
        self.stats.requests += 1
        try:
            try:
                result = await self._call(method, params, session)
                response = [RESPONSE, msgid, None, result]
            except RpcError as exc:
                self.stats.errors += 1
                response = [RESPONSE, msgid, exc.to_wire(), None]
            except Exception as exc:
                self.stats.errors += 1
                self._log_errors.error(
                    f"internal/{method}/{type(exc).__name__}",
                    "internal error in %r",
                    method,
                    exc=exc,
                )
                response = [RESPONSE, msgid, RpcError(INTERNAL, "internal error").to_wire(), None]
            sent = await self._send(stream, send_lock, response)
            if not sent or session.close_after_reply:
                session.close()
        finally:
            slots.release()
            self._end()

    async def _notification(
        self, method: Any, params: Any, slots: trio.Semaphore, session: Session
    ) -> None:
        self.stats.notifications += 1
        try:
            await self._call(method, params, session)
        except RpcError as exc:
            self.stats.errors += 1
            log.info("notification %r failed: %s", method, exc)
        except Exception as exc:
            self.stats.errors += 1
            self._log_errors.error(
                f"internal/{method}/{type(exc).__name__}",
                "internal error in notification %r",
                method,
                exc=exc,
            )
        finally:
            slots.release()
            self._end()

    async def _send(self, stream: trio.abc.Stream, lock: trio.Lock, response: list[Any]) -> bool:
        """Send one answer; False if the peer is gone or did not take it in time."""
        data = msgpack.packb(response, use_bin_type=True)
        try:
            with trio.fail_after(self.limits.send_timeout_s):
                async with lock:
                    await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False  # the peer went away; its answer has nowhere to go
        except trio.TooSlowError:
            self.stats.connections_timed_out += 1
            log.info("closing a connection that does not read its answers")
            return False
        return True
