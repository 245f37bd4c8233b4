"""The writer tells its readers when it has committed, so their followers apply the commit
at once instead of polling the log.

With ``--workers N`` each reader listens on a unix datagram socket of its own,
``DIR/run/reader-R.bell`` (:class:`BellListener`). After every commit that
stored events, before acknowledging them, the writer sends one empty datagram
to each (:class:`Bell`), and the reader nudges its follower
(:meth:`~actors.follower.LogFollower.nudge`), which reads the log's head and
applies what is new.

A ring carries no seq, so nothing depends on it arriving: a reader that misses
one (it was restarting) or gets several at once (it was busy; they are drained
together) still applies everything, and its follower also looks on its own
every :data:`FALLBACK_POLL_S`. Reads are unaffected either way: a read first
catches up with the log's head (read-your-writes across processes).

Why: the follower polled every 2 ms. That cost an idle reader 7% of a core (now
1%) and left a commit unapplied for up to 2 ms. Ringing costs the writer one
system call per reader per commit; a full datagram queue (a busy reader) drops
the ring, which loses nothing, since the queued ones wake the reader.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import trio

#: How often a reader's follower looks at the log when no ring comes, seconds.
FALLBACK_POLL_S: Final = 0.1
#: Datagrams read at most per wake (a busy reader drains what queued meanwhile).
_DRAIN: Final = 1024


def bell_path(run_dir: Path, reader: int) -> Path:
    """Where reader ``reader`` hears that the writer has committed."""
    return run_dir / f"reader-{reader}.bell"


class Bell:
    """The writer's half: :meth:`ring` the listeners at ``paths``. Never blocks or raises."""

    def __init__(self, paths: Sequence[Path]) -> None:
        self._paths = [str(p) for p in paths]
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sock.setblocking(False)

    def ring(self) -> None:
        for path in self._paths:
            # ENOENT/ECONNREFUSED: that reader is not up; EAGAIN: its queue is full,
            # so it has rings to wake it already.
            with contextlib.suppress(OSError):
                self._sock.sendto(b"", path)

    def close(self) -> None:
        self._sock.close()


class BellListener:
    """A reader's half: :meth:`run` calls ``wake`` once per burst of rings."""

    def __init__(self, path: Path) -> None:
        """Listen at ``path``, replacing one a previous process of this reader left."""
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        self._path = path
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            self._sock.setblocking(False)
            self._sock.bind(str(path))
        except BaseException:
            self._sock.close()
            raise

    async def run(self, wake: Callable[[], None]) -> None:
        """Until cancelled."""
        while True:
            await trio.lowlevel.wait_readable(self._sock)
            for _ in range(_DRAIN):
                try:
                    self._sock.recv(1)
                except BlockingIOError:
                    break
            wake()

    def close(self) -> None:
        self._sock.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path)
