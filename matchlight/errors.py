"""Errors that cross the RPC boundary: one class per contract code, shared by server and client.

The server raises them (``raise NotFound(...)``) and sends :meth:`RpcError.to_wire`;
the client turns an answer's ``error`` back into the same class with
:func:`error_from_wire`, so ``except NotFound`` means the same on both sides.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Final

BAD_REQUEST: Final = "bad_request"
UNAUTHORIZED: Final = "unauthorized"
FORBIDDEN: Final = "forbidden"
NOT_FOUND: Final = "not_found"
OVERLOADED: Final = "overloaded"
UNAVAILABLE: Final = "unavailable"
INTERNAL: Final = "internal"

CODES: Final = frozenset(
    {BAD_REQUEST, UNAUTHORIZED, FORBIDDEN, NOT_FOUND, OVERLOADED, UNAVAILABLE, INTERNAL}
)


class RpcError(Exception):
    """An error answer: ``code`` is one of :data:`CODES`, ``message`` says what went wrong."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_wire(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


class BadRequest(RpcError):
    """The request is malformed or names something invalid; the message names the field."""

    def __init__(self, message: str) -> None:
        super().__init__(BAD_REQUEST, message)


class Unauthorized(RpcError):
    """No valid token: the connection did not ``auth``, or its token was refused."""

    def __init__(self, message: str) -> None:
        super().__init__(UNAUTHORIZED, message)


class Forbidden(RpcError):
    """The connection's role may not call this method."""

    def __init__(self, message: str) -> None:
        super().__init__(FORBIDDEN, message)


class NotFound(RpcError):
    """The entity asked for does not exist."""

    def __init__(self, message: str) -> None:
        super().__init__(NOT_FOUND, message)


class Overloaded(RpcError):
    """The server has too much in flight; retry later."""

    def __init__(self, message: str) -> None:
        super().__init__(OVERLOADED, message)


class Unavailable(RpcError):
    """The server cannot serve now (shutting down, store unavailable)."""

    def __init__(self, message: str) -> None:
        super().__init__(UNAVAILABLE, message)


class InternalError(RpcError):
    """A bug in the server; its log says more."""

    def __init__(self, message: str) -> None:
        super().__init__(INTERNAL, message)


_BY_CODE: Final[Mapping[str, Callable[[str], RpcError]]] = {
    BAD_REQUEST: BadRequest,
    UNAUTHORIZED: Unauthorized,
    FORBIDDEN: Forbidden,
    NOT_FOUND: NotFound,
    OVERLOADED: Overloaded,
    UNAVAILABLE: Unavailable,
    INTERNAL: InternalError,
}


def error_from_wire(error: Any) -> RpcError:
    """The exception for an answer's ``error`` field: the class of its code, else :class:`RpcError`.

    A malformed error (not a ``{code, message}`` map) becomes an ``internal`` error.
    """
    if not isinstance(error, Mapping):
        return InternalError(str(error))
    code = error.get("code")
    message = error.get("message")
    message = message if isinstance(message, str) else "" if message is None else str(message)
    if not isinstance(code, str):
        return InternalError(message)
    make = _BY_CODE.get(code)
    return RpcError(code, message) if make is None else make(message)
