"""msgpack-RPC over a byte stream: framing, pipelining, per-connection isolation.

Spec: a request is ``[0, msgid, method, params]``, answered by
``[1, msgid, error, result]``; a notification ``[2, method, params]`` gets no
answer. Requests on one connection are handled concurrently (pipelining) and
answered as they finish, so responses may come out of order.

Input that cannot be decoded as msgpack closes that connection (there is no
msgid to answer); a decodable message of the wrong shape is answered with
``bad_request`` when it has an integer msgid and otherwise closes the
connection. Nothing one connection sends affects another.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import attrs
import msgpack
import trio

from actors import MatchlightError, SystemClosedError
from matchlight.errors import INTERNAL, OVERLOADED, UNAVAILABLE, BadRequest, RpcError

log = logging.getLogger(__name__)

REQUEST: Final = 0
RESPONSE: Final = 1
NOTIFICATION: Final = 2

Handler = Callable[[Any], Awaitable[Mapping[str, Any]]]


@attrs.frozen(kw_only=True)
class Limits:
    max_message_bytes: int = 64 << 20
    max_in_flight: int = 64
    read_size: int = 256 << 10


@attrs.define(eq=False)
class RpcStatistics:
    connections_open: int = 0
    connections_total: int = 0
    requests: int = 0
    notifications: int = 0
    errors: int = 0
    protocol_errors: int = 0


class RpcServer:
    """Dispatches decoded messages to ``methods`` (name → async handler of the params)."""

    def __init__(self, methods: Mapping[str, Handler], limits: Limits | None = None) -> None:
        self.methods = methods
        self.limits = limits or Limits()
        self.stats = RpcStatistics()
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
        """Serve one connection until the peer closes it or sends undecodable bytes."""
        self.stats.connections_open += 1
        self.stats.connections_total += 1
        unpacker = msgpack.Unpacker(
            raw=False,
            # Non-string keys reach validation and get a bad_request that names
            # the field; unhashable keys (arrays, maps) raise TypeError below.
            strict_map_key=False,
            max_buffer_size=self.limits.max_message_bytes,
        )
        send_lock = trio.Lock()
        slots = trio.Semaphore(self.limits.max_in_flight)
        try:
            async with stream, trio.open_nursery() as nursery:
                while True:
                    try:
                        data = await stream.receive_some(self.limits.read_size)
                    except trio.BrokenResourceError:
                        break
                    if not data:
                        break
                    try:
                        unpacker.feed(data)
                        messages = list(unpacker)
                    except (msgpack.UnpackException, ValueError, TypeError) as exc:
                        # Undecodable bytes, too deep (StackError), too large
                        # (BufferFull), or an array or map used as a map key.
                        self.stats.protocol_errors += 1
                        log.info("closing connection on undecodable input: %r", exc)
                        return
                    for message in messages:
                        if not await self._accept(message, stream, send_lock, slots, nursery):
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
            await slots.acquire()
            self._begin()
            nursery.start_soon(self._request, msgid, method, params, stream, send_lock, slots)
            return True
        if kind == NOTIFICATION and len(message) == 3:
            _, method, params = message
            await slots.acquire()
            self._begin()
            nursery.start_soon(self._notification, method, params, slots)
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

    async def _call(self, method: Any, params: Any) -> Mapping[str, Any]:
        if self._draining:
            raise RpcError(UNAVAILABLE, "the server is shutting down")
        if type(method) is not str:
            raise BadRequest("method name must be a string")
        handler = self.methods.get(method)
        if handler is None:
            raise BadRequest(f"unknown method {method!r}")
        try:
            return await handler(params)
        except RpcError:
            raise
        except SystemClosedError as exc:
            raise RpcError(UNAVAILABLE, str(exc)) from exc
        except MatchlightError as exc:
            log.warning("%s failed: %s", method, exc)
            raise RpcError(UNAVAILABLE, str(exc)) from exc
        except trio.TooSlowError as exc:
            raise RpcError(OVERLOADED, "request did not finish in time") from exc

    async def _request(
        self,
        msgid: int,
        method: Any,
        params: Any,
        stream: trio.abc.Stream,
        send_lock: trio.Lock,
        slots: trio.Semaphore,
    ) -> None:
        self.stats.requests += 1
        try:
            try:
                result = await self._call(method, params)
                response = [RESPONSE, msgid, None, result]
            except RpcError as exc:
                self.stats.errors += 1
                response = [RESPONSE, msgid, exc.to_wire(), None]
            except Exception:
                self.stats.errors += 1
                log.exception("internal error in %r", method)
                response = [RESPONSE, msgid, RpcError(INTERNAL, "internal error").to_wire(), None]
            await self._send(stream, send_lock, response)
        finally:
            slots.release()
            self._end()

    async def _notification(self, method: Any, params: Any, slots: trio.Semaphore) -> None:
        self.stats.notifications += 1
        try:
            await self._call(method, params)
        except RpcError as exc:
            self.stats.errors += 1
            log.info("notification %r failed: %s", method, exc)
        except Exception:
            self.stats.errors += 1
            log.exception("internal error in notification %r", method)
        finally:
            slots.release()
            self._end()

    async def _send(self, stream: trio.abc.Stream, lock: trio.Lock, response: list[Any]) -> None:
        data = msgpack.packb(response, use_bin_type=True)
        try:
            async with lock:
                await stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer went away; its answer has nowhere to go
