"""The surfaces configs decisions were taken under, kept in ``DATA/configs`` by digest.

A decision record names the surfaces config it was ranked under by its digest
(:func:`ranker.policy.config_digest`, of the file's bytes). So that
``matchlight explain`` can rank it again after the file changed, a server
keeps a copy of every config it serves as ``DATA/configs/DIGEST.toml``
(:func:`keep_config`, at start, before it serves a request), and notes which
one it serves and the file it read it from in ``DATA/configs/SERVED`` (JSON:
``digest``, ``path``), so ``explain`` can tell whether the file changed since.
The copies are small and few (one per config ever served); nothing deletes
them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Final

import attrs

from actors.files import write_atomically
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
    """Keep ``surfaces`` as ``configs/DIGEST.toml`` (unless kept already) and note it
    (read from ``path``) as the one served. Blocking; call it once per serving node.

    Raises:
        OSError: the files cannot be written.
    """
    root = configs_dir(data)
    root.mkdir(parents=True, exist_ok=True)
    copy = root / f"{surfaces.digest}.toml"
    if not copy.exists():
        write_atomically(copy, surfaces.source)
    note = {"digest": surfaces.digest, "path": None if path is None else str(path.resolve())}
    write_atomically(root / SERVED, json.dumps(note) + "\n")


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
