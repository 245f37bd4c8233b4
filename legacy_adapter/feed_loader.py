"""Loading one feed snapshot into a new LMDB environment, in a child process or not.

:func:`build` reads a source's snapshot and writes its records into a fresh
environment, a batch per transaction, growing the map as it fills, then syncs
it once. :class:`~legacy_adapter.feed.FeedStore` runs it in a child Python
process (:data:`BOOTSTRAP` runs :func:`loader_main`): py-lmdb releases and
retakes the GIL around every put, so a load on a thread of the server would
stall its event loop. The parent sends a pickled job (:func:`loader_job`) on
the child's stdin and reads a pickled outcome (:func:`loader_outcome`) from a
pipe.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeAlias, cast

import msgpack

from actors import framing
from actors.lmdb_map import GrowingMap
from legacy_adapter.errors import FeedError
from legacy_adapter.feed_files import open_env
from legacy_adapter.records import BATCH, BadRecord
from legacy_adapter.sources import MAX_EXAMPLES, FeedSource

#: What a build found: (records read, bad records, the first examples, entries stored).
Tally: TypeAlias = tuple[int, int, list[BadRecord], int]


def build(source: FeedSource, snapshot_id: str, target: Path, stop: Callable[[], bool]) -> Tally:
    """Write a snapshot's records into a new environment at ``target``, synced and closed.

    Blocking. Runs in the loader process, or on the caller's thread. Raises
    what reading the source raises, :class:`lmdb.Error`, or :class:`FeedError`
    once ``stop()`` is true (checked at every batch); the caller deletes
    ``target`` then.
    """
    env = open_env(target, create=True)
    growing = GrowingMap(env, "legacy feed")
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
                            _commit(growing, batch, stop)
                        continue
                    record = BadRecord(
                        where=f"{describe} record {seen}",
                        reason=f"surface and user take {len(key)} bytes; at most {max_key} fit",
                    )
            bad += 1
            if len(examples) < MAX_EXAMPLES:
                examples.append(record)
        _commit(growing, batch, stop)
        env.sync(True)
        return read, bad, examples, env.stat()["entries"]
    finally:
        env.close()


def _commit(
    growing: GrowingMap, batch: list[tuple[bytes, bytes]], stop: Callable[[], bool]
) -> None:
    if stop():
        raise FeedError("load abandoned: the legacy feed store is closing")

    def put() -> None:
        with growing.env.begin(write=True) as txn:
            # In order, overwriting: a user's last record wins.
            txn.cursor().putmulti(batch, overwrite=True)

    growing.write(put)
    batch.clear()


# The loader process imports this module itself (with the parent's sys.path):
# it does not depend on the parent's __main__, unlike multiprocessing's spawn.
BOOTSTRAP: Final = (
    "import json, sys; sys.path[:0] = json.loads(sys.stdin.buffer.readline()); "
    "from legacy_adapter.feed_loader import loader_main; loader_main()"
)


def loader_job(source: FeedSource, snapshot_id: str, target: Path) -> bytes:
    """The pickled job for a loader process started by this process.

    Raises:
        FeedError: ``source`` does not pickle.
    """
    try:
        return pickle.dumps((source, snapshot_id, str(target), os.getpid()))
    except (pickle.PicklingError, TypeError, AttributeError) as exc:
        raise FeedError(
            f"legacy feed {source.describe()} cannot be sent to the loader process "
            f"(open the store with isolate=False): {exc}"
        ) from exc


def loader_main() -> None:
    """The loader process: read a job on stdin, :func:`build`, write the outcome to fd argv[1].

    The job is a pickled ``(source, snapshot_id, target, parent_pid)``; the
    outcome a pickled ``("ok", tally)`` or ``("error", exception)``. The
    build stops if the parent dies (it checks at every batch).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when to stop
    outcome: tuple[str, object]
    try:
        source, snapshot_id, target, parent = pickle.load(sys.stdin.buffer)
        tally = build(source, snapshot_id, Path(target), lambda: os.getppid() != parent)
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


def loader_outcome(data: bytes, code: int) -> Tally:
    """What the loader process that exited with ``code`` reported (``data``, its outcome).

    Raises:
        FeedError: it reported nothing readable.
        BaseException: what the build raised in the loader process.
    """
    try:
        status, outcome = pickle.loads(data)
    except Exception as exc:
        raise FeedError(
            f"the legacy feed loader process ended without a readable result "
            f"(exit code {code}): {exc}"
        ) from None
    if status == "error" and isinstance(outcome, BaseException):
        raise outcome
    return cast(Tally, outcome)
