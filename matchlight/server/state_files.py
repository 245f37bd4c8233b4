"""The data directory's state files, checked by the rules of what writes them.

- ``migration.json``: every surface's state by the rules of ``set_migration``
  (:func:`legacy_adapter.read_migration_state`);
- ``models/CURRENT``: a version name as ``matchlight train`` writes it, naming
  a model that loads (:func:`ranker.check_current`; before ``serve`` starts
  only that its files exist: the ranker loads it once, and stops the server
  if it does not load);
- ``legacy/CURRENT``: the legacy feed store's pointer to the environment it
  serves (:func:`legacy_adapter.read_current`).

``matchlight serve`` checks them before it starts anything and refuses to
start on a bad one, with one line naming the file and the field
(:func:`check_state_files`); ``matchlight verify`` reports every bad one
(:func:`state_file_errors`). Files that do not exist are fine: nothing was
written yet.
"""

from __future__ import annotations

from pathlib import Path

from actors import MatchlightError

MIGRATION_FILE = "migration.json"
LEGACY_DIR = "legacy"


def state_file_errors(
    data: Path, *, feed: bool = True, load_model: bool = True
) -> tuple[dict[str, bool], list[tuple[Path, MatchlightError]]]:
    """Check each state file of ``data``: which exist, and the error of each bad one.

    ``feed``: check ``legacy/CURRENT`` too (``serve`` reads it only with a
    legacy feed). ``load_model``: load the model ``models/CURRENT`` names, not
    only see that its files exist. Blocking.
    """
    from legacy_adapter import FeedError, MigrationError, read_current, read_migration_state
    from ranker import ModelError, check_current

    paths = {
        "migration": data / MIGRATION_FILE,
        "model": data / "models" / "CURRENT",
        "feed": data / LEGACY_DIR / "CURRENT",
    }
    present = {name: path.exists() for name, path in paths.items()}
    errors: list[tuple[Path, MatchlightError]] = []
    try:
        read_migration_state(paths["migration"])
    except MigrationError as exc:
        errors.append((paths["migration"], exc))
    try:
        check_current(data, load=load_model)
    except ModelError as exc:
        errors.append((paths["model"], exc))
    if feed:
        try:
            read_current(data / LEGACY_DIR)
        except FeedError as exc:
            errors.append((paths["feed"], exc))
    else:
        del present["feed"]
    return present, errors


def check_state_files(data: Path, *, feed: bool) -> None:
    """Raise the first bad state file's error (its message names the file and the field).

    Raises:
        MatchlightError: a ``MigrationError``, ``ModelError`` or ``FeedError``.
    """
    # The ranker loads the model once it starts: here only the pointer and its files.
    _, errors = state_file_errors(data, feed=feed, load_model=False)
    if errors:
        raise errors[0][1]
