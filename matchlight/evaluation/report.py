"""The replay's results as tables: terminal text, JSON rows, and an HTML fragment.

Rows are the cohorts of :data:`ROWS`: every request, the user's activity so
far (events before the request: ``<10``, ``10-50``, ``>50``), and whether
the user had events before the cut (``known``) or arrived since (``new``).
Each system's hit rate is also given as a ratio to the best simple
real-time baseline of that row — the better of real-time popularity and
real-time item-kNN — which is the bar the project sets (≥ 1.2x).
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs

SYSTEMS: Final = ("realtime", "batch", "popularity", "realtime_popularity", "item_knn")
#: The simple real-time baselines; a row's bar is the better of them.
BASELINES: Final = ("realtime_popularity", "item_knn")
LABELS: Final = {
    "realtime": "Matchlight (real time)",
    "batch": "nightly batch (frozen at the cut)",
    "popularity": "frozen popularity",
    "realtime_popularity": "real-time popularity (7-day half-life)",
    "item_knn": "real-time item-kNN (last 20 likes)",
}
BUCKETS: Final = ("<10", "10-50", ">50")
#: Users the nightly batch knew (they had events before the cut), and those it did not.
COHORTS: Final = ("known", "new")
ROWS: Final = ("all", *BUCKETS, *COHORTS)
ROW_LABELS: Final = {
    "all": "all requests",
    "<10": "users with < 10 events",
    "10-50": "users with 10-50 events",
    ">50": "users with > 50 events",
    "known": "known at the cut",
    "new": "new since the cut",
}


def bucket_of(events_so_far: int) -> str:
    if events_so_far < 10:
        return "<10"
    return "10-50" if events_so_far <= 50 else ">50"


@attrs.define
class Tally:
    """Hits and NDCG of one system on one row."""

    requests: int = 0
    hits: int = 0
    ndcg: float = 0.0

    def add(self, rank: int | None) -> None:
        self.requests += 1
        if rank is not None:
            self.hits += 1
            self.ndcg += 1.0 / math.log2(rank + 2)

    def summary(self, k: int) -> dict[str, Any]:
        n = max(self.requests, 1)
        return {
            f"hit_rate@{k}": round(self.hits / n, 4),
            f"ndcg@{k}": round(self.ndcg / n, 4),
            "requests": self.requests,
        }


def _row(entry: Mapping[str, Any], row: str) -> Mapping[str, Any]:
    if row == "all":
        return entry
    found: Mapping[str, Any] = entry["by_activity" if row in BUCKETS else "by_cohort"][row]
    return found


def cohort_table(results: Mapping[str, Any], k: int) -> list[dict[str, Any]]:
    """Per row: requests, the best baseline, and each system's hit rate and ratio to it.

    A ratio is ``None`` when the best baseline's hit rate is 0.
    """
    systems = [s for s in SYSTEMS if s in results]
    rows = []
    for row in ROWS:
        hit = {s: float(_row(results[s], row)[f"hit_rate@{k}"]) for s in systems}
        present: list[str] = [b for b in BASELINES if b in hit]
        best: str | None = max(present, key=lambda b: hit[b]) if present else None
        bar = 0.0 if best is None else hit[best]
        rows.append(
            {
                "row": row,
                "requests": int(_row(results[systems[0]], row)["requests"]) if systems else 0,
                "best_baseline": best,
                "systems": {
                    s: {
                        f"hit_rate@{k}": hit[s],
                        "ratio_to_best_baseline": round(hit[s] / bar, 3) if bar > 0 else None,
                    }
                    for s in systems
                },
            }
        )
    return rows


def cohort_rows(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The cohort table of ``results`` by row name (``all``, the buckets, ``known``, ``new``)."""
    return {row["row"]: row for row in results["cohort_table"]}


def format_cohorts(table: Sequence[Mapping[str, Any]], k: int) -> str:
    """The cohort table for a terminal: hit@k (x best baseline) per system and row."""
    if not table:
        return ""
    systems = list(table[0]["systems"])
    width = 17
    header = f"{'cohort':<24} {'requests':>8} " + " ".join(f"{s:>{width}}" for s in systems)
    lines = [f"hit rate@{k} (x the best of real-time popularity and item-kNN)", header]
    lines.append("-" * len(header))
    for row in table:
        cells = []
        for s in systems:
            cell = row["systems"][s]
            ratio = cell["ratio_to_best_baseline"]
            text = f"{cell[f'hit_rate@{k}']:.3f}" + ("" if ratio is None else f" ({ratio:.2f}x)")
            cells.append(f"{text:>{width}}")
        lines.append(f"{ROW_LABELS[row['row']]:<24} {row['requests']:>8} " + " ".join(cells))
    return "\n".join(lines)


