"""Co-occurrence snapshots while serving, written by a forked child so serving never pauses
for the encoding.

A clean stop writes the co-occurrence snapshot (:func:`~actors.cooccurrence.save_cooccurrence`)
and the next start replays only the log after it. After a crash (``kill -9``, a
lost machine) nothing was written at the end, and a start would replay
everything since the last clean stop: about 12 s per million events. So the
process that owns the snapshot also writes one every ``every`` events while it
serves (:func:`keep_snapshots`).

Encoding it takes too long to stop an event loop that answers reads for (0.47 s
at seq 200,000 and 1.21 s at seq 400,000 of the bench's workload).
:func:`save_in_child` forks instead, as Redis's ``BGSAVE`` does: the child gets
a copy-on-write image of the process as it is between two dispatches (the
co-occurrence is only changed inside one), encodes it at a lower priority,
writes the file atomically and exits; the parent goes on serving at once,
paused only for the ``fork`` itself (9 to 25 ms measured for a reader during
ingest), and looks every :data:`REAP_S` whether the child is done.

The child touches nothing but the co-occurrence and the file: not the LMDB
environment, which a forked process must not use (the parent reads the event id
the snapshot is checked against before forking), not Trio, not the log. It
takes no lock another thread could hold; Python does run the at-fork hooks that
libraries register in it (see the import below). While it lives, memory grows
by every page either process writes (the parent's ordinary work, the child's
reference counts): in the worst case by the process's size, for those seconds.
"""

from __future__ import annotations

# concurrent.futures.thread resets its global lock in a forked child from an at-fork
# hook; OpenTelemetry's TracerProvider registers one that uses that lock (it re-detects
# the process's resource). Hooks run in the order registered, so this module, imported
# before any provider exists, makes sure the lock is reset first: the other way round,
# the child deadlocked in ThreadPoolExecutor.submit.
import concurrent.futures.thread  # noqa: F401
import contextlib
import logging
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Final

import trio

from actors.cooccurrence import CoOccurrence, event_id_at, write_snapshot
from actors.store import EventStore

log = logging.getLogger(__name__)

#: How often :func:`keep_snapshots` looks at how far the log has moved, seconds.
CHECK_S: Final = 1.0
#: A child still writing after this long is killed (its snapshot is not worth a hung
#: process), seconds; how often the parent looks whether it is done.
CHILD_TIMEOUT_S: Final = 120.0
REAP_S: Final = 0.02
#: The child's niceness increment: on a busy machine it yields the CPU to serving.
CHILD_NICE: Final = 10


async def save_in_child(
    cooccurrence: CoOccurrence, store: EventStore, path: Path, seq: int
) -> bool:
    """Write ``cooccurrence`` (as of the log's ``seq``) to ``path`` from a forked child;
    return once the child is done, whether it wrote the file (a failure is logged).

    Raises:
        StoreError: the store cannot be read.
        OSError: the process cannot fork.
    """
    event_id = event_id_at(store, seq)  # here: a child must not use LMDB
    started = time.perf_counter()
    pid = os.fork()
    if pid == 0:  # the child: write, and leave without running anything of the parent's
        _write_and_exit(cooccurrence, seq, event_id, path)
    paused = time.perf_counter() - started
    code = await _reap(pid)
    took = time.perf_counter() - started
    if code is None:
        log.warning(
            "co-occurrence snapshot at seq %d not written: the child took over %g s; killed it",
            seq,
            CHILD_TIMEOUT_S,
        )
        return False
    if code != 0:
        log.warning("co-occurrence snapshot at seq %d not written (child exit %d)", seq, code)
        return False
    log.info(
        "co-occurrence snapshot at seq %d written by child pid %d in %.2f s "
        "(the fork paused serving for %.1f ms)",
        seq,
        pid,
        took,
        paused * 1e3,
    )
    return True


def _write_and_exit(cooccurrence: CoOccurrence, seq: int, event_id: str, path: Path) -> None:
    """The child's work: exits 0 once the file is in place, 1 if it failed (said on stderr)."""
    code = 1
    try:
        os.nice(CHILD_NICE)  # serving comes first: a snapshot may take longer
        write_snapshot(cooccurrence, seq, event_id, path)
        code = 0
    except BaseException as exc:
        os.write(2, f"co-occurrence snapshot child: {exc!r}\n".encode())
    finally:
        os._exit(code)


async def _reap(pid: int) -> int | None:
    """The child's exit code once it exits; ``None`` if it took over :data:`CHILD_TIMEOUT_S`
    (it is killed). If cancelled, kill it: a clean stop writes its own snapshot next."""
    try:
        with trio.move_on_after(CHILD_TIMEOUT_S):
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 (never blocks)
                if done:
                    return os.waitstatus_to_exitcode(status)
                await trio.sleep(REAP_S)
    except BaseException:
        _kill(pid)
        raise
    _kill(pid)
    return None


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, ChildProcessError):
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


async def keep_snapshots(
    cooccurrence: CoOccurrence,
    store: EventStore,
    path: Path,
    observed: Callable[[], int],
    *,
    every: int,
    check_s: float = CHECK_S,
) -> None:
    """Until cancelled, write a snapshot (:func:`save_in_child`) each time ``observed()``
    (the last seq taken into ``cooccurrence``) has moved ``every`` events past the last
    one written, or past where it stood when this started."""
    last = observed()
    while True:
        await trio.sleep(check_s)
        seq = observed()
        if seq - last < every:
            continue
        try:
            await save_in_child(cooccurrence, store, path, seq)
        except OSError as exc:
            log.warning("co-occurrence snapshot at seq %d not written: %s", seq, exc)
        last = seq  # a failed one is tried again after as many events, not at once
