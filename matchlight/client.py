"""A small blocking msgpack-RPC client.

    with Client("127.0.0.1", 7420) as c:
        c.call("ingest", {"events": [...]})
        results = c.call_many([("get_item", {"id": "i1"}), ("get_item", {"id": "i2"})])

``call_many`` pipelines: it sends every request before reading any answer.
Errors come back as :class:`~matchlight.errors.RpcError` with the contract's
``code``.
"""

from __future__ import annotations

import itertools
import socket
from collections.abc import Iterable, Mapping
from types import TracebackType
from typing import Any

import msgpack

from matchlight.errors import RpcError


class Client:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 7420,
        *,
        unix: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        if unix is not None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._sock.settimeout(timeout)
            self._sock.connect(unix)
        else:
            self._sock = socket.create_connection((host, port), timeout=timeout)
            self._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self._ids = itertools.count(1)
        self._pending: dict[int, Any] = {}

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
        self._sock.close()

    def notify(self, method: str, params: Mapping[str, Any] | None = None) -> None:
        """Send a notification (no answer)."""
        self._sock.sendall(msgpack.packb([2, method, [] if params is None else [params]]))

    def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """One request; returns its result map or raises :class:`RpcError`."""
        (result,) = self.call_many([(method, params)])
        if isinstance(result, RpcError):
            raise result
        return result

    def call_many(self, calls: Iterable[tuple[str, Mapping[str, Any] | None]]) -> list[Any]:
        """Pipeline several requests; results in call order, errors as RpcError values."""
        msgids = []
        out = bytearray()
        for method, params in calls:
            msgid = next(self._ids) & 0xFFFFFFFF
            msgids.append(msgid)
            out += msgpack.packb([0, msgid, method, [] if params is None else [params]])
        self._sock.sendall(out)
        for msgid in msgids:
            while msgid not in self._pending:
                self._read()
        results = []
        for msgid in msgids:
            error, result = self._pending.pop(msgid)
            if error is not None:
                code = error.get("code", "internal") if isinstance(error, dict) else "internal"
                message = error.get("message", "") if isinstance(error, dict) else str(error)
                results.append(RpcError(code, message))
            else:
                results.append(result)
        return results

    def _read(self) -> None:
        data = self._sock.recv(1 << 20)
        if not data:
            raise ConnectionError("server closed the connection")
        self._unpacker.feed(data)
        for message in self._unpacker:
            _, msgid, error, result = message
            self._pending[msgid] = (error, result)
