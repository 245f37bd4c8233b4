"""State files: replaced atomically and durably, read back as JSON; ``fsync`` by path.

A state file (the feed's ``CURRENT``, ``migration.json``, the model pointer)
must be either its old or its new content after a crash, never half of
either: :func:`write_atomically` writes a temporary file beside it, syncs it,
renames it over the target and syncs the directory that holds the name.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def staging_path(path: str | os.PathLike[str]) -> Path:
    """The temporary file :func:`write_atomically` writes before renaming it to ``path``.

    A leftover one (a crash between the write and the rename) may be deleted.
    """
    path = Path(path)
    return path.with_name(f".{path.name}.tmp")


def write_atomically(path: str | os.PathLike[str], content: str | bytes) -> None:
    """Replace ``path`` with ``content`` (UTF-8 if a string) atomically and durably. Blocking.

    After a crash ``path`` holds its old or its new content. Once the rename
    is done the new content is in place: failing to sync the directory then
    is only logged (the write may not survive a crash, but it happened).

    Raises:
        OSError: the file cannot be written or renamed (``path`` is unchanged).
    """
    path = Path(path)
    tmp = staging_path(path)
    with open(tmp, "wb") as f:
        f.write(content.encode() if isinstance(content, str) else content)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    try:
        fsync_path(path.parent)
    except OSError as exc:
        log.warning("cannot fsync %s after replacing %s: %s", path.parent, path.name, exc)


def read_json_state(where: Path, error: type[Exception]) -> tuple[Any] | None:
    """``(value,)``: the JSON a state file holds (which may be ``null``); ``None`` if
    there is no such file. Blocking.

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


def fsync_path(path: str | os.PathLike[str]) -> None:
    """``fsync`` a file or a directory by path. Blocking. Raises :class:`OSError`."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_directory(directory: str | os.PathLike[str]) -> None:
    """``fsync`` every entry of ``directory``, then the directory. Blocking.

    What makes a directory written in full durable before it is renamed into
    place. Raises :class:`OSError`.
    """
    for child in Path(directory).iterdir():
        fsync_path(child)
    fsync_path(directory)
