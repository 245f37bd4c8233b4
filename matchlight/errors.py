"""Errors that cross the RPC boundary, with their contract codes."""

from __future__ import annotations

from typing import Final

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
    def __init__(self, message: str) -> None:
        super().__init__(BAD_REQUEST, message)


class NotFound(RpcError):
    def __init__(self, message: str) -> None:
        super().__init__(NOT_FOUND, message)
