"""The LMDB store that serves the legacy batch feed, and the watcher that reloads it.

:class:`FeedStore` loads one snapshot at a time (read by
:mod:`legacy_adapter.sources`) into a fresh LMDB environment (``DIR/snap-N``),
so a feed of millions of users never sits in Python dicts, then swaps
:meth:`FeedStore.get` over to it atomically and records it in ``DIR/CURRENT``:
a restart serves the last loaded feed without the source. The reading and
writing run in a child process by default: py-lmdb releases and retakes the
GIL around every put, so a load on a thread of the server would stall its
event loop (measured: tens of milliseconds per ``get``). :func:`watch_feed`
loads the current snapshot and every new one while serving.

Each entry is sealed with a checksum of its key and value
(:mod:`actors.framing`; entries written before that are read as they are).
A damaged entry is never served: :meth:`FeedStore.get` answers ``None`` and
the router serves that user in real time. A ``CURRENT`` that is invalid or
names a missing environment refuses to open (:func:`read_current`), and
:func:`check_feed_store` checks a whole store for ``matchlight verify``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import pickle
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final, TypeAlias, cast

import attrs
import lmdb
import msgpack
import trio

from actors import CorruptRecordError, RateLimitedLog, framing
from actors.closing import Closing
from legacy_adapter.errors import FeedError, LegacyAdapterError
from legacy_adapter.sources import (
    BATCH,
    MAX_EXAMPLES,
    MAX_KEY_BYTES,
    BadRecord,
    FeedEntry,
    FeedSource,
    LoadReport,
)

log = logging.getLogger(__name__)

INITIAL_MAP_SIZE: Final = 64 << 20
CURRENT: Final = "CURRENT"
_SNAP_PREFIX: Final = "snap-"
_SNAP_NAME: Final = re.compile(r"snap-[0-9]+", re.ASCII)


@attrs.frozen(kw_only=True)
class FeedStatistics:
    snapshot: str | None
    entries: int
    loads: int
    last_report: LoadReport | None
    #: Entries of the served feed found corrupt when read (served by real time instead).
    corrupt_entries: int = 0


# -- the store ----------------------------------------------------------------------


def _open_env(path: Path, *, create: bool) -> Any:
    # sync=False: a build syncs once at its end, before the environment is published.
    return lmdb.open(
        str(path),
        map_size=INITIAL_MAP_SIZE,
        max_dbs=0,
        create=create,
        sync=False,
        metasync=False,
        readahead=False,
        meminit=False,
    )


def decode_entry(key: bytes, raw: bytes) -> FeedEntry:
    """The entry stored as ``raw`` under ``key`` (sealed, or from before checksums).

    Raises:
        ValueError: its checksum fails, it does not decode, or it has the wrong shape.
    """
    try:
        value = msgpack.unpackb(framing.unseal(raw, key), use_list=False)
    except CorruptRecordError as exc:
        raise ValueError(str(exc)) from None
    except Exception as exc:  # msgpack raises several kinds for bad bytes
        raise ValueError(f"undecodable: {type(exc).__name__}: {exc}") from None
    if type(value) is not tuple or len(value) != 2:
        raise ValueError("not a pair of items and scores")
    items, scores = value
    # A sealed entry whose checksum holds is what _build packed: its elements need no
    # look (that would cost twice the decoding, on every legacy read); older ones do.
    sealed = framing.is_sealed(raw)
    if type(items) is not tuple or not (sealed or all(type(item) is str for item in items)):
        raise ValueError("items are not a list of ids")
    if scores is not None and (
        type(scores) is not tuple
        or len(scores) != len(items)
        or not (sealed or all(type(score) is float or type(score) is int for score in scores))
    ):
        raise ValueError("scores are not one number per item")
    return FeedEntry(items=items, scores=scores)


def read_json_state(where: Path, error: type[LegacyAdapterError]) -> tuple[Any] | None:
    """``(value,)``: the JSON a state file holds (which may be ``null``); ``None`` if
    there is no such file.

    Raises:
        ``error``: it cannot be read or is not JSON (the message starts with the path).
    """
    try:
        text = where.read_text()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise error(f"{where}: cannot read it: {exc}") from exc
    try:
        return (json.loads(text),)
    except ValueError as exc:
        raise error(f"{where}: not JSON: {exc}") from None


def read_current(path: str | os.PathLike[str]) -> tuple[str, str] | None:
    """The environment and snapshot id ``path/CURRENT`` names, or ``None`` if there is none.

    Raises:
        FeedError: it cannot be read or is invalid (the message names the file and the
            field), or names an environment that does not exist.
    """
    where = Path(path) / CURRENT
    found = read_json_state(where, FeedError)
    if found is None:
        return None
    (current,) = found
    if not isinstance(current, dict):
        raise FeedError(f"{where}: expected an object with env, snapshot and source")
    unknown = sorted(set(current) - {"env", "snapshot", "source"})
    if unknown:
        raise FeedError(f"{where}: {unknown[0]}: unknown field (env, snapshot, source)")
    name, snapshot = current.get("env"), current.get("snapshot")
    if not (isinstance(name, str) and _SNAP_NAME.fullmatch(name)):
        raise FeedError(f"{where}: env: expected a directory name snap-N, got {name!r}")
    if not isinstance(snapshot, str) or not snapshot:
        raise FeedError(f"{where}: snapshot: expected a snapshot id, got {snapshot!r}")
    if "source" in current and not isinstance(current["source"], str):
        raise FeedError(f"{where}: source: expected a string, got {current['source']!r}")
    if not (Path(path) / name).is_dir():
        raise FeedError(
            f"{where}: env: names {name}, which does not exist (remove {Path(path)} to load "
            "the feed afresh from its source)"
        )
    return name, snapshot


#: What a build found: (records read, bad records, the first examples, entries stored).
_Tally: TypeAlias = tuple[int, int, list[BadRecord], int]


def _build(source: FeedSource, snapshot_id: str, target: Path, stop: Callable[[], bool]) -> _Tally:
    """Write a snapshot's records into a new environment at ``target``, synced and closed.

    Blocking. Runs in the loader process, or on the caller's thread. Raises
    what reading the source raises, :class:`lmdb.Error`, or :class:`FeedError`
    once ``stop()`` is true (checked at every batch); the caller deletes
    ``target`` then.
    """
    env = _open_env(target, create=True)
    try:
        describe = source.describe()
        max_key = env.max_key_size()
        pack = msgpack.Packer().pack
        bad = seen = 0
        examples: list[BadRecord] = []
        batch: list[tuple[bytes, bytes]] = []
        records = iter(source.records(snapshot_id))
        while True:
            try:
                record = next(records)
            except StopIteration as stop_iteration:
                value = stop_iteration.value
                read = value if isinstance(value, int) else seen
                break
            seen += 1
            if not isinstance(record, BadRecord):
                surface, user, items, scores = record
                try:
                    key = f"{surface}\0{user}".encode()
                    packed = framing.seal(pack((items, scores)), key)
                except (UnicodeEncodeError, TypeError, ValueError) as exc:
                    record = BadRecord(where=f"{describe} record {seen}", reason=str(exc))
                else:
                    if len(key) <= max_key:
                        batch.append((key, packed))
                        if len(batch) >= BATCH:
                            _commit(env, batch, stop)
                        continue
                    record = BadRecord(
                        where=f"{describe} record {seen}",
                        reason=f"surface and user take {len(key)} bytes; at most {max_key} fit",
                    )
            bad += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append(record)
        _commit(env, batch, stop)
        env.sync(True)
        return read, bad, examples, env.stat()["entries"]
    finally:
        env.close()


def _commit(env: Any, batch: list[tuple[bytes, bytes]], stop: Callable[[], bool]) -> None:
    if stop():
        raise FeedError("load abandoned: the legacy feed store is closing")
    while True:
        try:
            with env.begin(write=True) as txn:
                # In order, overwriting: a user's last record wins.
                txn.cursor().putmulti(batch, overwrite=True)
            break
        except lmdb.MapFullError:
            new_size = env.info()["map_size"] * 2
            log.info("legacy feed: map full; growing to %d MiB", new_size >> 20)
            env.set_mapsize(new_size)
    batch.clear()


# The loader process imports this module itself (with the parent's sys.path):
# it does not depend on the parent's __main__, unlike multiprocessing's spawn.
_BOOTSTRAP: Final = (
    "import json, sys; sys.path[:0] = json.loads(sys.stdin.buffer.readline()); "
    "from legacy_adapter.feed import _loader_main; _loader_main()"
)


def _loader_main() -> None:
    """The loader process: read a job on stdin, :func:`_build`, write the outcome to fd argv[1].

    The job is a pickled ``(source, snapshot_id, target, parent_pid)``; the
    outcome a pickled ``("ok", tally)`` or ``("error", exception)``. The
    build stops if the parent dies (it checks at every batch).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    outcome: tuple[str, object]
    try:
        source, snapshot_id, target, parent = pickle.load(sys.stdin.buffer)
        tally = _build(source, snapshot_id, Path(target), lambda: os.getppid() != parent)
        outcome = ("ok", tally)
    except BaseException as exc:
        exc.add_note(f"in the legacy feed loader process:\n{traceback.format_exc()}")
        outcome = ("error", exc)
    try:
        data = pickle.dumps(outcome)
    except Exception as exc:  # an exception that does not pickle
        data = pickle.dumps(("error", FeedError(f"{outcome[1]!r} (not picklable: {exc})")))
    with open(int(sys.argv[1]), "wb") as results:
        results.write(data)


