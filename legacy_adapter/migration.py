"""Each surface's migration state: its mode and settings, their checks, their file.

A surface moves from the legacy feed to real time by mode (``legacy``,
``shadow``, ``canary``, ``interleave``, ``live``; :mod:`legacy_adapter.router`
serves by them). A mode change comes from ``set_migration`` (RPC) or a
``[migration.SURFACE]`` table of the surfaces config file and is checked by
the same rules either way (:func:`check_migration`). The states, and the
config entries last applied, persist in ``DATA/migration.json``
(:func:`read_migration_state`, :func:`write_migration_state`), which every
process serving the data directory shares through :class:`MigrationFile`.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import math
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Final, TypeAlias

import attrs

from actors.files import read_json_state, write_atomically
from legacy_adapter.errors import MigrationError
from legacy_adapter.feed_files import state_signature

MODES: Final = ("legacy", "shadow", "canary", "interleave", "live")
#: Modes that move a sticky share of users (``percent``) and leave the others on the feed.
SHARED_MODES: Final = ("canary", "interleave")
DEFAULT_MODE: Final = "legacy"
STATE_FILE: Final = "migration.json"
#: Held (an exclusive ``flock``) while a process reads, changes and writes ``STATE_FILE``.
LOCK_FILE: Final = "migration.lock"
#: A file modified this recently may be replaced again within the same tick of the
#: file system's clock, with the same size and a recycled inode: its signature is not
#: trusted yet (it is read again), as git does with "racily clean" entries.
RACY_NS: Final = 1_000_000_000


@attrs.frozen(kw_only=True)
class Migration:
    """One surface's migration state."""

    surface: str
    mode: str = DEFAULT_MODE
    #: Share of users on the real-time path in ``canary`` (in the experiment in
    #: ``interleave``), 0 to 100.
    percent: float = 0.0
    #: In ``live``, keep reading the feed and record comparisons.
    reverse_shadow: bool = False
    #: The real-time path's deadline in ``shadow``, ``canary`` and ``live``.
    deadline_ms: float = 50.0
    #: Share of requests shadowed (or reverse-shadowed), 0 to 1: shadow work shares the
    #: serving process's CPU, so a busy surface may compare a sample only.
    shadow_share: float = 1.0
    #: Where the state came from: ``default``, ``config`` or ``rpc``.
    origin: str = "default"
    updated: float = 0.0

    def view(self) -> dict[str, Any]:
        """The state as ``set_migration`` answers it."""
        return {
            "surface": self.surface,
            "mode": self.mode,
            "percent": self.percent,
            "reverse_shadow": self.reverse_shadow,
            "deadline_ms": self.deadline_ms,
            "shadow_share": self.shadow_share,
            "origin": self.origin,
            "updated": self.updated,
        }

    def changed(self, fields: Mapping[str, Any], origin: str) -> Migration:
        """This state after a change (the fields :func:`check_migration` returned) made now.

        Fields left out keep their values, except ``percent``, which only
        ``canary`` and ``interleave`` keep (any other mode is 0).
        """
        mode = fields["mode"]
        return attrs.evolve(
            self,
            mode=mode,
            percent=fields.get("percent", self.percent if mode in SHARED_MODES else 0.0),
            reverse_shadow=fields.get("reverse_shadow", self.reverse_shadow),
            deadline_ms=fields.get("deadline_ms", self.deadline_ms),
            shadow_share=fields.get("shadow_share", self.shadow_share),
            origin=origin,
            updated=time.time(),
        )


#: The surfaces' states and the config entries last applied, by surface.
States: TypeAlias = dict[str, Migration]
Applied: TypeAlias = dict[str, dict[str, Any]]


