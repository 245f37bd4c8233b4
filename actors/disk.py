"""Say why a write failed in words an operator acts on: a full disk is named as such.

LMDB reports a full disk as ``mdb_txn_commit: Input/output error`` (it sees
``EIO`` from the page write, with no ``errno`` on the exception), which reads
like failing hardware. :func:`describe_write_error` looks at the free space of
the filesystem the write went to: nearly none left means the disk is full.
"""

from __future__ import annotations

import errno
import os
from typing import Final

#: Below this much free space, a failed write is taken to be a full disk.
LOW_SPACE_BYTES: Final = 16 << 20


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Bytes free to unprivileged writers on the filesystem holding ``path``, if known."""
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def is_disk_full(path: str | os.PathLike[str], exc: BaseException) -> bool:
    """Whether ``exc``, raised by a write under ``path``, is (most likely) a full disk."""
    if getattr(exc, "errno", None) in (errno.ENOSPC, errno.EDQUOT):
        return True
    free = free_bytes(path)
    return free is not None and free < LOW_SPACE_BYTES


def describe_write_error(path: str | os.PathLike[str], exc: BaseException) -> str:
    """A one-line reason for a failed write under ``path``: "disk full (…)" or the error."""
    if is_disk_full(path, exc):
        free = free_bytes(path)
        left = "" if free is None else f"{_size(free)} free, "
        return f"disk full ({left}on the filesystem of {path})"
    return str(exc) or type(exc).__name__


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} bytes"
    if n < 1 << 20:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1 << 20):.1f} MiB"
