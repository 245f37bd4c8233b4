"""``matchlight verify``: check everything a data directory stores, also beside a running server.

Parts, each opened read-only (LMDB allows readers in other processes, and
each LMDB part is read in one transaction, so it sees one consistent state):

- ``events``: the event log, its ids, its entity streams and the snapshots
  (:func:`actors.integrity.check_event_store`);
- ``legacy feed``: ``legacy/CURRENT`` and every entry of the environment it
  names (:func:`legacy_adapter.check_feed_store`);
- ``state files``: ``migration.json``, ``models/CURRENT`` and the model it
  names, ``legacy/CURRENT``, by the rules ``serve`` starts with
  (:mod:`matchlight.server.state_files`);
- ``decisions`` and ``comparisons``: every record decodes
  (:func:`ranker.decisions.check_log`);
- ``co-occurrence snapshot``: ``cooccurrence.snapshot`` decodes and was made
  from this event log (:func:`actors.cooccurrence.read_snapshot`).

It prints what each part checked and the first problems of each with where
they are; progress goes to stderr. Exit status: 0 clean, 1 problems found,
2 usage error (no such directory).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

from matchlight.cli.argtypes import positive_int
from matchlight.cli.command import Subparsers, add_command, fail

#: Problems listed per part (all are counted).
DEFAULT_EXAMPLES = 20


@attrs.define
class Part:
    """What one part of the data directory was checked for, and what was wrong."""

    name: str
    max_examples: int = DEFAULT_EXAMPLES
    checked: dict[str, int] = attrs.field(factory=dict)
    problems: int = 0
    examples: list[tuple[str, str]] = attrs.field(factory=list)
    seconds: float = 0.0
    #: Why the part was not checked (it does not exist), if it was not.
    absent: str | None = None

    def problem(self, where: str, what: str) -> None:
        self.problems += 1
        if len(self.examples) < self.max_examples:
            self.examples.append((where, what))

    def view(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "problems": self.problems,
            "examples": [{"where": where, "what": what} for where, what in self.examples],
            "seconds": round(self.seconds, 3),
            "absent": self.absent,
        }


def register(sub: Subparsers) -> None:
    """Add ``verify`` to the ``matchlight`` command line."""
    verify = add_command(
        sub,
        "verify",
        help="check a data directory for damaged or inconsistent records",
        description="Check everything stored in DIR, read-only (safe while a server runs on "
        "it): every event of the log (checksum, decoding, seq 1, 2, ... without gaps, the ids "
        "table), every entity stream entry (names an event of that entity), every snapshot "
        "(checksum, decoding, not past the entity's latest event), the legacy feed store "
        "(legacy/CURRENT, every entry's checksum and shape), the state files (migration.json, "
        "models/CURRENT and the model it names, legacy/CURRENT, by the rules serve starts "
        "with), the decision and comparison logs and the co-occurrence snapshot (decodes, "
        "made from this log). Prints what each part checked and the "
        "first problems with where they are. Exit status: 0 clean, 1 problems found, 2 usage "
        "error. A damaged snapshot is harmless (the server ignores it and rebuilds the entity "
        "from its events); a damaged event fails the reads of its entities until the log is "
        "restored from a backup. About 11 s per million events on a 2-core machine.",
    )
    verify.add_argument("--data", required=True, metavar="DIR", help="data directory")
    verify.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    verify.add_argument(
        "--examples",
        type=positive_int,
        default=DEFAULT_EXAMPLES,
        metavar="N",
        help="problems listed per part; all are counted",
    )
    verify.add_argument("--quiet", action="store_true", help="no progress messages on stderr")
    verify.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Check every part of the data directory; return the exit status (0 clean, 1 problems)."""
    data = Path(args.data)
    if not data.is_dir():
        return fail("verify", f"no data directory {data}", 2)

    def progress(message: str) -> None:
        if not args.quiet:
            print(f"matchlight verify: {message}", file=sys.stderr, flush=True)

    started = time.monotonic()
    checks: list[tuple[str, Callable[[Part], None]]] = [
        ("events", lambda part: _events(data, part, progress)),
        ("legacy feed", lambda part: _feed(data, part)),
        ("state files", lambda part: _state_files(data, part)),
        ("decisions", lambda part: _log(data / "decisions", part)),
        ("comparisons", lambda part: _log(data / "comparisons", part)),
        ("co-occurrence snapshot", lambda part: _cooccurrence(data, part)),
    ]
    parts = []
    for name, check in checks:
        part = Part(name, max_examples=args.examples)
        begun = time.monotonic()
        progress(f"checking {name}")
        check(part)
        part.seconds = time.monotonic() - begun
        parts.append(part)
    total = sum(part.problems for part in parts)
    seconds = time.monotonic() - started
    _print(data, parts, total, seconds)
    if args.json:
        result = {
            "data": str(data),
            "ok": total == 0,
            "problems": total,
            "seconds": round(seconds, 3),
            "parts": {part.name: part.view() for part in parts},
        }
        try:
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
        except OSError as exc:
            return fail("verify", f"cannot write {args.json}: {exc}", 2)
    return 1 if total else 0