class FeedStore(Closing):
    """The loaded legacy feed, in LMDB environments under ``path`` (created if missing).

    Each loaded snapshot lives in its own environment ``path/snap-N``;
    ``path/CURRENT`` names the one served. With ``isolate`` (the default) a
    load reads and writes in a child Python process, so a long load never
    holds this process's GIL; the source must then pickle (those of
    :func:`open_source` do). ``isolate=False`` loads on the calling thread.
    One process at a time may open a directory (a ``LOCK`` file holds an
    exclusive ``flock``). The constructor blocks briefly: it opens the
    current environment and removes leftovers of interrupted loads.

    Raises:
        FeedError: the directory cannot be created or is in use by another process.
    """

    def __init__(self, path: str | os.PathLike[str], *, isolate: bool = True) -> None:
        self.path = Path(path)
        self.isolate = isolate
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
        self._corrupt_log = RateLimitedLog(log)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._lock_fd = os.open(self.path / "LOCK", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise FeedError(f"cannot open the legacy feed store in {self.path}: {exc}") from exc
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(self._lock_fd)
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
                self._env = _open_env(env_path, create=False)
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
            if child.name.startswith(_SNAP_PREFIX) and child != self._env_path:
                shutil.rmtree(child, ignore_errors=True)  # an interrupted load or swap
        (self.path / f".{CURRENT}.tmp").unlink(missing_ok=True)
        if self._snapshot is not None:
            log.info("legacy feed: serving snapshot %s (%d entries)", self._snapshot, self._entries)

    # -- reading ----------------------------------------------------------------------

    def get(self, surface: str, user: str) -> FeedEntry | None:
        """The feed's entry for ``user`` on ``surface``, or ``None``. Fast, thread-safe.

        Blocks only for one LMDB read (microseconds). Never raises: an
        absent user, a key that cannot exist and a closed store give ``None``;
        so does an entry that fails its checksum, does not decode or has the
        wrong shape, or that LMDB cannot read (counted in
        :meth:`statistics`, logged once a minute per surface), so the
        router serves that user from the real-time path.
        """
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
        self._corrupt_log.error(
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
                the store is closing. Nothing changed: the previous feed keeps
                serving.
        """
        with self._load_lock:
            if self._closing.is_set():
                raise FeedError("the legacy feed store is closed")
            started = time.monotonic()
            describe = source.describe()
            if snapshot_id is None:
                snapshot_id = source.snapshot_id()
                if snapshot_id is None:
                    raise FeedError(f"legacy feed {describe} has no complete snapshot yet")
            target = self.path / f"{_SNAP_PREFIX}{self._next_number()}"
            try:
                if self.isolate:
                    tally = self._build_isolated(source, snapshot_id, target)
                else:
                    tally = _build(source, snapshot_id, target, self._closing.is_set)
                records, bad, examples, entries = tally
                env = _open_env(target, create=False)
            except (OSError, sqlite3.Error, lmdb.Error) as exc:
                shutil.rmtree(target, ignore_errors=True)
                raise FeedError(f"loading {describe} snapshot {snapshot_id} failed: {exc}") from exc
            except BaseException:
                shutil.rmtree(target, ignore_errors=True)
                raise
            try:
                self._write_current(target.name, snapshot_id, describe)
            except OSError as exc:  # CURRENT still names the environment served
                env.close()
                shutil.rmtree(target, ignore_errors=True)
                raise FeedError(f"cannot record the new legacy feed in {self.path}: {exc}") from exc
            with self._lock:
                old, old_path = self._env, self._env_path
                self._env, self._env_path = env, target
                self._snapshot, self._entries = snapshot_id, entries
                self._corrupt_keys = set()
                # Counted with the swap: a reader that sees the new feed sees it counted.
                self._loads += 1
                if old is not None:
                    old.close()  # no reader is inside it: they hold the lock
            if old_path is not None:
                shutil.rmtree(old_path, ignore_errors=True)
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

    def _build_isolated(self, source: FeedSource, snapshot_id: str, target: Path) -> _Tally:
        # Parsing and LMDB writes in this process would contend for the GIL with
        # the event loop: py-lmdb releases and retakes it around every put.
        try:
            job = pickle.dumps((source, snapshot_id, str(target), os.getpid()))
        except (pickle.PicklingError, TypeError, AttributeError) as exc:
            raise FeedError(
                f"legacy feed {source.describe()} cannot be sent to the loader process "
                f"(open the store with isolate=False): {exc}"
            ) from exc
        read_fd, write_fd = os.pipe()
        child: subprocess.Popen[bytes] | None = None
        try:
            with self._child_lock:
                if self._closing.is_set():
                    raise FeedError("load abandoned: the legacy feed store is closing")
                child = self._child = subprocess.Popen(
                    [sys.executable, "-c", _BOOTSTRAP, str(write_fd)],
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
            code = child.wait()
        finally:
            with self._child_lock:
                self._child = None
            for fd in (read_fd, write_fd):
                if fd >= 0:
                    os.close(fd)
            if child is not None and child.poll() is None:  # we failed, not the child
                child.kill()
                child.wait()
        try:
            status, outcome = pickle.loads(data)
        except Exception as exc:
            raise FeedError(
                f"the legacy feed loader process ended without a readable result "
                f"(exit code {code}): {exc}"
            ) from None
        if status == "error" and isinstance(outcome, BaseException):
            raise outcome
        return cast(_Tally, outcome)

    def _next_number(self) -> int:
        numbers = [0]
        for child in self.path.iterdir():
            suffix = child.name[len(_SNAP_PREFIX) :]
            if child.name.startswith(_SNAP_PREFIX) and suffix.isdigit():
                numbers.append(int(suffix))
        return max(numbers) + 1

    def _write_current(self, env_name: str, snapshot_id: str, source: str) -> None:
        tmp = self.path / f".{CURRENT}.tmp"
        with open(tmp, "w") as f:
            json.dump({"env": env_name, "snapshot": snapshot_id, "source": source}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path / CURRENT)
        try:
            fd = os.open(self.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:  # CURRENT was replaced: the new feed is the one to serve
            log.warning("legacy feed: cannot fsync %s: %s", self.path, exc)

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


# -- checking -----------------------------------------------------------------------


def check_feed_store(
    path: str | os.PathLike[str], problem: Callable[[str, str], None]
) -> dict[str, int]:
    """Check a feed store directory read-only: ``CURRENT`` and every entry it leads to.

    May run beside a server serving it (LMDB allows readers in other processes).
    Each problem is reported as ``problem(where, what)``; returns the counts of
    what was checked (``entries``, and of them ``sealed`` and ``unsealed``, the
    latter written before entries had checksums). Blocking.
    """
    counts = {"entries": 0, "sealed": 0, "unsealed": 0}
    try:
        current = read_current(path)
    except FeedError as exc:
        problem(str(Path(path) / CURRENT), str(exc).removeprefix(f"{Path(path) / CURRENT}: "))
        return counts
    if current is None:
        return counts
    env_path = Path(path) / current[0]
    try:
        env = lmdb.open(str(env_path), readonly=True, create=False, max_dbs=0, readahead=False)
    except lmdb.Error as exc:
        problem(str(env_path), f"cannot open the environment: {exc}")
        return counts
    try:
        with env.begin(buffers=False) as txn:
            for key, raw in txn.cursor():
                counts["entries"] += 1
                counts["sealed" if framing.is_sealed(raw) else "unsealed"] += 1
                try:
                    decode_entry(key, raw)
                except ValueError as exc:
                    surface, _, user = key.decode(errors="replace").partition("\0")
                    problem(f"{env_path}: surface {surface!r}, user {user!r}", str(exc))
    except lmdb.Error as exc:
        problem(str(env_path), f"LMDB cannot read it (the file may be damaged): {exc}")
    finally:
        env.close()
    return counts


# -- watching -----------------------------------------------------------------------


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
    stops that load.
    """
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