def cohort_table_html(results: Mapping[str, Any], k: int = 10) -> str:
    """The cohort table as an HTML fragment (one ``<table>``) for a report page to embed.

    ``results`` is what :func:`matchlight.evaluation.replay.replay` returns (or its
    JSON). Cells carry classes: ``best`` marks the row's best system,
    ``above`` a ratio ≥ 1.2 to the best baseline, ``below`` one < 1.
    """
    table = results.get("cohort_table") or cohort_table(results, k)
    if not table:
        return "<table class='replay-cohorts'></table>"
    systems = list(table[0]["systems"])
    out = [
        "<table class='replay-cohorts'>",
        f"<caption>hit rate@{k} by cohort; in brackets, the ratio to the best simple "
        "real-time baseline (real-time popularity or item-kNN) of the row</caption>",
        "<thead><tr><th>cohort</th><th>requests</th>"
        + "".join(f"<th>{html.escape(LABELS.get(s, s))}</th>" for s in systems)
        + "</tr></thead>",
        "<tbody>",
    ]
    for row in table:
        cells = row["systems"]
        top = max(cells[s][f"hit_rate@{k}"] for s in systems)
        tds = []
        for s in systems:
            hit, ratio = cells[s][f"hit_rate@{k}"], cells[s]["ratio_to_best_baseline"]
            classes = []
            if hit == top and top > 0:
                classes.append("best")
            if ratio is not None and s not in BASELINES:
                classes.append("above" if ratio >= 1.2 else "below" if ratio < 1.0 else "near")
            shown = f"{hit:.3f}" + ("" if ratio is None else f" ({ratio:.2f}x)")
            attr = f" class='{' '.join(classes)}'" if classes else ""
            tds.append(f"<td{attr}>{html.escape(shown)}</td>")
        out.append(
            f"<tr><th>{html.escape(ROW_LABELS[row['row']])}</th>"
            f"<td>{int(row['requests']):,}</td>{''.join(tds)}</tr>"
        )
    out += ["</tbody>", "</table>"]
    return "\n".join(out)


def format_table(results: Mapping[str, Any], k: int) -> str:
    """Every system's hit rate and NDCG overall, by activity and by cohort, for a terminal."""
    header = f"{'system':<20} {'users':<7} {'requests':>8} {f'hit@{k}':>8} {f'ndcg@{k}':>8}"
    lines = [header, "-" * len(header)]
    for name in SYSTEMS:
        if name not in results:
            continue
        entry = results[name]
        for row in ROWS:
            values = _row(entry, row)
            lines.append(
                f"{name:<20} {row:<7} {values['requests']:>8} "
                f"{values[f'hit_rate@{k}']:>8.3f} {values[f'ndcg@{k}']:>8.3f}"
            )
    return "\n".join(lines)


def format_timing(results: Mapping[str, Any]) -> str:
    """Latency and freshness of each path as a terminal table (absent entries are skipped)."""
    header = f"{'system':<20} {'answer p50/p99 ms':>19}   freshness"
    lines = [header, "-" * (len(header) + 50)]
    for name in SYSTEMS:
        entry = results.get(name, {})
        latency = entry.get("latency_ms") or {}
        answer = f"{_num(latency.get('p50'))} / {_num(latency.get('p99'))}"
        if "freshness_ms" in entry:
            fresh = entry["freshness_ms"]
            note = (
                f"event visible after its ingest call: p50 {_num(fresh.get('p50'))} ms, "
                f"p99 {_num(fresh.get('p99'))} ms"
            )
        elif "staleness_s" in entry:
            age = entry["staleness_s"]
            note = f"list age at request: p50 {_age(age.get('p50'))}, p99 {_age(age.get('p99'))}"
        elif name in BASELINES:
            note = "updated with every event"
        else:
            note = ""
        lines.append(f"{name:<20} {answer:>19}   {note}")
    recall = results.get("realtime", {}).get("retrieval_recall")
    if recall is not None:
        lines.append(
            f"realtime retrieval recall: {recall['share']:.3f} of revealed items were among the "
            f"candidates ({recall['reported']:,} requests reported it)"
        )
    return "\n".join(lines)


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} d"
    return f"{seconds / 3600:.1f} h" if seconds >= 3600 else f"{seconds:.0f} s"
