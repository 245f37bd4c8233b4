"""The files of a legacy feed store: ``CURRENT``, the ``snap-N`` environments, their entries.

A store directory holds one LMDB environment per loaded snapshot
(``snap-N``) and ``CURRENT``, a JSON object naming the environment served,
its snapshot id and its source. Each entry is keyed ``surface NUL user`` and
sealed with a checksum of its key and value (:mod:`actors.framing`; entries
written before that are read as they are). :func:`read_current` refuses a
``CURRENT`` that is invalid or names a missing environment, and
:func:`check_feed_store` checks a whole store for ``matchlight verify``.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import lmdb
import msgpack

from actors import CorruptRecordError, framing
from actors.files import read_json_state, write_atomically
from legacy_adapter.errors import FeedError
from legacy_adapter.sources import FeedEntry

INITIAL_MAP_SIZE: Final = 64 << 20
CURRENT: Final = "CURRENT"
SNAP_PREFIX: Final = "snap-"
_SNAP_NAME: Final = re.compile(r"snap-[0-9]+", re.ASCII)


def open_env(path: Path, *, create: bool) -> Any:
    """Open a snapshot environment (created if ``create``). Raises :class:`lmdb.Error`."""
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


def open_published_env(path: Path) -> Any:
    """Open a published snapshot environment to read it only. Raises :class:`lmdb.Error`.

    A published environment is never written again, so it is opened without
    LMDB's lock file: this creates no file, not even in an environment that
    the loading process is deleting (the open fails instead).
    """
    return lmdb.open(str(path), readonly=True, lock=False, create=False, max_dbs=0, readahead=False)


def state_signature(path: Path) -> tuple[int, int, int] | None:
    """A cheap fingerprint of a state file replaced by :func:`actors.files.write_atomically`:
    its inode, size and modification time (ns); ``None`` if there is no such file.

    A different signature means the file was replaced. Blocking (one ``stat``).

    Raises:
        OSError: it cannot be looked at (other than being absent).
    """
    try:
        found = os.stat(path)
    except FileNotFoundError:
        return None
    return found.st_ino, found.st_size, found.st_mtime_ns


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


def write_current(path: Path, env_name: str, snapshot_id: str, source: str) -> None:
    """Make ``path/CURRENT`` name the environment ``env_name`` (atomic and durable).

    Raises:
        OSError: it cannot be written (``CURRENT`` still names the previous one).
    """
    record = {"env": env_name, "snapshot": snapshot_id, "source": source}
    write_atomically(path / CURRENT, json.dumps(record))


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
