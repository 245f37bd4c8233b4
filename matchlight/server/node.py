"""How many processes a node runs by default (kept apart: the command line reads it at start)."""

from __future__ import annotations

import os


def default_workers() -> int:
    """One reader per core plus the writer, and at least two readers: a reader's restart then
    leaves another serving, and shadow work has another process to run in."""
    return max(3, (os.cpu_count() or 1) + 1)