def load_migration_config(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The ``[migration.SURFACE]`` tables of a surfaces config file (checked).

    Raises:
        MigrationError: the file cannot be read or an entry is invalid.
    """
    import tomllib

    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MigrationError(f"cannot read {path}: {exc}") from exc
    entries = raw.get("migration", {})
    if not isinstance(entries, dict):
        raise MigrationError(f"{path}: migration: expected a table of surfaces")
    out = {}
    for surface, entry in entries.items():
        if not isinstance(entry, dict):
            raise MigrationError(f"{path}: migration.{surface}: expected a table")
        check_migration(surface, entry, f"migration.{surface}")
        out[surface] = dict(entry)
    return out


def check_migration(surface: str, raw: Mapping[str, Any], path: str) -> dict[str, Any]:
    """Validate a mode change (``set_migration`` params or a config entry); the fields to set.

    Raises:
        MigrationError: naming the field (``path.mode`` …).
    """
    unknown = sorted(set(raw) - set(_FIELDS))
    if unknown:
        raise MigrationError(f"{path}.{unknown[0]}: unknown field ({', '.join(_FIELDS)})")
    mode = raw.get("mode")
    if mode not in MODES:
        raise MigrationError(f"{path}.mode: expected one of {', '.join(MODES)}, got {mode!r}")
    out: dict[str, Any] = {"mode": mode}
    if "percent" in raw:
        percent = raw["percent"]
        if isinstance(percent, bool) or not isinstance(percent, int | float):
            raise MigrationError(f"{path}.percent: expected a number from 0 to 100")
        if not 0.0 <= percent <= 100.0:
            raise MigrationError(f"{path}.percent: must lie in [0, 100], got {percent}")
        out["percent"] = float(percent)
    elif mode in SHARED_MODES:
        raise MigrationError(f"{path}.percent: {mode} needs the share of users to move (0-100)")
    if "reverse_shadow" in raw:
        if not isinstance(raw["reverse_shadow"], bool):
            raise MigrationError(f"{path}.reverse_shadow: expected true or false")
        out["reverse_shadow"] = raw["reverse_shadow"]
    if "deadline_ms" in raw:
        deadline = raw["deadline_ms"]
        if isinstance(deadline, bool) or not isinstance(deadline, int | float):
            raise MigrationError(f"{path}.deadline_ms: expected a number of milliseconds")
        if not 0.0 <= deadline <= 60_000.0 or math.isnan(deadline):
            raise MigrationError(f"{path}.deadline_ms: must lie in [0, 60000], got {deadline}")
        out["deadline_ms"] = float(deadline)
    if "shadow_share" in raw:
        share = raw["shadow_share"]
        if isinstance(share, bool) or not isinstance(share, int | float):
            raise MigrationError(f"{path}.shadow_share: expected a number from 0 to 1")
        if not 0.0 <= share <= 1.0:
            raise MigrationError(f"{path}.shadow_share: must lie in [0, 1], got {share}")
        out["shadow_share"] = float(share)
    if not surface:
        raise MigrationError(f"{path}: a surface name is needed")
    return out


_FIELDS: Final = ("mode", "percent", "reverse_shadow", "deadline_ms", "shadow_share")
_ORIGINS: Final = ("default", "config", "rpc")


def read_migration_state(
    path: str | os.PathLike[str],
) -> tuple[dict[str, Migration], dict[str, dict[str, Any]]] | None:
    """The surfaces' states and the config entries last applied, from a ``migration.json``;
    ``None`` if there is none. Each surface is checked by the rules of ``set_migration``.

    Raises:
        MigrationError: the file cannot be read or is invalid; the message names the file
            and the field (``/data/migration.json: surfaces.home.mode: …``).
    """
    where = Path(path)
    found = read_json_state(where, MigrationError)
    if found is None:
        return None
    (raw,) = found
    try:
        return _parse_state(raw)
    except MigrationError as exc:
        raise MigrationError(f"{where}: {exc}") from None


def _parse_state(raw: Any) -> tuple[dict[str, Migration], dict[str, dict[str, Any]]]:
    if not isinstance(raw, dict):
        raise MigrationError("expected an object with surfaces and config_applied")
    unknown = sorted(set(raw) - {"surfaces", "config_applied"})
    if unknown:
        raise MigrationError(f"{unknown[0]}: unknown field (surfaces, config_applied)")
    surfaces = raw.get("surfaces", {})
    if not isinstance(surfaces, dict):
        raise MigrationError("surfaces: expected an object of surfaces")
    states: dict[str, Migration] = {}
    for surface, state in surfaces.items():
        path = f"surfaces.{surface}"
        if not isinstance(state, dict):
            raise MigrationError(f"{path}: expected an object")
        fields = check_migration(
            surface, {k: v for k, v in state.items() if k not in ("origin", "updated")}, path
        )
        origin = state.get("origin", "default")
        if origin not in _ORIGINS:
            raise MigrationError(
                f"{path}.origin: expected one of {', '.join(_ORIGINS)}, got {origin!r}"
            )
        updated = state.get("updated", 0.0)
        if (
            isinstance(updated, bool)
            or not isinstance(updated, int | float)
            or not 0.0 <= updated < math.inf
        ):
            raise MigrationError(f"{path}.updated: expected a time in seconds, got {updated!r}")
        states[surface] = Migration(
            surface=surface, **fields, origin=origin, updated=float(updated)
        )
    applied = raw.get("config_applied", {})
    if not isinstance(applied, dict):
        raise MigrationError("config_applied: expected an object of surfaces")
    for surface, entry in applied.items():
        if not isinstance(entry, dict):
            raise MigrationError(f"config_applied.{surface}: expected an object")
        check_migration(surface, entry, f"config_applied.{surface}")
    return states, {surface: dict(entry) for surface, entry in applied.items()}


def canary_bucket(user: str, surface: str) -> float:
    """A user's stable position in [0, 100) on a surface: in the canary when below ``percent``.

    A hash, not a random draw: the same user stays in (or out of) the canary
    across requests, restarts and processes, and raising the percent only adds users.
    """
    digest = hashlib.blake2b(f"{surface}\0{user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64 * 100.0


def write_migration_state(
    path: str | os.PathLike[str],
    states: Mapping[str, Migration],
    config_applied: Mapping[str, Mapping[str, Any]],
) -> None:
    """Persist the surfaces' states and the config entries last applied (atomic, durable).

    Raises:
        OSError: the file cannot be written (the previous one stays).
    """
    data = {
        "surfaces": {
            name: {k: v for k, v in state.view().items() if k != "surface"}
            for name, state in states.items()
        },
        "config_applied": config_applied,
    }
    write_atomically(path, json.dumps(data, indent=2, sort_keys=True))


class MigrationFile:
    """``DATA/migration.json`` as one of the processes serving a data directory sees it.

    :attr:`states` and :attr:`config_applied` are what this process last read.
    :meth:`refresh` reads the file again only when it was replaced (one
    ``stat`` otherwise), so a change made by another process is seen by the
    next request here. :meth:`update` reads, changes and writes the file under
    an exclusive ``flock`` on ``DATA/migration.lock``, so changes made at once
    by several processes all stand. The constructor reads the file.

    Raises:
        MigrationError: the file is invalid (see :func:`read_migration_state`).
    """

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / STATE_FILE
        self.lock_path = data_dir / LOCK_FILE
        self.states: States = {}
        self.config_applied: Applied = {}
        self._signature: tuple[int, int, int] | None = None
        self._read()

    def refresh(self) -> None:
        """Read the file again if it was replaced since it was last read. Blocking.

        Raises:
            MigrationError: it was replaced by an invalid file; the states last read
                stay, and it is not read again until it is replaced again.
            OSError: it cannot be looked at.
        """
        if state_signature(self.path) != self._signature:
            self._read()

    @contextlib.contextmanager
    def update(self) -> Iterator[tuple[States, Applied]]:
        """Change the states: the block gets them as the file holds them now, changes them in
        place, and they are written back (atomically) if changed. Blocking.

        The lock is held for the block, which must therefore be short and not
        wait for anything else. Nothing is written if the block raises.

        Raises:
            MigrationError: the file is invalid (nothing is written).
            OSError: the lock cannot be taken or the file cannot be written.
        """
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # released when fd is closed
            self._read()
            states = dict(self.states)
            applied = {surface: dict(entry) for surface, entry in self.config_applied.items()}
            yield states, applied
            if (states, applied) != (self.states, self.config_applied):
                write_migration_state(self.path, states, applied)
                self._read()
        finally:
            os.close(fd)

    def _read(self) -> None:
        # The signature is taken before the read: if the file is replaced in between,
        # the next refresh sees a new signature and reads it again.
        signature = state_signature(self.path)
        racy = signature is not None and time.time_ns() - signature[2] < RACY_NS
        self._signature = None if racy else signature
        loaded = read_migration_state(self.path)
        self.states, self.config_applied = loaded if loaded is not None else ({}, {})
