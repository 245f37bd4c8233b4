"""Where a server listens and a client connects: ``HOST:PORT`` or ``unix:PATH``.

One format for ``matchlight serve --listen``, ``matchlight health --connect`` and
the clients' error messages. :func:`parse_listen` and :func:`parse_connect` read
it (they differ only in port 0, which asks a listener for any free port and
means nothing to a client); ``str(address)`` writes it back.
"""

from __future__ import annotations

import ipaddress
from typing import Final

import attrs

UNIX_PREFIX: Final = "unix:"


@attrs.frozen(kw_only=True)
class Address:
    """A TCP ``host`` and ``port``, or, when ``unix`` is set, a Unix socket path."""

    host: str = ""
    port: int = 0
    unix: str | None = None

    def __str__(self) -> str:
        return f"{UNIX_PREFIX}{self.unix}" if self.unix is not None else f"{self.host}:{self.port}"

    @property
    def is_loopback(self) -> bool:
        """Whether only this machine can reach it.

        True for a Unix socket (its file permissions decide who may connect),
        ``localhost`` and loopback IP addresses; false for any other host name,
        which may resolve to anything.
        """
        if self.unix is not None or self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


def parse_listen(text: str) -> Address:
    """The address of ``--listen``: ``HOST:PORT`` (port 0: any free port) or ``unix:PATH``.

    Raises:
        ValueError: the address is in neither form; the message names ``--listen``.
    """
    return _parse(text, option="--listen", lowest_port=0)


def parse_connect(text: str) -> Address:
    """The address of ``--connect``: ``HOST:PORT`` (port 1 to 65535) or ``unix:PATH``.

    Raises:
        ValueError: the address is in neither form; the message names ``--connect``.
    """
    return _parse(text, option="--connect", lowest_port=1)


def _parse(text: str, *, option: str, lowest_port: int) -> Address:
    """``unix:PATH``, or ``HOST:PORT`` split at its last colon (``[::1]:7420``: host ``::1``)."""
    if text.startswith(UNIX_PREFIX):
        path = text[len(UNIX_PREFIX) :]
        if not path:
            raise ValueError(f"{option} unix: needs a socket path, e.g. unix:/run/matchlight.sock")
        return Address(unix=path)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not lowest_port <= int(port) < 65536:
        raise ValueError(f"{option} must be HOST:PORT or unix:PATH, got {text!r}")
    return Address(host=host.strip("[]"), port=int(port))
