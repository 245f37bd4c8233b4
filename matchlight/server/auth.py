"""Tokens and roles: who may call which RPC method.

A tokens file (``matchlight serve --tokens FILE``) has one ``ROLE TOKEN`` per
line; blank lines and lines starting with ``#`` are ignored. Roles:

- ``read``: ``health``, ``auth``, ``search``, ``recommend``, ``get_item``, ``get_user``;
- ``ingest``: everything ``read`` may, plus ``ingest``, ``upsert_items``, ``remove_items``;
- ``admin``: every method (``stats``, ``set_migration``, …).

With tokens configured a connection starts unauthenticated and may call only
``health`` and ``auth``; ``auth {token}`` gives it the token's role. Without
tokens every connection may call everything (the server refuses to listen
beyond loopback that way unless told to). Tokens are compared in constant
time, against every configured token, so timing reveals neither a token nor
which one matched.
"""

from __future__ import annotations

import hmac
import os
from collections.abc import Mapping
from typing import Final

import attrs

READ: Final = "read"
INGEST: Final = "ingest"
ADMIN: Final = "admin"
ROLES: Final = (READ, INGEST, ADMIN)

#: Callable by anyone, authenticated or not.
PUBLIC_METHODS: Final = frozenset({"health", "auth"})
_READ_METHODS: Final = PUBLIC_METHODS | {"search", "recommend", "get_item", "get_user"}
_INGEST_METHODS: Final = _READ_METHODS | {"ingest", "upsert_items", "remove_items"}
#: What each role may call; ``None`` means every method.
ROLE_METHODS: Final[Mapping[str, frozenset[str] | None]] = {
    READ: _READ_METHODS,
    INGEST: _INGEST_METHODS,
    ADMIN: None,
}
#: Tokens shorter than this are refused: they could be guessed.
MIN_TOKEN_LENGTH: Final = 16


class TokensError(Exception):
    """The tokens file cannot be read or has a bad line (the message says which)."""


def allowed(role: str | None, method: str) -> bool:
    """Whether a connection with ``role`` (``None``: unauthenticated) may call ``method``."""
    if role is None:
        return method in PUBLIC_METHODS
    methods = ROLE_METHODS.get(role, frozenset())
    return methods is None or method in methods


@attrs.frozen
class Tokens:
    """The configured tokens, each with its role."""

    _entries: tuple[tuple[bytes, str], ...]

    def __len__(self) -> int:
        return len(self._entries)

    def first(self, *roles: str) -> str | None:
        """The first token of the first of ``roles`` that has one (what a cluster node
        forwards requests to its peers with), or ``None``."""
        for role in roles:
            for known, its_role in self._entries:
                if its_role == role:
                    return known.decode()
        return None

    def role_of(self, token: str) -> str | None:
        """The role of ``token``, or ``None``. Constant time in the token's content."""
        candidate = token.encode()
        found = None
        for known, role in self._entries:
            # Compare with every entry, never stopping early.
            if hmac.compare_digest(candidate, known):
                found = role
        return found


def parse_tokens(text: str, source: str = "tokens") -> Tokens:
    """Parse the ``ROLE TOKEN`` lines of a tokens file.

    Raises:
        TokensError: naming the line: not two fields, an unknown role, a token
            shorter than :data:`MIN_TOKEN_LENGTH`, a token given twice, or no
            token at all.
    """
    entries: list[tuple[bytes, str]] = []
    seen: set[bytes] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        where = f"{source}:{number}"
        if len(fields) != 2:
            raise TokensError(f"{where}: expected 'ROLE TOKEN', got {len(fields)} fields")
        role, token = fields
        if role not in ROLES:
            raise TokensError(f"{where}: unknown role {role!r} (read, ingest or admin)")
        if len(token) < MIN_TOKEN_LENGTH:
            raise TokensError(
                f"{where}: token too short ({len(token)} characters; at least "
                f"{MIN_TOKEN_LENGTH}; make one with `python -c "
                "'import secrets; print(secrets.token_hex())'`)"
            )
        raw = token.encode()
        if raw in seen:
            raise TokensError(f"{where}: this token is already given above")
        seen.add(raw)
        entries.append((raw, role))
    if not entries:
        raise TokensError(f"{source}: no tokens (one 'ROLE TOKEN' per line)")
    return Tokens(tuple(entries))


def load_tokens(path: str | os.PathLike[str]) -> Tokens:
    """Read a tokens file. Raises :class:`TokensError`."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise TokensError(f"cannot read tokens file {path}: {exc}") from exc
    return parse_tokens(text, str(path))