# -- parts ------------------------------------------------------------------------------


def _events(data: Path, part: Part, progress: Callable[[str], None]) -> None:
    from actors import LmdbEventStore, StoreError
    from actors.integrity import check_event_store

    path = data / "events"
    if not (path / "data.mdb").is_file():
        part.absent = f"no event store in {path}"
        return
    try:
        store = LmdbEventStore(path, readonly=True)
    except StoreError as exc:
        part.problem(str(path), str(exc))
        return
    try:
        part.checked = check_event_store(store, part.problem, progress)
    except StoreError as exc:  # LMDB itself cannot read on: the file is damaged
        part.problem(str(path), str(exc))
    finally:
        store.close()


def _feed(data: Path, part: Part) -> None:
    from legacy_adapter import check_feed_store

    path = data / "legacy"
    if not path.is_dir():
        part.absent = f"no legacy feed store in {path}"
        return
    part.checked = check_feed_store(path, part.problem)


def _state_files(data: Path, part: Part) -> None:
    from matchlight.server.state_files import state_file_errors

    present, errors = state_file_errors(data)
    part.checked = {name: int(exists) for name, exists in present.items()}
    for path, exc in errors:
        part.problem(str(path), str(exc).removeprefix(f"{path}: "))


def _log(path: Path, part: Part) -> None:
    from ranker.decisions import check_log

    if not (path / "data.mdb").is_file():
        part.absent = f"no log in {path}"
        return
    part.checked = check_log(path, part.problem)


def _cooccurrence(data: Path, part: Part) -> None:
    from actors import CodecError, LmdbEventStore, StoreError
    from actors.cooccurrence import read_snapshot
    from matchlight.server.engine import COOCCURRENCE_FILE

    path = data / COOCCURRENCE_FILE
    if not path.is_file():
        part.absent = f"no {COOCCURRENCE_FILE} (a server writes one as it stops, and while serving)"
        return
    if not (data / "events" / "data.mdb").is_file():
        part.problem(str(path), "there is no event log to check it against")
        return
    try:
        with LmdbEventStore(data / "events", readonly=True) as store:
            loaded, seq = read_snapshot(store, path, store.last_seq())
    except (OSError, CodecError, StoreError) as exc:
        part.problem(str(path), f"{exc} (a server ignores it and replays the whole log)")
        return
    part.checked = {
        "seq": seq,
        "items": len(loaded.rows),
        "pairs": sum(len(row) for row in loaded.rows.values()),
    }


# -- report -----------------------------------------------------------------------------


def _sealed(n: int, unsealed: int) -> str:
    if not n:
        return ""
    return " (all with checksums)" if not unsealed else f" ({unsealed:,} without checksums: older)"


def _checked(part: Part) -> str:
    c = part.checked
    if part.name == "events" and c:
        return (
            f"{c['events']:,} events{_sealed(c['events'], c['events_unsealed'])}, "
            f"{c['ids']:,} ids, {c['stream_entries']:,} stream entries in {c['streams']:,} "
            f"streams, {c['snapshots']:,} snapshots"
            f"{_sealed(c['snapshots'], c['snapshots_unsealed'])}"
        )
    if part.name == "legacy feed" and c:
        return f"{c['entries']:,} entries{_sealed(c['entries'], c['unsealed'])}"
    if part.name == "co-occurrence snapshot" and c:
        return f"as of seq {c['seq']:,}: {c['items']:,} items, {c['pairs']:,} pairs"
    if part.name == "state files":
        names = {"migration": "migration.json", "model": "models/CURRENT", "feed": "legacy/CURRENT"}
        present = [names[name] for name, n in c.items() if n]
        return ", ".join(present) if present else "none written yet"
    return ", ".join(f"{n:,} {name}" for name, n in c.items())


def _print(data: Path, parts: list[Part], total: int, seconds: float) -> None:
    print(f"matchlight verify: {data}")
    for part in parts:
        if part.absent is not None and not part.problems:
            print(f"{part.name}: not present ({part.absent})")
            continue
        verdict = "OK" if not part.problems else f"{part.problems:,} problem(s)"
        print(f"{part.name}: {_checked(part) or 'nothing'}: {verdict} ({part.seconds:.1f} s)")
        for where, what in part.examples:
            print(f"  {where}: {what}")
        if part.problems > len(part.examples):
            print(f"  … and {part.problems - len(part.examples):,} more")
    if total:
        print(f"{total:,} problem(s) found in {seconds:.1f} s")
    else:
        print(f"no problems found in {seconds:.1f} s")
