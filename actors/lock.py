"""One writer per data directory: an exclusive lock on ``DIR/LOCK``.

The event log hands out sequence numbers from a counter kept in the writing
process; two processes appending to one log would give different events the
same numbers (and the idempotency table would then answer "duplicate" for
events that are gone). :class:`DirectoryLock` makes the second writer fail at
start instead: it takes an ``flock`` on ``DIR/LOCK`` and writes who holds it
there, so the refusal can name the holder. The kernel releases the lock when
the holder exits, however it exits (``kill -9`` included), so a restart never
finds a stale lock. Readers (``matchlight train``, ``verify``) do not take it.
"""

from __future__ import annotations

import fcntl
import os
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Final

from actors.errors import DirectoryLockedError, StoreError

LOCK_FILE: Final = "LOCK"


class DirectoryLock:
    """An exclusive lock on a data directory, held from :meth:`acquire` to :meth:`release`.

    Use as a context manager, or call the two methods. ``purpose`` is written
    into the lock file (with the process id and start time) for the refusal
    another process gets.
    """

    def __init__(self, directory: str | os.PathLike[str], *, purpose: str = "") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.purpose = purpose or " ".join(["matchlight", *sys.argv[1:2]])
        self._fd = -1

    @property
    def held(self) -> bool:
        return self._fd >= 0

    def acquire(self) -> None:
        """Take the lock without waiting. Blocking only briefly (file creation).

        Raises:
            DirectoryLockedError: another process holds it.
            StoreError: the directory or its lock file cannot be created or opened.
        """
        if self.held:
            return
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise StoreError(f"cannot lock the data directory {self.directory}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise DirectoryLockedError(
                f"the data directory {self.directory} is in use by {holder}: one process "
                "writes a data directory at a time; stop it first, or give another --data"
            ) from None
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot lock the data directory {self.directory}: {exc}") from exc
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        note = f"pid {os.getpid()} ({self.purpose}, since {started})\n".encode()
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, note, 0)
        except OSError:
            pass  # the note only helps the message of a refused process
        self._fd = fd

    def fileno(self) -> int:
        """The lock file's descriptor. A child process that inherits it holds the same lock:
        the kernel releases it only when every process holding it has exited (how the
        writer worker of ``matchlight serve --workers N`` shares the supervisor's lock).

        Raises:
            ValueError: the lock is not held.
        """
        if self._fd < 0:
            raise ValueError("the lock is not held")
        return self._fd

    def release(self) -> None:
        """Give the lock up (closing the file releases the flock). Idempotent."""
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> DirectoryLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read_holder(fd: int) -> str:
    try:
        note = os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        note = ""
    return note or "another process"
