"""The surfaces configs decisions were taken under, kept in ``DATA/configs`` by digest.

A decision record names the surfaces config it was ranked under by its digest
(:func:`ranker.policy.config_digest`, of the file's bytes). So that
``matchlight explain`` can rank it again after the file changed, a server
keeps a copy of every config it serves as ``DATA/configs/DIGEST.toml``
(:func:`keep_copy`, in every process that ranks, as it starts), and notes
which one it serves and the file it read it from in ``DATA/configs/SERVED``
(JSON: ``digest``, ``path``; :func:`keep_config`, once per node), so
``explain`` can tell whether the file changed since.
The copies are small and few (one per config ever served); nothing deletes
them.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Final

import attrs

from actors.files import fsync_path, write_atomically
from ranker.errors import ConfigError
from ranker.policy import Surfaces, load_surfaces

CONFIGS_DIR: Final = "configs"
SERVED: Final = "SERVED"


@attrs.frozen(kw_only=True)
class ServedConfig:
    """What ``DATA/configs/SERVED`` says: the config a server last started with."""

    digest: str
    #: The file it was read from (absolute); ``None`` when it serves no config file.
    path: Path | None


def configs_dir(data: str | os.PathLike[str]) -> Path:
    return Path(data) / CONFIGS_DIR


def keep_config(data: str | os.PathLike[str], surfaces: Surfaces, path: Path | None) -> None:
    """Keep ``surfaces`` (:func:`keep_copy`) and note it, read from ``path``, as the one
    served. Blocking; call it once per serving node, before its workers start.

    Raises:
        OSError: the files cannot be written.
    """
    keep_copy(data, surfaces)
    note = {"digest": surfaces.digest, "path": None if path is None else str(path.resolve())}
    write_atomically(configs_dir(data) / SERVED, json.dumps(note) + "\n")


def keep_copy(data: str | os.PathLike[str], surfaces: Surfaces) -> None:
    """Keep ``surfaces`` as ``configs/DIGEST.toml`` unless it is kept already. Blocking.

    Every process that ranks calls it as it starts (a reader worker restarted after
    its config file was edited serves the new one), so several may at once: each
    writes its own temporary file and renames it into place.

    Raises:
        OSError: the file cannot be written.
    """
    root = configs_dir(data)
    copy = root / f"{surfaces.digest}.toml"
    if copy.exists():
        return
    root.mkdir(parents=True, exist_ok=True)
    fd, staging = tempfile.mkstemp(prefix=f".{surfaces.digest}.", suffix=".tmp", dir=root)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(surfaces.source)
            f.flush()
            os.fsync(f.fileno())
        os.replace(staging, copy)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        raise
    fsync_path(root)


def config_at(data: str | os.PathLike[str], digest: str) -> Surfaces:
    """The surfaces config kept under ``digest``.

    Raises:
        ConfigError: none is kept under it, or it does not load (or is not that digest).
    """
    if not (len(digest) == 16 and all(c in "0123456789abcdef" for c in digest)):
        raise ConfigError(f"{digest!r} is not a config digest")
    where = configs_dir(data) / f"{digest}.toml"
    if not where.is_file():
        raise ConfigError(f"the surfaces config {digest} is not kept in {configs_dir(data)}")
    surfaces = load_surfaces(where)
    if surfaces.digest != digest:
        raise ConfigError(f"{where} was changed: its digest is now {surfaces.digest}")
    return surfaces


def served_config(data: str | os.PathLike[str]) -> ServedConfig | None:
    """What ``configs/SERVED`` says, or ``None`` if no server noted a config (or it is
    unreadable: it only informs)."""
    try:
        note = json.loads((configs_dir(data) / SERVED).read_text())
        digest, path = note["digest"], note["path"]
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if not isinstance(digest, str) or not (path is None or isinstance(path, str)):
        return None
    return ServedConfig(digest=digest, path=None if path is None else Path(path))
