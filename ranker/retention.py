"""Which model artifacts ``matchlight train`` keeps, so a decision can be replayed.

``matchlight explain`` ranks a past decision again with the model version it
recorded, so an artifact must outlive the decisions that name it. After
writing a model, ``train`` deletes the artifacts (``models/VERSION``) that are
none of: the current one, the ``keep`` newest (a server may still be swapping
to one), and any a record of the decision log still names. The decision log
deletes its oldest records past ``serve --decision-retention``, so an
artifact goes some time after the last decision that used it.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Final

from ranker.decisions import referenced
from ranker.model import TRAINED_VERSION, current_version, models_dir

#: Artifacts kept besides those decisions name (``train --keep-models``).
DEFAULT_KEEP_MODELS: Final = 3
DECISIONS_DIR: Final = "decisions"


def prune_models(data: str | os.PathLike[str], *, keep: int = DEFAULT_KEEP_MODELS) -> list[str]:
    """Delete the artifacts nothing needs (see the module docstring); the versions deleted.

    Blocking; may run beside a server on ``data``. Only directories named as
    ``train`` names versions are considered.

    Raises:
        ValueError: ``keep`` is below 1.
        RankerError: the decision log cannot be read (nothing is deleted).
        OSError: an artifact cannot be deleted.
    """
    if keep < 1:
        raise ValueError("keep at least one model")
    root = models_dir(data)
    if not root.is_dir():
        return []
    versions = sorted(
        p.name for p in root.iterdir() if p.is_dir() and TRAINED_VERSION.fullmatch(p.name)
    )
    current = current_version(data)
    candidates = [v for v in versions[:-keep] if v != current]
    if not candidates:
        return []
    log_dir = Path(data) / DECISIONS_DIR
    named = referenced(log_dir, candidates) if (log_dir / "data.mdb").is_file() else set()
    deleted = [v for v in candidates if v not in named]
    for version in deleted:
        shutil.rmtree(root / version)
    return deleted
