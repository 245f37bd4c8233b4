"""Fixtures of the legacy adapter's tests: feed stores loading in this process or a child."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from legacy_adapter.feed import FeedStore


@pytest.fixture
def store(tmp_path: Path) -> Iterator[FeedStore]:
    """A store that loads on the calling thread (no process start: fast, monkeypatchable)."""
    opened = FeedStore(tmp_path / "legacy", isolate=False)
    yield opened
    opened.close()


@pytest.fixture
def isolated(tmp_path: Path) -> Iterator[FeedStore]:
    """A store that loads in a child process, as the server runs it."""
    opened = FeedStore(tmp_path / "isolated")
    yield opened
    opened.close()
