"""The LMDB store that serves the legacy batch feed, and the watcher that reloads it.

:class:`FeedStore` loads one snapshot at a time (read by
:mod:`legacy_adapter.sources`) into a fresh LMDB environment (``DIR/snap-N``),
so a feed of millions of users never sits in Python dicts, then swaps
:meth:`FeedStore.get` over to it atomically and records it in ``DIR/CURRENT``:
a restart serves the last loaded feed without the source. The reading and
writing run in a child process by default (:mod:`legacy_adapter.feed_loader`).
:func:`watch_feed` loads the current snapshot and every new one while serving.

Several processes may serve one store directory: exactly one *loader*
(``FeedStore(path)``, which holds the directory's lock and alone loads,
publishes and deletes environments) and any number of *followers*
(``FeedStore(path, loader=False)``), which never write there: each
:meth:`FeedStore.get` of a follower looks at ``CURRENT`` (one ``stat``) and,
when it names a new environment, switches to it as a load would. A follower
reads published environments only; the loader deletes the one it replaced
at once, and a follower still reading it keeps its open files until it
switches (POSIX keeps a deleted file's data while it is open).

A damaged entry is never served: :meth:`FeedStore.get` answers ``None`` and
the router serves that user in real time. A ``CURRENT`` that is invalid or
names a missing environment refuses to open; the files and their checks are
in :mod:`legacy_adapter.feed_files`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import attrs
import lmdb
import trio

from actors import RateLimitedLog
from actors.closing import Closing
from actors.files import staging_path
from legacy_adapter.errors import FeedError
from legacy_adapter.feed_files import (
    CURRENT,
    SNAP_PREFIX,
    decode_entry,
    open_env,
    open_published_env,
    read_current,
    state_signature,
    write_current,
)
from legacy_adapter.feed_loader import BOOTSTRAP, Tally, build, loader_job, loader_outcome
from legacy_adapter.records import MAX_KEY_BYTES
from legacy_adapter.sources import FeedEntry, FeedSource, LoadReport

log = logging.getLogger(__name__)


@attrs.frozen(kw_only=True)
class FeedStatistics:
    snapshot: str | None
    entries: int
    loads: int
    last_report: LoadReport | None
    #: Entries of the served feed found corrupt when read (served by real time instead).
    corrupt_entries: int = 0


class FeedStore(Closing):
    """The loaded legacy feed, in LMDB environments under ``path`` (created if missing).

    Each loaded snapshot lives in its own environment ``path/snap-N``;
    ``path/CURRENT`` names the one served. With ``isolate`` (the default) a
    load reads and writes in a child Python process, so a long load never
    holds this process's GIL; the source must then pickle (those of
    :func:`open_source` do). ``isolate=False`` loads on the calling thread.

    A ``loader`` store (the default) loads: one process at a time may open a
    directory so (a ``LOCK`` file holds an exclusive ``flock``), and its
    constructor removes leftovers of interrupted loads. With ``loader=False``
    the store follows the loader of the directory (see the module docstring)
    and cannot :meth:`load`. Either constructor blocks briefly: it opens the
    current environment.

    Raises:
        FeedError: the directory cannot be created, is in use by another loader,
            or its ``CURRENT`` is invalid or names an environment that cannot be opened.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, isolate: bool = True, loader: bool = True
    ) -> None:
        self.path = Path(path)
        self.isolate = isolate
        self.loader = loader
        self._child_lock = threading.Lock()
        self._child: subprocess.Popen[bytes] | None = None
        # Guards `_env` for readers and the swap; readers hold it for their whole
        # (microseconds) read so that the swap never closes an environment under them.
        self._lock = threading.Lock()
        self._load_lock = threading.Lock()  # one load at a time
        self._closing = threading.Event()
        self._env: Any = None
        self._env_path: Path | None = None
        self._snapshot: str | None = None
        self._entries = 0
        self._loads = 0
        self._last_report: LoadReport | None = None
        #: Keys of the served environment found corrupt (cleared when a new feed is served).
        self._corrupt_keys: set[bytes] = set()
        #: Failures that would repeat on every read are logged once a minute.
        self._errors = RateLimitedLog(log)
        #: A follower's signature of the ``CURRENT`` it last followed (see refresh).
        self._followed: tuple[int, int, int] | None = None
        self._lock_fd = -1
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise FeedError(f"cannot open the legacy feed store in {self.path}: {exc}") from exc
        if loader:
            self._open_as_loader()
        else:
            self.refresh()

    def _open_as_loader(self) -> None:
        """Take the directory's lock, open the current environment, remove leftovers.

        Raises:
            FeedError: another loader holds the directory, or it cannot be opened.
        """
        try:
            self._lock_fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise FeedError(f"cannot open the legacy feed store in {self.path}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
            self._lock_fd = -1
            raise FeedError(f"the legacy feed store {self.path} is in use: {exc}") from exc
        try:
            self._recover()
        except OSError as exc:
            self.close()
            raise FeedError(f"cannot open the legacy feed store in {self.path}: {exc}") from exc
        except FeedError:
            self.close()
            raise

    def _recover(self) -> None:
        # A bad CURRENT refuses to open (FeedError): starting empty would silently move
        # every user of a legacy surface to real time, and delete the environment.
        current = read_current(self.path)
        if current is not None:
            name, snapshot = current
            env_path = self.path / name
            try:
                self._env = open_env(env_path, create=False)
                self._entries = self._env.stat()["entries"]
            except lmdb.Error as exc:
                if self._env is not None:
                    self._env.close()
                    self._env = None
                raise FeedError(
                    f"{self.path / CURRENT}: env: cannot open {env_path}: {exc} (remove "
                    f"{self.path} to load the feed afresh from its source)"
                ) from exc
            self._env_path, self._snapshot = env_path, snapshot
        for child in self.path.iterdir():
            if child.name.startswith(SNAP_PREFIX) and child != self._env_path:
                shutil.rmtree(child, ignore_errors=True)  # an interrupted load or swap
        staging_path(self.path / CURRENT).unlink(missing_ok=True)
        if self._snapshot is not None:
            log.info("legacy feed: serving snapshot %s (%d entries)", self._snapshot, self._entries)

    # -- following (loader=False) -----------------------------------------------------

    def refresh(self) -> bool:
        """A follower: serve the environment ``CURRENT`` names, if it is not the one served.

        Blocking: one ``stat`` of ``CURRENT``; reading it and opening an
        environment (a millisecond) only when it was replaced. Returns whether
        the store switched. A loader store never follows (it answers ``False``).

        Raises:
            FeedError: ``CURRENT`` is invalid or its environment cannot be opened; the
                store keeps serving what it served and tries again only once
                ``CURRENT`` is replaced.
        """
        if self.loader:
            return False
        where = self.path / CURRENT
        signature: tuple[int, int, int] | None = None
        try:
            signature = state_signature(where)
            if signature == self._followed:
                return False
            with self._load_lock:  # one switch at a time
                if self._closing.is_set():
                    return False
                self._followed = signature
                return self._follow_current()
        except (FeedError, OSError, lmdb.Error) as exc:
            with contextlib.suppress(OSError):
                if state_signature(where) != signature:
                    # The loader published anew meanwhile (and may have deleted the
                    # environment this one named): the next refresh follows it.
                    return False
            raise FeedError(f"legacy feed {self.path}: cannot follow {where}: {exc}") from exc

    def _follow_current(self) -> bool:
        """Switch to the environment ``CURRENT`` names, unless it is the one served."""
        current = read_current(self.path)
        if current is None or self.path / current[0] == self._env_path:
            return False
        name, snapshot = current
        env = open_published_env(self.path / name)
        try:
            entries = env.stat()["entries"]
        except lmdb.Error:
            env.close()
            raise
        self._serve(env, self.path / name, snapshot, entries)
        log.info("legacy feed: following snapshot %s (%d entries)", snapshot, entries)
        return True

    def _follow(self) -> None:
        """:meth:`refresh` for :meth:`get`: a failure is logged (once a minute), not raised."""
        try:
            self.refresh()
        except FeedError as exc:
            self._errors.error("follow", "%s; the previous feed keeps serving", exc)

    # -- reading ----------------------------------------------------------------------

    def get(self, surface: str, user: str) -> FeedEntry | None:
        """The feed's entry for ``user`` on ``surface``, or ``None``. Fast, thread-safe.

        Blocks only for one LMDB read (microseconds). Never raises: an
        absent user, a key that cannot exist and a closed store give ``None``;
        so does an entry that fails its checksum, does not decode or has the
        wrong shape, or that LMDB cannot read (counted in
        :meth:`statistics`, logged once a minute per surface), so the
        router serves that user from the real-time path. A follower first
        switches to a snapshot newly published in ``CURRENT`` (see :meth:`refresh`).
        """
        if not self.loader:
            self._follow()
        try:
            key = f"{surface}\0{user}".encode()
        except UnicodeEncodeError:
            return None
        if len(key) > MAX_KEY_BYTES:
            return None
        with self._lock:
            env = self._env
            if env is None:
                return None
            try:
                with env.begin() as txn:
                    raw = txn.get(key)
            except lmdb.Error as exc:
                self._corrupt(key, surface, user, f"cannot read it: {exc}")
                return None
        if raw is None:
            return None
        try:
            return decode_entry(key, raw)
        except ValueError as exc:
            self._corrupt(key, surface, user, str(exc))
            return None

    def _corrupt(self, key: bytes, surface: str, user: str, reason: str) -> None:
        """Count and log (once a minute per surface) an entry that cannot be served."""
        self._corrupt_keys.add(key)
        self._errors.error(
            f"entry:{surface}",
            "legacy feed %s: the entry of user %r on surface %r is corrupt: %s; the real-time "
            "path serves them (run `matchlight verify`)",
            self.path,
            user,
            surface,
            reason,
        )

    @property
    def snapshot(self) -> str | None:
        """The id of the snapshot served, or ``None`` before the first load."""
        return self._snapshot

    @property
    def entries(self) -> int:
        """Distinct (surface, user) pairs served."""
        return self._entries

    def statistics(self) -> FeedStatistics:
        return FeedStatistics(
            snapshot=self._snapshot,
            entries=self._entries,
            loads=self._loads,
            last_report=self._last_report,
            corrupt_entries=len(self._corrupt_keys),
        )

    # -- loading ----------------------------------------------------------------------

    def load(self, source: FeedSource, snapshot_id: str | None = None) -> LoadReport:
        """Load a snapshot of ``source`` and serve it from now on. Blocking: run it on a thread.

        Reads the snapshot (``snapshot_id``, or the source's newest) into a
        new environment, in a child process unless the store was opened with
        ``isolate=False``; syncs it, records it in ``CURRENT``, then switches
        :meth:`get` to it in one step and deletes the previous environment.
        Bad records are counted in the report. Loads are serialized.

        Raises:
            FeedError: the source has no complete snapshot, cannot be read
                (the snapshot vanished or changed, an I/O or SQLite error),
                cannot be sent to the loader process, the disk is full, or
                the store is closing, or it is a follower. Nothing changed: the
                previous feed keeps serving.
        """
        if not self.loader:
            raise FeedError(f"the legacy feed store {self.path} follows its loader: it cannot load")
        with self._load_lock:
            if self._closing.is_set():
                raise FeedError("the legacy feed store is closed")
            started = time.monotonic()
            describe = source.describe()
            if snapshot_id is None:
                snapshot_id = source.snapshot_id()
                if snapshot_id is None:
                    raise FeedError(f"legacy feed {describe} has no complete snapshot yet")
            target = self.path / f"{SNAP_PREFIX}{self._next_number()}"
            (records, bad, examples, entries), env = self._build_env(source, snapshot_id, target)
            self._record_current(env, target, snapshot_id, describe)
            self._serve(env, target, snapshot_id, entries)
            report = LoadReport(
                source=describe,
                snapshot=snapshot_id,
                records=records,
                entries=entries,
                bad=bad,
                examples=tuple(examples),
                seconds=time.monotonic() - started,
            )
            self._last_report = report
            return report

    def _build_env(self, source: FeedSource, snapshot_id: str, target: Path) -> tuple[Tally, Any]:
        """Build the snapshot into a new environment at ``target`` and open it.

        Raises:
            FeedError: the build failed (``target`` is deleted).
        """
        try:
            if self.isolate:
                tally = self._build_isolated(source, snapshot_id, target)
            else:
                tally = build(source, snapshot_id, target, self._closing.is_set)
            return tally, open_env(target, create=False)
        except (OSError, sqlite3.Error, lmdb.Error) as exc:
            shutil.rmtree(target, ignore_errors=True)
            raise FeedError(
                f"loading {source.describe()} snapshot {snapshot_id} failed: {exc}"
            ) from exc
        except BaseException:
            shutil.rmtree(target, ignore_errors=True)
            raise

    def _record_current(self, env: Any, target: Path, snapshot_id: str, describe: str) -> None:
        """Make ``CURRENT`` name the new environment: a restart serves it from now on.

        Raises:
            FeedError: it cannot be written (the new environment is closed and deleted;
                ``CURRENT`` still names the environment served).
        """
        try:
            write_current(self.path, target.name, snapshot_id, describe)
        except OSError as exc:
            env.close()
            shutil.rmtree(target, ignore_errors=True)
            raise FeedError(f"cannot record the new legacy feed in {self.path}: {exc}") from exc

    def _serve(self, env: Any, target: Path, snapshot_id: str, entries: int) -> None:
        """Switch :meth:`get` to the new environment in one step; delete the previous one."""
        with self._lock:
            old, old_path = self._env, self._env_path
            self._env, self._env_path = env, target
            self._snapshot, self._entries = snapshot_id, entries
            self._corrupt_keys = set()
            # Counted with the swap: a reader that sees the new feed sees it counted.
            self._loads += 1
            if old is not None:
                old.close()  # no reader is inside it: they hold the lock
        if old_path is not None and self.loader:  # a follower deletes nothing
            shutil.rmtree(old_path, ignore_errors=True)

    def _build_isolated(self, source: FeedSource, snapshot_id: str, target: Path) -> Tally:
        # Parsing and LMDB writes in this process would contend for the GIL with
        # the event loop: py-lmdb releases and retakes it around every put.
        data, code = self._run_loader(loader_job(source, snapshot_id, target))
        return loader_outcome(data, code)

    def _run_loader(self, job: bytes) -> tuple[bytes, int]:
        """Run a loader process on ``job`` to its end: what it reported, and its exit code.

        The process is registered in ``_child`` meanwhile, so :meth:`close` can end it.
        """
        read_fd, write_fd = os.pipe()
        child: subprocess.Popen[bytes] | None = None
        try:
            with self._child_lock:
                if self._closing.is_set():
                    raise FeedError("load abandoned: the legacy feed store is closing")
                child = self._child = subprocess.Popen(
                    [sys.executable, "-c", BOOTSTRAP, str(write_fd)],
                    stdin=subprocess.PIPE,
                    pass_fds=(write_fd,),
                    start_new_session=True,  # a terminal's Ctrl-C is for the server
                )
            os.close(write_fd)
            write_fd = -1
            assert child.stdin is not None
            with contextlib.suppress(BrokenPipeError), child.stdin:  # if it died: see below
                child.stdin.write(json.dumps(sys.path).encode() + b"\n" + job)
            with open(read_fd, "rb") as results:
                read_fd = -1
                data = results.read()  # until the child exits
            return data, child.wait()
        finally:
            with self._child_lock:
                self._child = None
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
            if child is not None and child.poll() is None:  # we failed, not the child
                child.kill()
                child.wait()

    def _next_number(self) -> int:
        numbers = [0]
        for child in self.path.iterdir():
            suffix = child.name[len(SNAP_PREFIX) :]
            if child.name.startswith(SNAP_PREFIX) and suffix.isdigit():
                numbers.append(int(suffix))
        return max(numbers) + 1

    # -- lifecycle --------------------------------------------------------------------

    def close(self) -> None:
        """Stop serving (:meth:`get` answers ``None``) and release the directory.

        Blocks until a load in progress stops: its loader process is
        terminated, or an in-thread load stops at its next batch of records;
        its new environment is deleted. Idempotent.
        """
        self._closing.set()
        with self._child_lock:
            if self._child is not None:
                self._child.terminate()
        with self._load_lock, self._lock:
            if self._env is not None:
                self._env.close()
                self._env = None
            if self._lock_fd >= 0:
                os.close(self._lock_fd)  # releases the flock
                self._lock_fd = -1


async def watch_feed(
    store: FeedStore,
    source: FeedSource,
    *,
    poll_s: float = 5.0,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Keep ``store`` serving ``source``'s newest snapshot. Never returns.

    Loads the current snapshot first unless the store serves it already
    (a restart), then reports started; after that, checks the source every
    ``poll_s`` seconds and loads each new snapshot. Polls and loads run on
    worker threads (a load waits there for the store's loader process). A
    snapshot that fails to load is logged with the reason and not retried
    until the source changes again; the previous feed keeps serving. Each
    load's report is logged (INFO; WARNING with the first bad records).
    Cancelling it abandons a load in progress; :meth:`FeedStore.close` then
    stops that load. A follower store needs no watcher: it follows its loader.

    Raises:
        FeedError: ``store`` is a follower (``loader=False``).
    """
    if not store.loader:
        raise FeedError(f"the legacy feed store {store.path} follows its loader: do not watch it")
    failed: str | None = None

    async def check() -> None:
        nonlocal failed
        try:
            snapshot = await trio.to_thread.run_sync(source.snapshot_id, abandon_on_cancel=True)
        except Exception as exc:  # e.g. an unreadable directory: look again later
            log.warning(
                "legacy feed %s: cannot look for a new snapshot: %s", source.describe(), exc
            )
            return
        if snapshot is None or snapshot in (store.snapshot, failed):
            return
        try:
            report = await trio.to_thread.run_sync(
                store.load, source, snapshot, abandon_on_cancel=True
            )
        except Exception as exc:  # FeedError, or a bug in a source: keep the old feed
            failed = snapshot
            log.error(
                "legacy feed %s: cannot load snapshot %s; the previous feed keeps serving: %s",
                source.describe(),
                snapshot,
                exc,
                exc_info=not isinstance(exc, FeedError),
            )
            return
        failed = None
        _log_report(report)

    await check()
    task_status.started()
    while True:
        await trio.sleep(poll_s)
        await check()


def _log_report(report: LoadReport) -> None:
    log.info(
        "legacy feed %s: serving snapshot %s: %d entries from %d records in %.2f s",
        report.source,
        report.snapshot,
        report.entries,
        report.records,
        report.seconds,
    )
    if report.bad:
        log.warning(
            "legacy feed %s snapshot %s: %d bad records skipped, e.g. %s",
            report.source,
            report.snapshot,
            report.bad,
            "; ".join(f"{bad.where}: {bad.reason}" for bad in report.examples[:5]),
        )
