"""The decision log: every ``recommend`` response, durably, with bounded retention.

A record holds the request id, time, surface, user, the served items with
their scores and propensities, the model version, the source and the
latency, so responses can be audited and compared later (the exploration
propensities make off-policy evaluation possible). On a stochastic surface a
record also holds, per slot, ``position_propensities`` (the exact probability
of its item at that slot) and ``conditional_propensities`` (the same, given the
items before it): see :mod:`ranker.stochastic`. Records live in their own
LMDB environment (``DATA/decisions``), apart from the event log: they are
observations of the service, not facts of the domain.

:class:`DecisionLog` is the blocking store (group commit: many records per
transaction, synced); :meth:`ranker.actor.RankerActor.run` feeds it from a
bounded channel on a worker thread, so requests never wait for a disk.
Keys are a big-endian sequence number; when more than ``retention``
records are kept, the oldest are deleted in the same transaction.
"""

from __future__ import annotations

import os
import struct
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import lmdb
import msgpack

from actors.closing import Closing
from actors.disk import describe_write_error
from actors.lmdb_map import GrowingMap
from ranker.errors import RankerError

DEFAULT_RETENTION: Final = 1_000_000
_SEQ: Final = struct.Struct(">Q")
#: Tries at opening the records' database while other processes grow the map.
OPEN_TRIES: Final = 10


@attrs.frozen(kw_only=True)
class DecisionStatistics:
    written: int
    kept: int
    trimmed: int
    last_seq: int


class DecisionLog(Closing):
    """Decision records in an LMDB environment at ``path`` (created if missing).

    Several processes may write one log at once (the reader workers of a node):
    each write numbers its records after the last one stored, whoever wrote it.
    ``statistics()`` counts this process's writes, and the log's size as last seen."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention: int = DEFAULT_RETENTION,
        map_size: int = 64 << 20,
    ) -> None:
        if retention < 1:
            raise ValueError("retention must be at least 1")
        self.path = Path(path)
        self.retention = retention
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self._env = lmdb.open(str(self.path), map_size=map_size, max_dbs=1, sync=True)
        except (OSError, lmdb.Error) as exc:
            raise RankerError(f"cannot open the decision log in {self.path}: {exc}") from exc
        self._db = self._open_db()
        self._map = GrowingMap(self._env, "decision log")
        self._lock = threading.Lock()
        self._written = 0
        self._trimmed = 0
        with self._begin() as txn:
            cursor = txn.cursor()
            self._last = _SEQ.unpack(cursor.key())[0] if cursor.last() else 0
            self._kept = txn.stat(self._db)["entries"]

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Append records (and trim past retention) in one synced transaction. Blocking.

        Each record gets ``seq``. The map doubles when full.

        Raises:
            RankerError: the records cannot be written (nothing is).
        """
        if not records:
            return
        with self._lock:
            try:
                self._map.write(lambda: self._write(records))
            except lmdb.Error as exc:
                reason = describe_write_error(self.path, exc)
                raise RankerError(f"cannot write to {self.path}: {reason}") from exc

    def _write(self, records: Sequence[Mapping[str, Any]]) -> None:
        # Several processes (a node's reader workers) may append to one log: LMDB lets one
        # write transaction in at a time, so the last seq and the count are read inside it.
        trimmed = 0
        with self._begin(write=True) as txn:
            cursor = txn.cursor()
            seq = _SEQ.unpack(cursor.key())[0] if cursor.last() else 0
            kept = txn.stat(self._db)["entries"]
            for record in records:
                seq += 1
                if not txn.put(_SEQ.pack(seq), msgpack.packb({**record, "seq": seq}), append=True):
                    raise lmdb.Error(f"record {seq} was not stored (key out of order)")
            kept += len(records)
            if kept > self.retention:
                cursor = txn.cursor()
                cursor.first()
                while kept > self.retention and cursor.delete():
                    kept -= 1
                    trimmed += 1
        self._last, self._kept = seq, kept
        self._written += len(records)
        self._trimmed += trimmed

    def read(self, *, after: int = 0, limit: int = 1000) -> list[dict[str, Any]]:
        """Records with ``seq`` above ``after``, oldest first, at most ``limit``."""
        return list(self._iter(after, limit))

    def _open_db(self) -> Any:
        """The records' database; another process may grow the map meanwhile (then take
        its size and try again: each try that fails saw one more growth)."""
        for _ in range(OPEN_TRIES - 1):
            try:
                return self._env.open_db(b"decisions")
            except lmdb.MapResizedError:
                self._env.set_mapsize(0)
        return self._env.open_db(b"decisions")

    def _begin(self, *, write: bool = False) -> lmdb.Transaction:
        try:
            return self._env.begin(write=write, db=self._db, buffers=False)
        except lmdb.MapResizedError:
            # Another process grew the map: take its size (no transaction is open here).
            self._env.set_mapsize(0)
            return self._env.begin(write=write, db=self._db, buffers=False)

    def _iter(self, after: int, limit: int) -> Iterator[dict[str, Any]]:
        with self._begin() as txn:
            cursor = txn.cursor()
            if not cursor.set_range(_SEQ.pack(after + 1)):
                return
            for n, value in enumerate(cursor.iternext(keys=False, values=True)):
                if n >= limit:
                    return
                yield msgpack.unpackb(value, raw=False)

    def statistics(self) -> DecisionStatistics:
        """This process's writes and trims; the log's records and last seq as stored now."""
        try:
            with self._begin() as txn:
                cursor = txn.cursor()
                self._last = _SEQ.unpack(cursor.key())[0] if cursor.last() else 0
                self._kept = txn.stat(self._db)["entries"]
        except lmdb.Error:
            pass  # the figures as last seen
        return DecisionStatistics(
            written=self._written, kept=self._kept, trimmed=self._trimmed, last_seq=self._last
        )

    def close(self) -> None:
        with self._lock:
            self._env.close()


