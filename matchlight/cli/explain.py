"""``matchlight explain``: rebuild a past ``recommend`` decision and say whether it holds.

    matchlight explain --data DIR --request-id ID [--config FILE] [--json]

Reads the decision's record from ``DIR/decisions``, replays the event log
read-only up to the position the ranking read (beside a running server too),
loads the model version and the surfaces config it was ranked under (kept in
``DIR/models`` and ``DIR/configs``), ranks again with the ranker's own stages
(:mod:`ranker.replay`) and prints the list with each item's reasons. Then
whether it is identical to what was served (and if not, which positions
differ), and whether the config file or the model changed since.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs

from matchlight.cli.command import Subparsers, add_command, fail

if TYPE_CHECKING:
    from ranker import Surfaces
    from ranker.replay import Difference

#: The exit status when the replay differs from what was served.
DIFFERS: Final = 3


def register(sub: Subparsers) -> None:
    """Add ``explain`` to the ``matchlight`` command line."""
    parser = add_command(
        sub,
        "explain",
        help="rebuild a past recommend decision and check it against what was served",
        description="Rebuild the recommend decision ID of DIR exactly: the user's and "
        "items' state as of the log position the ranking read (the event log replayed "
        "read-only, so a server may be running on DIR), the model version and the surfaces "
        "config it used (kept in DIR/models and DIR/configs), and the ranking's clock. Rank "
        "again with the ranker's own stages, print the list with each item's reasons, and "
        "say whether it is identical to what was served, or which positions differ. Also "
        "says whether the surfaces config file or the current model changed since.",
        epilog="Exit status: 0 identical, 3 the replay differs from what was served, 1 it "
        "cannot be replayed (unknown request id, the model artifact or config copy gone, DIR "
        "not a data directory).",
    )
    parser.add_argument("--data", required=True, metavar="DIR", help="data directory")
    parser.add_argument(
        "--request-id",
        required=True,
        metavar="ID",
        help="the request_id a recommend answer carried",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the surfaces config file to compare with (default: the file the server on DIR "
        "last started with, as DIR/configs/SERVED notes it)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Replay the decision and print it; the exit status (see the epilog)."""
    from actors import LmdbEventStore, MatchlightError
    from ranker import current_version
    from ranker.decisions import find_decision
    from ranker.model import models_dir
    from ranker.replay import Replay, caveats, compare, rebuild

    data = Path(args.data)
    if not (data / "events").is_dir():
        return fail("explain", f"{data} is not a data directory (it has no events/)")
    try:
        record = find_decision(data / "decisions", args.request_id)
        if record is None:
            return fail(
                "explain",
                f"no decision {args.request_id} in {data / 'decisions'} (older than the log "
                "keeps, or not answered by the real-time ranker)",
            )
        version = record.get("model")
        if version is not None and not (models_dir(data) / version).is_dir():
            return fail(
                "explain",
                f"the model {version} that decision {args.request_id} used is gone from "
                f"{models_dir(data)}",
            )
        with LmdbEventStore(data / "events", readonly=True) as store:
            result = rebuild(data, record, Replay(store))
    except MatchlightError as exc:
        return fail("explain", str(exc))
    difference = compare(record, result)
    changes = _changes(data, record, args.config, current_version(data))
    notes = caveats(record)
    if args.json:
        print(json.dumps(_view(record, result.items, difference, notes, changes), indent=2))
    else:
        _print(record, result.items, difference, notes, changes)
    return 0 if difference.identical else DIFFERS


@attrs.frozen(kw_only=True)
class _Changes:
    """What is current now, where it differs from what the decision used."""

    #: The config file compared with (``None``: none, or the server runs without one).
    config_file: Path | None
    #: The digest of the config now (``None``: not known, or the file is unreadable).
    config_now: str | None
    #: How the decision's surface differs between then and now ("" if it does not).
    surface_note: str
    model_now: str | None


def _changes(
    data: Path, record: dict[str, Any], config: str | None, model_now: str | None
) -> _Changes:
    """Compare with ``config`` (a path), else with what ``DIR/configs/SERVED`` notes."""
    from ranker import ConfigError, Surfaces, config_at, load_surfaces, served_config

    path = None if config is None else Path(config)
    now: Surfaces | None = None
    if path is None:
        served = served_config(data)
        if served is not None:
            path = served.path
            if path is None:  # served without a config file: the built-in default
                now = Surfaces()
    if path is not None:
        try:
            now = load_surfaces(path)
        except ConfigError:
            now = None
    note = ""
    if now is not None and now.digest != record["config"]:
        try:
            note = _surface_note(config_at(data, record["config"]), now, record["surface"])
        except ConfigError:
            note = ""
    return _Changes(
        config_file=path,
        config_now=None if now is None else now.digest,
        surface_note=note,
        model_now=model_now,
    )


