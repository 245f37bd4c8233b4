"""Where a server listens: the public address (TCP or a unix socket, port 0 resolved) and
the writer worker's unix socket."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import stat
from pathlib import Path

import trio

from matchlight.address import Address, parse_listen
from matchlight.server.worker_figures import RUN_DIR


async def open_listeners(listen: str) -> tuple[list[trio.SocketListener], Address]:
    """Bind ``listen``; the listeners and the address as bound (the real port for port 0).

    Raises:
        ValueError: ``listen`` is not an address (see :func:`parse_listen`).
        OSError: it cannot be bound.
    """
    address = parse_listen(listen)
    if address.unix is not None:
        remove_stale_socket(address.unix)
        sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        await sock.bind(address.unix)
        sock.listen(1024)
        return [trio.SocketListener(sock)], address
    try:
        listeners = await trio.open_tcp_listeners(address.port, host=address.host)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {listen}: {exc.strerror}") from exc
    host, port = listeners[0].socket.getsockname()[:2]
    return list(listeners), Address(host=host, port=port)


def remove_stale_socket(path: str) -> None:
    """Unlink a socket file left by a server that is gone; never one a live server listens on.

    Raises:
        OSError: a server answers on ``path``, or ``path`` is something other than a socket.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EEXIST, f"cannot listen on unix:{path}: it exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(path)
    except (ConnectionRefusedError, FileNotFoundError):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # nobody listens: a stale socket from a previous run
        return
    except PermissionError as exc:
        raise OSError(exc.errno, f"cannot listen on unix:{path}: {exc.strerror}") from exc
    except OSError:
        pass  # e.g. a full backlog or a timeout: someone is there
    finally:
        probe.close()
    raise OSError(
        errno.EADDRINUSE, f"cannot listen on unix:{path}: another server is listening there"
    )


def bind_writer_socket(data: Path) -> tuple[socket.socket, str]:
    """The writer's listening unix socket, ``DATA/run/writer.sock`` (replacing a stale one).

    Raises:
        OSError: it cannot be made (the path is too long for a unix socket, say).
    """
    run = data / RUN_DIR
    run.mkdir(mode=0o700, exist_ok=True)
    path = str(run / "writer.sock")
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)  # the lock is held: no live server uses it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno or errno.EINVAL, f"cannot bind {path}: {exc}") from exc
    sock.listen(1024)
    return sock, path


def bind_public(listen: str) -> tuple[socket.socket, Address]:
    """Listen on the public address, for the supervisor of a node of worker processes (it
    hands the connections to the readers: see :mod:`.handover`), port 0 resolved.

    Raises:
        ValueError: ``listen`` is not an address.
        OSError: the address is in use or cannot be bound.
    """
    address = parse_listen(listen)
    if address.unix is not None:
        remove_stale_socket(address.unix)
        unix = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        unix.bind(address.unix)
        unix.listen(1024)
        return unix, address
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    try:
        sock = socket.create_server((address.host, address.port), family=family, backlog=1024)
    except OSError as exc:
        raise OSError(exc.errno, f"cannot listen on {listen}: {exc.strerror}") from exc
    host, port = sock.getsockname()[:2]
    return sock, Address(host=host, port=port)
