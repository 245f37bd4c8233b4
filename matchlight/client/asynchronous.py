"""The Trio msgpack-RPC client (see :mod:`matchlight.client`)."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, TypeAlias

import trio

# The package's shared parts (private to matchlight.client).
from matchlight.client.common import (
    DEFAULT_HOST,
    DEFAULT_PORT,
    READ_SIZE,
    ClientClosed,
    ConnectionLost,
    RetryPolicy,
    _answers,
    _check_timeout,
    _Endpoint,
    _lost,
    _MsgIds,
    _new_unpacker,
    _outcome,
    _pack_notification,
    _pack_request,
    _policy,
    _settle,
    _timeout_error,
    inject_trace,
)
from matchlight.errors import Overloaded, RpcError, Unavailable

# -- the Trio client -----------------------------------------------------------------------------

_PENDING: Final[Any] = object()
_Reply: TypeAlias = tuple[Any, Any] | ConnectionLost


class _Connection:
    """One stream to the server, and the calls waiting for an answer on it."""

    def __init__(self, stream: trio.abc.Stream, name: str, send_timeout: float) -> None:
        self.stream = stream
        self.name = name
        self.send_timeout = send_timeout
        #: msgid → the one-shot channel of the call waiting for that answer.
        self.waiters: dict[int, trio.MemorySendChannel[_Reply]] = {}
        self.send_lock = trio.Lock()
        #: Cancelled to stop the reader, which then closes the stream.
        self.scope = trio.CancelScope()
        self.lost: ConnectionLost | None = None

    def lose(self, message: str, cause: BaseException | None = None) -> None:
        """Mark the connection broken: every waiting call gets ConnectionLost; the stream closes."""
        if self.lost is not None:
            return
        self.lost = _lost(message, cause)
        waiters, self.waiters = self.waiters, {}
        for channel in waiters.values():
            # A one-slot channel that was never sent to: never full.
            channel.send_nowait(_lost(message, cause))
        self.scope.cancel()

    async def send(self, data: bytes) -> None:
        """Send whole requests (one caller at a time). Raises ConnectionLost or TimeoutError.

        Shielded from the caller's cancellation, since half a message would
        leave the stream unusable for every other caller; bounded instead by
        the client's timeout, after which the connection is given up.
        """
        async with self.send_lock:
            if self.lost is not None:
                raise _lost(str(self.lost), self.lost.__cause__)
            try:
                with trio.CancelScope(shield=True) as scope:
                    scope.deadline = trio.current_time() + self.send_timeout
                    await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                self.lose(f"connection to {self.name} lost: {exc}", exc)
                raise _lost(f"connection to {self.name} lost: {exc}", exc) from exc
            if scope.cancelled_caught:
                self.lose(f"{self.name} did not take a request within {self.send_timeout:g} s")
                raise TimeoutError(f"{self.name} did not take a request in time")

    async def read_answers(self) -> None:
        """Hand each answer to the call waiting for its msgid, until the connection ends."""
        unpacker = _new_unpacker()
        message = f"{self.name} closed the connection"
        cause: BaseException | None = None
        try:
            with self.scope:
                while True:
                    data = await self.stream.receive_some(READ_SIZE)
                    if not data:
                        break
                    for msgid, error, result in _answers(unpacker, data):
                        channel = self.waiters.pop(msgid, None)
                        if channel is not None:  # else its call gave up: drop the answer
                            channel.send_nowait((error, result))
        except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
            message, cause = f"connection to {self.name} lost: {exc}", exc
        except ConnectionLost as exc:
            message, cause = str(exc), exc.__cause__
        finally:
            self.lose(message, cause)
            await trio.aclose_forcefully(self.stream)


class AsyncClient:
    """A Trio client: many tasks may call at once over its one connection.

    Made by :func:`open_client`, which owns the task that reads answers. Not
    for use from several Trio runs or threads.
    """

    def __init__(
        self,
        endpoint: _Endpoint,
        nursery: trio.Nursery,
        *,
        token: str | None,
        timeout: float,
        retry: RetryPolicy,
    ) -> None:
        self.endpoint = endpoint
        self.timeout = _check_timeout(timeout)
        self.retry = retry
        #: The role ``auth`` gave this client's token (``None`` without a token).
        self.role: str | None = None
        self._token = token
        self._nursery = nursery
        self._ids = _MsgIds()
        self._conn: _Connection | None = None
        self._connect_lock = trio.Lock()
        self._closed = False

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """One request: its result map. A checkpoint.

        Each attempt is bounded by the client's ``timeout``; for a deadline on
        the whole call (retries included) wrap it in :func:`trio.fail_after`.

        Raises:
            RpcError: the error answer, as the subclass of its code.
            ConnectionLost: the connection broke (after any retries).
            TimeoutError: no answer within the client's ``timeout`` (after any retries).
            OSError: the server could not be reached again.
            ClientClosed: the client was closed.
        """
        (result,) = await self.call_many([(method, params)])
        if isinstance(result, RpcError):
            raise result
        return result

    async def call_many(self, calls: Iterable[tuple[str, Mapping[str, Any] | None]]) -> list[Any]:
        """Pipeline requests: results in call order, error answers as :class:`RpcError` values.

        Failed idempotent calls are sent again (together) per the retry policy.
        Raises :class:`OSError` (ConnectionLost, TimeoutError, …) if a call got
        no answer in the end. A checkpoint.
        """
        batch = [(method, inject_trace(params)) for method, params in calls]
        methods = [method for method, _ in batch]
        results: list[Any] = [None] * len(batch)
        todo = list(range(len(batch)))
        delays = self.retry.delays()
        attempt = 0
        if not todo:
            await trio.lowlevel.checkpoint()
        while todo:
            outcomes, sent = await self._attempt([batch[i] for i in todo])
            todo = _settle(
                self.retry, methods, todo, outcomes, results, attempt < len(delays), sent
            )
            if todo:
                await trio.sleep(delays[attempt])
                attempt += 1
        return results

    async def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        """Send a notification: no answer, no retry. A checkpoint.

        Raises ConnectionLost, TimeoutError or OSError if it could not be sent.
        """
        data = _pack_notification(method, inject_trace(params))
        with trio.move_on_after(self.timeout) as scope:
            conn = await self._connection()
            await conn.send(data)
        if scope.cancelled_caught:
            raise _timeout_error(str(self.endpoint), self.timeout)

    async def aclose(self) -> None:
        """Close the connection: calls still waiting get ConnectionLost, later ones ClientClosed."""
        self._closed = True
        if self._conn is not None:
            self._conn.lose("the client was closed")
        await trio.lowlevel.checkpoint()

    # -- internals ------------------------------------------------------------------------------

    async def _attempt(
        self, batch: list[tuple[str, Mapping[str, Any] | None]]
    ) -> tuple[list[Any], bool]:
        """Send ``batch`` once: each call's result, RpcError, or OSError (no answer), and
        whether it was sent (False: no connection could be made for it)."""
        outcomes: list[Any] = [_PENDING] * len(batch)
        sent = False
        with trio.move_on_after(self.timeout) as scope:
            try:
                conn = await self._connection()
            except (Overloaded, Unavailable, ssl.SSLEOFError) as exc:
                return [exc] * len(batch), False
            except ssl.SSLError:
                raise  # a certificate or protocol mismatch: repeating will not help
            except OSError as exc:
                return [exc] * len(batch), False
            sent = True
            await self._exchange(conn, batch, outcomes)
        if scope.cancelled_caught:
            expired = _timeout_error(str(self.endpoint), self.timeout)
            outcomes = [expired if o is _PENDING else o for o in outcomes]
        return outcomes, sent

    async def _exchange(
        self,
        conn: _Connection,
        batch: list[tuple[str, Mapping[str, Any] | None]],
        outcomes: list[Any],
    ) -> None:
        """Send ``batch`` on ``conn`` and fill in ``outcomes`` as answers come."""
        msgids: list[int] = []
        receivers: list[trio.MemoryReceiveChannel[_Reply]] = []
        try:
            chunks = []
            for method, params in batch:
                msgid = self._ids.next(conn.waiters)
                send, receive = trio.open_memory_channel[_Reply](1)
                conn.waiters[msgid] = send
                msgids.append(msgid)
                receivers.append(receive)
                chunks.append(_pack_request(msgid, method, params))
            try:
                await conn.send(b"".join(chunks))
            except OSError as exc:
                outcomes[:] = [exc] * len(outcomes)
                return
            for k, receive in enumerate(receivers):
                reply = await receive.receive()
                outcomes[k] = reply if isinstance(reply, ConnectionLost) else _outcome(*reply)
        finally:
            for msgid in msgids:
                conn.waiters.pop(msgid, None)

    async def _connection(self) -> _Connection:
        """The open connection, made (and authenticated) first if there is none."""
        conn = self._conn
        if conn is not None and conn.lost is None:
            return conn
        async with self._connect_lock:
            if self._closed:
                raise ClientClosed("the client is closed")
            conn = self._conn
            if conn is None or conn.lost is not None:
                conn = await self._open_connection()
                if self._closed:  # closed while we connected: its reader must not outlive us
                    conn.lose("the client was closed")
                    raise ClientClosed("the client is closed")
                self._conn = conn
            return conn

    async def _open_connection(self) -> _Connection:
        stream = await self._open_stream()
        conn = _Connection(stream, str(self.endpoint), self.timeout)
        self._nursery.start_soon(conn.read_answers)
        try:
            if self._token is not None:
                outcomes: list[Any] = [_PENDING]
                await self._exchange(conn, [("auth", {"token": self._token})], outcomes)
                (answer,) = outcomes
                if isinstance(answer, BaseException):
                    raise answer
                self.role = answer.get("role") if isinstance(answer, Mapping) else None
        except BaseException:
            conn.lose("gave up while connecting")
            raise
        return conn

    async def _open_stream(self) -> trio.abc.Stream:
        endpoint = self.endpoint
        stream: trio.abc.Stream
        if endpoint.address.unix is not None:
            stream = await trio.open_unix_socket(endpoint.address.unix)
        else:
            stream = await trio.open_tcp_stream(endpoint.address.host, endpoint.address.port)
        if endpoint.tls is None:
            return stream
        secure = trio.SSLStream(stream, endpoint.tls, server_hostname=endpoint.server_hostname)
        try:
            await secure.do_handshake()
        except trio.BrokenResourceError as exc:
            await trio.aclose_forcefully(stream)
            cause = exc.__cause__
            if isinstance(cause, ssl.SSLError) and not isinstance(cause, ssl.SSLEOFError):
                raise cause from None
            raise _lost(f"TLS handshake with {endpoint} failed: {exc}", exc) from exc
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return secure


@asynccontextmanager
async def open_client(
    host: str = DEFAULT_HOST,
    port: int = DEFAULT_PORT,
    *,
    unix: str | None = None,
    # Not a deadline for this call (ASYNC109): the bound of each attempt of every call.
    timeout: float = 30.0,  # noqa: ASYNC109
    token: str | None = None,
    tls: bool | ssl.SSLContext = False,
    server_hostname: str | None = None,
    retries: int | RetryPolicy = 3,
) -> AsyncIterator[AsyncClient]:
    """Connect (and authenticate with ``token``) for the duration of the block.

    Arguments as for :class:`Client`. Raises :class:`OSError` if the server
    cannot be reached (TimeoutError after ``timeout``), :class:`Unauthorized` if
    the token is refused. On exit the connection closes.
    """
    try:
        async with trio.open_nursery() as nursery:
            client = AsyncClient(
                _Endpoint.of(host, port, unix, tls, server_hostname),
                nursery,
                token=token,
                timeout=timeout,
                retry=_policy(retries),
            )
            try:
                with trio.move_on_after(client.timeout) as scope:
                    await client._connection()
                if scope.cancelled_caught:
                    raise TimeoutError(f"no connection to {client.endpoint} within {timeout:g} s")
                yield client
            finally:
                await client.aclose()
    except BaseExceptionGroup as group:
        # The reader task never raises, so this is the block's (or connect's)
        # own exception, wrapped by the nursery: raise it as it was.
        if len(group.exceptions) == 1:
            exc = group.exceptions[0]
            raise exc from exc.__cause__
        raise