def _surface_note(then: Surfaces, now: Surfaces, name: str) -> str:
    """Which settings of surface ``name`` differ between two configs, in a few words."""
    if name not in now.policies and name in then.policies:
        return f"surface {name} is gone"
    a, b = attrs.asdict(then.get(name)), attrs.asdict(now.get(name))
    differ = [key for key in a if a[key] != b[key]]
    return f"surface {name}: {', '.join(differ)} differ" if differ else ""


def _view(
    record: dict[str, Any],
    items: list[dict[str, Any]],
    difference: Difference,
    notes: list[str],
    changes: _Changes,
) -> dict[str, Any]:
    return {
        "request_id": record["request_id"],
        "user": record["user"],
        "surface": record["surface"],
        "log_seq": record["log_seq"],
        "now": record["now"],
        "model": record["model"],
        "config": record["config"],
        "items": items,
        "identical": difference.identical,
        "caveats": notes,
        "differences": [
            {"position": p, "served": s, "served_score": ss, "replayed": r, "replayed_score": rs}
            for p, s, ss, r, rs in difference.positions
        ],
        "config_file": None if changes.config_file is None else str(changes.config_file),
        "config_now": changes.config_now,
        "surface_note": changes.surface_note,
        "model_now": changes.model_now,
    }


def _print(
    record: dict[str, Any],
    items: list[dict[str, Any]],
    difference: Difference,
    notes: list[str],
    changes: _Changes,
) -> None:
    when = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(record["ts"]))
    surface = record["surface"]
    if record["requested_surface"] != surface:
        surface += f" (asked for {record['requested_surface']})"
    print(f"decision {record['request_id']} at {when}: user {record['user']}, surface {surface}")
    print(
        f"ranked at log position {record['log_seq']}, clock {record['now']:.3f}, model "
        f"{record['model'] or 'none (heuristic)'}, surfaces config {record['config']}"
    )
    for n, item in enumerate(items, 1):
        print(f"{n:>3}. {item['id']}  {item['score']:.6f}  {_reasons(item['reasons'])}")
    if difference.identical:
        print("identical to what was served")
    else:
        print("differs from what was served:")
        for position, served, served_score, replayed, replayed_score in difference.positions:
            print(
                f"  position {position}: served {_entry(served, served_score)}, "
                f"replayed {_entry(replayed, replayed_score)}"
            )
        for note in notes:
            print(f"  (possibly because {note})")
    for line in _change_lines(record, changes):
        print(line)


def _entry(item: str | None, score: float | None) -> str:
    return "nothing" if item is None else f"{item} ({score:.6f})"


def _reasons(reasons: dict[str, Any]) -> str:
    """An item's reasons on one line: score parts, the user's terms it carries, rules, slot."""
    parts = ", ".join(f"{name} {value:+.3f}" for name, value in reasons["parts"].items())
    out = [parts or "no parts"]
    if reasons["matched"]:
        out.append("matches " + ", ".join(reasons["matched"]))
    if reasons["rules"]:
        out.append("rules " + ", ".join(reasons["rules"]))
    if "diversity" in reasons:
        out.append(f"diversity: {reasons['diversity']}")
    slot = reasons["exploration"]
    if slot["slot"] == "explore":
        out.append(f"explored (draw {slot['draw']}, propensity {slot['propensity']:.3f})")
    if "reciprocal" in reasons:
        out.append(
            "two-sided " + ", ".join(f"{k} {v:.3f}" for k, v in reasons["reciprocal"].items())
        )
    return "; ".join(out)


def _change_lines(record: dict[str, Any], changes: _Changes) -> list[str]:
    lines = []
    where = "no config file" if changes.config_file is None else str(changes.config_file)
    if changes.config_now is None:
        if changes.config_file is not None:
            lines.append(f"the surfaces config {changes.config_file} cannot be read now")
    elif changes.config_now != record["config"]:
        note = f"; {changes.surface_note}" if changes.surface_note else ""
        lines.append(
            f"the surfaces config changed since: digest {record['config']} then, "
            f"{changes.config_now} now ({where}){note}"
        )
    else:
        lines.append(f"the surfaces config is unchanged ({where})")
    if changes.model_now != record["model"]:
        lines.append(
            f"the model changed since: {record['model'] or 'none'} then, "
            f"{changes.model_now or 'none'} now"
        )
    return lines
