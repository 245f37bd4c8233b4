"""The blocking msgpack-RPC client (see :mod:`matchlight.client`)."""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

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

# -- the blocking client ---------------------------------------------------------------------


class Client:
    """A blocking client over one connection, reused across calls and made again when it breaks.

    Connects (and authenticates with ``token``) at once: the constructor raises
    :class:`OSError` if the server cannot be reached, :class:`Unauthorized` if
    the token is refused. ``tls`` is ``True`` (verify against the system's
    certificate authorities) or an :class:`ssl.SSLContext`; ``server_hostname``
    is the name the certificate must carry (default ``host``). ``timeout`` (s)
    bounds each attempt of a call, connecting included; ``retries`` is a count
    or a :class:`RetryPolicy`.

    Not thread-safe: use one client per thread.
    """

    def __init__(
        self,
        host: str = DEFAULT_HOST,
        port: int = DEFAULT_PORT,
        *,
        unix: str | None = None,
        timeout: float = 30.0,
        token: str | None = None,
        tls: bool | ssl.SSLContext = False,
        server_hostname: str | None = None,
        retries: int | RetryPolicy = 3,
    ) -> None:
        self.endpoint = _Endpoint.of(host, port, unix, tls, server_hostname)
        self.timeout = _check_timeout(timeout)
        self.retry = _policy(retries)
        #: The role ``auth`` gave this client's token (``None`` without a token).
        self.role: str | None = None
        self._token = token
        self._sock: socket.socket | None = None
        self._unpacker = _new_unpacker()
        self._ids = _MsgIds()
        self._waiting: set[int] = set()  # msgids whose answers we still want
        self._answers: dict[int, tuple[Any, Any]] = {}
        self._closed = False
        self._connect(time.monotonic() + self.timeout, self.timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection; later calls raise :class:`ClientClosed`. Idempotent."""
        self._closed = True
        self._disconnect()

    def call(
        self, method: str, params: Mapping[str, Any] | None = None, *, timeout: float | None = None
    ) -> Any:
        """One request: its result map.

        Raises:
            RpcError: the error answer, as the subclass of its code.
            ConnectionLost: the connection broke (after any retries).
            TimeoutError: no answer within ``timeout`` (default: the client's), after any retries.
            OSError: the server could not be reached again.
        """
        (result,) = self.call_many([(method, params)], timeout=timeout)
        if isinstance(result, RpcError):
            raise result
        return result

    def call_many(
        self,
        calls: Iterable[tuple[str, Mapping[str, Any] | None]],
        *,
        timeout: float | None = None,
    ) -> list[Any]:
        """Pipeline requests: results in call order, error answers as :class:`RpcError` values.

        Failed idempotent calls are sent again (together) per the retry policy.
        Raises :class:`OSError` (ConnectionLost, TimeoutError, …) if a call
        got no answer in the end.
        """
        batch = [(method, inject_trace(params)) for method, params in calls]
        methods = [method for method, _ in batch]
        results: list[Any] = [None] * len(batch)
        todo = list(range(len(batch)))
        delays = self.retry.delays()
        attempt = 0
        while todo:
            outcomes, sent = self._attempt([batch[i] for i in todo], timeout)
            todo = _settle(
                self.retry, methods, todo, outcomes, results, attempt < len(delays), sent
            )
            if todo:
                time.sleep(delays[attempt])
                attempt += 1
        return results

    def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        """Send a notification: no answer, no retry (reconnects first if the connection broke)."""
        data = _pack_notification(method, inject_trace(params))
        deadline = time.monotonic() + self.timeout
        sock = self._sock if self._poll() else None
        if sock is None:
            sock = self._connect(deadline, self.timeout)
        try:
            self._send(sock, data, deadline)
        except OSError as exc:
            self._disconnect()
            if isinstance(exc, TimeoutError):
                raise _timeout_error(str(self.endpoint), self.timeout) from exc
            raise _lost(f"connection to {self.endpoint} lost: {exc}", exc) from exc

    # -- internals ------------------------------------------------------------------------------

    def _attempt(
        self, batch: list[tuple[str, Mapping[str, Any] | None]], timeout: float | None
    ) -> tuple[list[Any], bool]:
        """Send ``batch`` once: each call's result, RpcError, or OSError (no answer), and
        whether it was sent (False: no connection could be made for it)."""
        timeout = self.timeout if timeout is None else _check_timeout(timeout)
        deadline = time.monotonic() + timeout
        try:
            if not self._poll():
                self._connect(deadline, timeout)
        except (Overloaded, Unavailable, ssl.SSLEOFError) as exc:
            return [exc] * len(batch), False
        except ssl.SSLError:
            raise  # a certificate or protocol mismatch: repeating will not help
        except OSError as exc:
            return [exc] * len(batch), False
        return self._exchange(batch, deadline, timeout), True

    def _exchange(
        self, batch: list[tuple[str, Mapping[str, Any] | None]], deadline: float, timeout: float
    ) -> list[Any]:
        sock = self._sock
        assert sock is not None
        msgids = []
        try:
            chunks = []
            for method, params in batch:
                msgid = self._ids.next(self._waiting)
                self._waiting.add(msgid)
                msgids.append(msgid)
                chunks.append(_pack_request(msgid, method, params))
            failure: OSError | None = None
            try:
                self._send(sock, b"".join(chunks), deadline)
            except OSError as exc:  # maybe half a message on the wire: the stream is unusable
                self._disconnect()
                failure = (
                    _timeout_error(str(self.endpoint), timeout)
                    if isinstance(exc, TimeoutError)
                    else _lost(f"connection to {self.endpoint} lost: {exc}", exc)
                )
            if failure is None:
                try:
                    self._receive(sock, msgids, deadline)
                except TimeoutError:
                    # The connection stays; answers that come late are dropped by msgid.
                    failure = _timeout_error(str(self.endpoint), timeout)
                except OSError as exc:
                    self._disconnect()
                    failure = (
                        exc
                        if isinstance(exc, ConnectionLost)
                        else _lost(f"connection to {self.endpoint} lost: {exc}", exc)
                    )
        finally:
            self._waiting.difference_update(msgids)
        outcomes = []
        for msgid in msgids:
            answer = self._answers.pop(msgid, None)
            outcomes.append(failure if answer is None else _outcome(*answer))
        return outcomes

    @staticmethod
    def _send(sock: socket.socket, data: bytes, deadline: float) -> None:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError
        sock.settimeout(remaining)
        sock.sendall(data)

    def _receive(self, sock: socket.socket, msgids: list[int], deadline: float) -> None:
        """Read until every one of ``msgids`` is answered (TimeoutError at ``deadline``)."""
        missing = sum(msgid not in self._answers for msgid in msgids)
        while missing:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            sock.settimeout(remaining)
            data = sock.recv(READ_SIZE)
            if not data:
                raise _lost(f"{self.endpoint} closed the connection")
            missing -= self._take(data)

    def _take(self, data: bytes) -> int:
        """Keep the answers in ``data`` that are still wanted; how many it kept."""
        kept = 0
        for msgid, error, result in _answers(self._unpacker, data):
            if msgid in self._waiting and msgid not in self._answers:
                self._answers[msgid] = (error, result)
                kept += 1
        return kept

    def _poll(self) -> bool:
        """Whether the connection is still open, reading (without waiting) what arrived.

        Catches a connection the server closed while we were idle (say its idle
        timeout) before a request is sent into it, so that such a request is
        never lost; also drops answers that arrived after their call timed out.
        """
        sock = self._sock
        if sock is None:
            return False
        try:
            sock.setblocking(False)
            while True:
                data = sock.recv(READ_SIZE)
                if not data:
                    break
                self._take(data)
        except (BlockingIOError, InterruptedError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            return True
        except OSError:
            pass
        self._disconnect()
        return False

    def _connect(self, deadline: float, timeout: float) -> socket.socket:
        """Open a new connection and authenticate it; raises OSError or the auth error."""
        if self._closed:
            raise ClientClosed("the client is closed")
        self._disconnect()
        sock = self._open_socket(deadline)
        self._sock = sock
        if self._token is not None:
            (answer,) = self._exchange([("auth", {"token": self._token})], deadline, timeout)
            if isinstance(answer, BaseException):
                self._disconnect()
                raise answer
            self.role = answer.get("role") if isinstance(answer, Mapping) else None
        return sock

    def _open_socket(self, deadline: float) -> socket.socket:
        endpoint = self.endpoint
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no connection to {endpoint} in time")
        if endpoint.address.unix is not None:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(remaining)
                sock.connect(endpoint.address.unix)
            except BaseException:
                sock.close()
                raise
        else:
            sock = socket.create_connection(
                (endpoint.address.host, endpoint.address.port), timeout=remaining
            )
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if endpoint.tls is None:
            return sock
        try:
            sock.settimeout(max(deadline - time.monotonic(), 1e-3))
            return endpoint.tls.wrap_socket(sock, server_hostname=endpoint.server_hostname)
        except BaseException:
            sock.close()
            raise

    def _disconnect(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self._unpacker = _new_unpacker()
