"""How many processes a node runs by default (kept apart: the command line reads it at start)."""

from __future__ import annotations

import os


def default_workers() -> int:
    """One reader per core this process may run on plus the writer, and at least two
    readers: a reader's restart then leaves another serving, and shadow work has another
    process to run in. (A container's CPU quota is not seen here: give ``--workers``.)"""
    return max(3, len(os.sched_getaffinity(0)) + 1)
