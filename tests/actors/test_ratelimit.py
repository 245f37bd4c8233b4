"""A failure repeated per request is logged once per interval, with how many were suppressed."""

from __future__ import annotations

import errno
import logging

import pytest

from actors import RateLimitedLog, StoreError, disk


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_repeated_failure_is_logged_once_per_interval_with_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    limited = RateLimitedLog(logging.getLogger("t"), interval_s=60.0, clock=clock)
    caplog.set_level(logging.INFO, logger="t")
    failure = StoreError("disk full (0 bytes free, on the filesystem of /d)")

    written = [limited.error("decisions", "lost %d records", 1, exc=failure) for _ in range(500)]
    clock.now = 61.0
    written.append(limited.error("decisions", "lost %d records", 1, exc=failure))

    assert written.count(True) == 2
    first, second = (record.getMessage() for record in caplog.records)
    assert first == "lost 1 records: disk full (0 bytes free, on the filesystem of /d)"
    assert second.endswith("(499 more like this in the last 60 s)")
    # An operational failure is one line: no traceback.
    assert all(record.exc_info is None for record in caplog.records)
    assert limited.total == 501


def test_keys_are_limited_apart_and_a_bug_keeps_its_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    limited = RateLimitedLog(logging.getLogger("t2"), clock=Clock())
    caplog.set_level(logging.INFO, logger="t2")

    assert limited.warning("a", "first")
    assert limited.warning("b", "second")
    assert not limited.warning("a", "first again")
    bug = KeyError("oops")
    try:
        raise bug
    except KeyError:
        written = limited.error("bug", "internal error", exc=bug)
    assert written

    assert [r.getMessage() for r in caplog.records] == [
        "first",
        "second",
        "internal error: 'oops'",
    ]
    assert caplog.records[-1].exc_info is not None


def test_a_write_error_is_named_disk_full_when_the_filesystem_is_full(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # LMDB reports a full disk as EIO without an errno: the free space decides.
    eio = Exception("mdb_txn_commit: Input/output error")
    monkeypatch.setattr(disk, "free_bytes", lambda path: 3 * 1024)
    assert disk.is_disk_full("/data", eio)
    assert disk.describe_write_error("/data", eio) == (
        "disk full (3.0 KiB free, on the filesystem of /data)"
    )
    monkeypatch.setattr(disk, "free_bytes", lambda path: 50 << 30)
    assert not disk.is_disk_full("/data", eio)
    assert disk.describe_write_error("/data", eio) == "mdb_txn_commit: Input/output error"
    assert disk.is_disk_full("/data", OSError(errno.ENOSPC, "No space left on device"))