def find_decision(path: str | os.PathLike[str], request_id: str) -> dict[str, Any] | None:
    """The record of ``request_id`` in the decision log at ``path``, or ``None``. Blocking.

    Read-only, beside a server writing the log; newest first, a record decoded
    only when its bytes hold the id.

    Raises:
        RankerError: there is no decision log at ``path``, or it cannot be read.
    """
    needle = request_id.encode()
    for value in _values(path, newest_first=True):
        if needle in value:
            record = msgpack.unpackb(value, raw=False)
            if isinstance(record, dict) and record.get("request_id") == request_id:
                return record
    return None


def referenced(path: str | os.PathLike[str], names: Sequence[str]) -> set[str]:
    """Which of ``names`` (model versions) a record of the decision log at ``path`` holds.
    Blocking; read-only, beside a server writing the log.

    A record counts when its bytes hold the name (a version name is distinctive; a
    false match only keeps an artifact longer).

    Raises:
        RankerError: there is no decision log at ``path``, or it cannot be read.
    """
    wanted = {name: name.encode() for name in names}
    found: set[str] = set()
    for value in _values(path, newest_first=False):
        if not wanted:
            break
        for name in [name for name, needle in wanted.items() if needle in value]:
            found.add(name)
            del wanted[name]
    return found


def iter_records(path: str | os.PathLike[str]) -> Iterator[dict[str, Any]]:
    """Every record of the decision log at ``path``, oldest first. Blocking; read-only,
    beside a server writing the log (which it sees as of the first read).

    Raises:
        RankerError: there is no decision log at ``path``, or it cannot be read.
    """
    for value in _values(path, newest_first=False):
        record = msgpack.unpackb(value, raw=False)
        if isinstance(record, dict):
            yield record


def _values(path: str | os.PathLike[str], *, newest_first: bool) -> Iterator[bytes]:
    """The encoded records of the decision log at ``path``, read-only (none if nothing was
    ever recorded).

    Raises:
        RankerError: there is no decision log at ``path``, or it cannot be read.
    """
    if not (Path(path) / "data.mdb").is_file():
        raise RankerError(f"no decision log in {path}")
    try:
        env = lmdb.open(str(path), readonly=True, create=False, max_dbs=1, readahead=False)
        try:
            try:
                db = env.open_db(b"decisions", create=False)
            except lmdb.MapResizedError:  # a server grew the map since: take its size
                env.set_mapsize(0)
                db = env.open_db(b"decisions", create=False)
            with env.begin(db=db, buffers=False) as txn:
                cursor = txn.cursor()
                if newest_first:
                    if cursor.last():
                        yield from cursor.iterprev(keys=False, values=True)
                else:
                    yield from cursor.iternext(keys=False, values=True)
        except lmdb.NotFoundError:
            return  # never written to
        finally:
            env.close()
    except lmdb.Error as exc:
        raise RankerError(f"cannot read the decision log in {path}: {exc}") from exc


def check_log(path: str | os.PathLike[str], problem: Callable[[str, str], None]) -> dict[str, int]:
    """Check a decision (or comparison) log read-only: every record decodes to a map
    carrying its own ``seq``, in increasing order.

    May run beside a server writing it. Each problem is reported as
    ``problem(where, what)``; returns ``{"records": N}``. Blocking.
    """
    records = 0
    try:
        env = lmdb.open(str(path), readonly=True, create=False, max_dbs=1, readahead=False)
    except lmdb.Error as exc:
        problem(str(path), f"cannot open it: {exc}")
        return {"records": records}
    try:
        db = env.open_db(b"decisions", create=False)
        with env.begin(db=db, buffers=False) as txn:
            previous = 0
            for key, value in txn.cursor():
                records += 1
                seq = _SEQ.unpack(key)[0] if len(key) == _SEQ.size else None
                where = f"{path} record {seq if seq is not None else repr(key)}"
                if seq is None or seq <= previous:
                    problem(where, "key out of order or not a sequence number")
                    continue
                previous = seq
                try:
                    record = msgpack.unpackb(value, raw=False)
                except Exception as exc:  # msgpack raises several kinds for bad bytes
                    problem(where, f"undecodable: {type(exc).__name__}: {exc}")
                    continue
                if not isinstance(record, dict) or record.get("seq") != seq:
                    problem(where, "not a record map carrying its own seq")
    except lmdb.NotFoundError:
        pass  # never written to
    except lmdb.Error as exc:
        problem(str(path), f"LMDB cannot read it (the file may be damaged): {exc}")
    finally:
        env.close()
    return {"records": records}
