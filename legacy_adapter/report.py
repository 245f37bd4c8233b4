"""The shadow report: per surface, how the real-time path compares with legacy, and a verdict.

:func:`build_report` folds the router's records (``comparison`` and
``served``, as stored in ``DATA/comparisons``) into a JSON-ready dict;
:func:`format_table` renders it for a terminal, and
:func:`legacy_adapter.report_html.render_html` as one self-contained HTML page
whose charts are inline SVG (no scripts, no external URLs: it opens offline).
Pure: no I/O here, ``matchlight shadow-report`` reads and writes.

Each surface also carries ``interleaving``: the team-draft experiment's
impressions (``interleaving`` records), their wins, losses and ties once
engagement is credited (:mod:`legacy_adapter.interleaving`; the user
histories come from the caller), the preference for real time with its
confidence sequence and a verdict, overall and by user activity.

Ranking metrics (overlap@k, Jaccard@k, RBO, Kendall's tau) are computed over
the comparisons where *both* paths answered (``error`` None); comparisons
where a path failed or had no list for the user (``"absent"``) are counted
as errors or absences instead, so they do not read as disagreement.
"""

from __future__ import annotations

import math
import textwrap
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from legacy_adapter.interleaving import (
    ACTIVITY,
    DEFAULT_WINDOW_S,
    TEAMS,
    Impression,
    Interaction,
    summarise,
)
from legacy_adapter.metrics import (
    DEFAULT_P,
    DEFAULT_THRESHOLDS,
    SurfaceStats,
    Thresholds,
    jaccard_at_k,
    kendall_tau,
    overlap_at_k,
    rbo,
    rbo_min,
    summary,
    verdict,
)

MAX_POINTS: Final = 500
HISTOGRAM_BINS: Final = 20
ABSENT: Final = "absent"

Point = tuple[float, float | None, float | None, float | None]  # ts, rbo, realtime ms, legacy ms
#: Given the users served interleaved lists, each one's interactions in time order.
Histories = Callable[[set[str]], Mapping[str, Sequence[Interaction]]]


@attrs.define
class _Surface:
    """Running tallies of one surface (mutable while records are folded in)."""

    comparisons: int = 0
    compared: int = 0
    modes: Counter[str] = attrs.Factory(Counter)
    ks: set[int] = attrs.Factory(set)
    errors: dict[str, Counter[str]] = attrs.Factory(
        lambda: {"realtime": Counter(), "legacy": Counter()}
    )
    absent: Counter[str] = attrs.Factory(Counter)
    overlap: list[float] = attrs.Factory(list)
    jaccard: list[float] = attrs.Factory(list)
    rbo: list[float] = attrs.Factory(list)
    rbo_min: list[float] = attrs.Factory(list)
    tau: list[float] = attrs.Factory(list)
    tau_undefined: int = 0
    latency: dict[str, list[float]] = attrs.Factory(
        lambda: {"realtime": [], "legacy": [], "served": []}
    )
    aa_rbo: list[float] = attrs.Factory(list)
    points: list[Point] = attrs.Factory(list)
    served: int = 0
    sources: Counter[str] = attrs.Factory(Counter)
    fallback_reasons: Counter[str] = attrs.Factory(Counter)
    impressions: list[Impression] = attrs.Factory(list)
    #: Interleaving records that do not hold a list with a team per item.
    malformed_impressions: int = 0
    first_ts: float | None = None
    last_ts: float | None = None

    def saw(self, ts: float | None) -> None:
        if ts is None:
            return
        self.first_ts = ts if self.first_ts is None else min(self.first_ts, ts)
        self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)


def _number(value: Any) -> float | None:
    """A finite number from a record field, else None (missing, null, NaN, wrong type)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _kind(message: Any) -> str:
    """A short class of an error or fallback reason: the text before the first colon."""
    text = str(message).split(":", 1)[0].strip()
    return text[:60] or "?"


def _ids(items: Any) -> list[Hashable]:
    """Item ids from a record's list: ``{"id": ...}`` maps give their id; others stay hashable."""
    if not isinstance(items, list | tuple):
        return []
    out: list[Hashable] = []
    for item in items:
        if isinstance(item, Mapping) and "id" in item:
            item = item["id"]
        out.append(item if isinstance(item, Hashable) else repr(item))
    return out


def _path(record: Mapping[str, Any], name: str) -> tuple[list[Hashable], float | None, Any]:
    entry = record.get(name)
    if not isinstance(entry, Mapping):
        return [], None, ABSENT
    return _ids(entry.get("items")), _number(entry.get("latency_ms")), entry.get("error")


def _add_comparison(
    tally: _Surface, record: Mapping[str, Any], k: int | None, p: float, ts: float | None
) -> None:
    tally.comparisons += 1
    tally.modes[str(record.get("mode"))] += 1
    record_k = record.get("k")
    depth = k
    if depth is None and isinstance(record_k, int) and not isinstance(record_k, bool):
        depth = record_k if record_k > 0 else None
    real, real_ms, real_error = _path(record, "realtime")
    legacy, legacy_ms, legacy_error = _path(record, "legacy")
    if depth is None:
        depth = max(len(real), len(legacy), 1)
    tally.ks.add(depth)
    real, legacy = real[:depth], legacy[:depth]
    for name, error, ms in (("realtime", real_error, real_ms), ("legacy", legacy_error, legacy_ms)):
        if error == ABSENT:
            tally.absent[name] += 1
        elif error is not None:
            tally.errors[name][_kind(error)] += 1
        if ms is not None and error != ABSENT:
            tally.latency[name].append(ms)

    similarity: float | None = None
    if real_error is None and legacy_error is None:
        tally.compared += 1
        similarity = rbo(real, legacy, p)
        tally.rbo.append(similarity)
        tally.rbo_min.append(rbo_min(real, legacy, p))
        tally.overlap.append(overlap_at_k(real, legacy, depth))
        tally.jaccard.append(jaccard_at_k(real, legacy, depth))
        tau = kendall_tau(real, legacy)
        if tau is None:
            tally.tau_undefined += 1
        else:
            tally.tau.append(tau)
    again = record.get("aa")
    if real_error is None and isinstance(again, Mapping) and again.get("error") is None:
        tally.aa_rbo.append(rbo(real, _ids(again.get("items"))[:depth], p))
    if ts is not None:
        tally.points.append((ts, similarity, real_ms if real_error != ABSENT else None, legacy_ms))


def _add_served(tally: _Surface, record: Mapping[str, Any]) -> None:
    tally.served += 1
    source = str(record.get("source"))
    tally.sources[source] += 1
    if source == "fallback":
        tally.fallback_reasons[_kind(record.get("reason") or "unknown")] += 1
    ms = _number(record.get("latency_ms"))
    if ms is not None:
        tally.latency["served"].append(ms)


def _add_impression(tally: _Surface, record: Mapping[str, Any], ts: float | None) -> None:
    items, teams = record.get("items"), record.get("teams")
    request_id, user = record.get("request_id"), record.get("user")
    if (
        ts is None
        or not isinstance(request_id, str)
        or not isinstance(user, str)
        or not isinstance(items, list)
        or not isinstance(teams, list)
        or len(items) != len(teams)
        or not all(isinstance(item, str) for item in items)
        or not all(team in TEAMS for team in teams)
    ):
        tally.malformed_impressions += 1
        return
    tally.impressions.append(
        Impression(
            request_id=request_id, user=user, ts=ts, teams=dict(zip(items, teams, strict=True))
        )
    )


def _brief(values: Sequence[float]) -> dict[str, float | int | None]:
    stats = summary(values)
    return {
        "count": stats["count"],
        "mean": stats["mean"],
        "median": stats["p50"],
        "p10": stats["p10"],
        "p90": stats["p90"],
    }


def _rate(count: int, total: int) -> float | None:
    return count / total if total else None


def _median(values: Sequence[float]) -> float | None:
    return summary(values)["p50"] if values else None


def _series(points: list[Point], max_points: int) -> list[dict[str, float | int | None]]:
    """Points in time order; above ``max_points``, equal-count buckets of consecutive ones.

    A bucket's ``ts`` is its mean time, ``rbo`` the mean of its RBOs, and the
    latencies their medians; ``n`` is the number of comparisons it holds.
    """
    ordered = sorted(points, key=lambda point: point[0])
    total = len(ordered)
    buckets = max(1, min(total, max_points))
    out: list[dict[str, float | int | None]] = []
    for i in range(buckets):
        chunk = ordered[i * total // buckets : (i + 1) * total // buckets]
        if not chunk:
            continue
        rbos = [point[1] for point in chunk if point[1] is not None]
        out.append(
            {
                "ts": math.fsum(point[0] for point in chunk) / len(chunk),
                "rbo": math.fsum(rbos) / len(rbos) if rbos else None,
                "realtime_ms": _median([p[2] for p in chunk if p[2] is not None]),
                "legacy_ms": _median([p[3] for p in chunk if p[3] is not None]),
                "n": len(chunk),
            }
        )
    return out


def _counts(values: Sequence[float], edges: Sequence[float]) -> list[int]:
    """Histogram counts; the last bin also takes values at or above its upper edge."""
    bins = len(edges) - 1
    low, width = edges[0], (edges[-1] - edges[0]) / bins
    counts = [0] * bins
    for value in values:
        counts[min(bins - 1, max(0, int((value - low) / width)))] += 1
    return counts


def nice_ceiling(value: float) -> float:
    """The smallest round number (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8 times 10^n) >= ``value``."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if step * magnitude >= value:
            return float(step * magnitude)
    return float(10 * magnitude)  # pragma: no cover - the loop always returns


def _histograms(tally: _Surface) -> dict[str, Any]:
    rbo_edges = [i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)]
    real, legacy = tally.latency["realtime"], tally.latency["legacy"]
    tops = [summary(values)["p99"] for values in (real, legacy) if values]
    top = nice_ceiling(max(float(t) for t in tops if t is not None)) if tops else 1.0
    ms_edges = [top * i / HISTOGRAM_BINS for i in range(HISTOGRAM_BINS + 1)]
    return {
        "rbo": {
            "edges": rbo_edges,
            "legacy": _counts(tally.rbo, rbo_edges),
            "aa": _counts(tally.aa_rbo, rbo_edges),
        },
        "latency_ms": {
            "edges": ms_edges,
            "realtime": _counts(real, ms_edges),
            "legacy": _counts(legacy, ms_edges),
            # Values past the last edge are counted in the last bin; these many of them.
            "overflow": {
                "realtime": sum(1 for v in real if v > top),
                "legacy": sum(1 for v in legacy if v > top),
            },
        },
    }


def _surface_report(
    tally: _Surface,
    thresholds: Thresholds,
    max_points: int,
    interleaving: dict[str, Any],
) -> dict[str, Any]:
    """One surface's section of the report: metrics, verdict, chart data and ``interleaving``
    (its results, as :func:`legacy_adapter.interleaving.summarise` gives them)."""
    real_latency = summary(tally.latency["realtime"])
    noise = _brief(tally.aa_rbo)
    rbo_stats = _brief(tally.rbo)
    noise_median, rbo_median = noise["median"], rbo_stats["median"]
    stats = _surface_stats(tally, real_latency["p99"], rbo_median, noise_median)
    outcome, reasons = verdict(stats, thresholds)
    return {
        "k": sorted(tally.ks),
        "comparisons": tally.comparisons,
        "compared": tally.compared,
        "served": tally.served,
        "modes": dict(sorted(tally.modes.items())),
        "sources": dict(sorted(tally.sources.items())),
        "overlap_at_k": _brief(tally.overlap),
        "jaccard_at_k": _brief(tally.jaccard),
        "rbo": rbo_stats,
        "rbo_min": _brief(tally.rbo_min),
        "kendall_tau": _brief(tally.tau) | {"undefined": tally.tau_undefined},
        "noise_floor": noise,
        "rbo_vs_noise": (
            rbo_median / noise_median
            if rbo_median is not None and noise_median  # None or 0: no ratio
            else None
        ),
        "latency_ms": {
            "realtime": real_latency,
            "legacy": summary(tally.latency["legacy"]),
            "served": summary(tally.latency["served"]),
        },
        **_failures(tally),
        "verdict": outcome,
        "reasons": reasons,
        "first_ts": tally.first_ts,
        "last_ts": tally.last_ts,
        "series": _series(tally.points, max_points),
        "histograms": _histograms(tally),
        "interleaving": interleaving | {"malformed_records": tally.malformed_impressions},
    }


def _surface_stats(
    tally: _Surface, p99_ms: float | None, rbo_median: float | None, noise_median: float | None
) -> SurfaceStats:
    """What :func:`~legacy_adapter.metrics.verdict` judges of a surface."""
    return SurfaceStats(
        comparisons=tally.comparisons,
        realtime_errors=sum(tally.errors["realtime"].values()),
        served=tally.served,
        fallbacks=tally.sources["fallback"],
        realtime_p99_ms=p99_ms,
        rbo_median=rbo_median,
        noise_median=noise_median,
        noise_samples=len(tally.aa_rbo),
    )


def _failures(tally: _Surface) -> dict[str, Any]:
    """The ``errors``, ``absent`` and ``fallback`` sections: what each path failed to answer."""
    fallbacks = tally.sources["fallback"]
    return {
        "errors": {
            name: {
                "count": sum(kinds.values()),
                "rate": _rate(sum(kinds.values()), tally.comparisons),
                "kinds": dict(kinds.most_common(10)),
            }
            for name, kinds in tally.errors.items()
        },
        "absent": {
            name: {
                "count": tally.absent[name],
                "rate": _rate(tally.absent[name], tally.comparisons),
            }
            for name in ("realtime", "legacy")
        },
        "fallback": {
            "count": fallbacks,
            "rate": _rate(fallbacks, tally.served),
            "reasons": dict(tally.fallback_reasons.most_common(10)),
        },
    }


def build_report(
    records: Iterable[Mapping[str, Any]],
    *,
    k: int | None = None,
    surface: str | None = None,
    since: float | None = None,
    thresholds: Thresholds = DEFAULT_THRESHOLDS,
    p: float = DEFAULT_P,
    max_points: int = MAX_POINTS,
    histories: Histories | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    engagement_types: frozenset[str] | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """The report of ``records``: per surface, the metrics, the verdict and the chart data.

    Interleaving impressions are credited from ``histories`` (called once with
    every user served an interleaved list; without it no engagement is known),
    by the rules of :func:`legacy_adapter.interleaving.summarise` with
    ``window_s``, ``engagement_types`` and ``confidence``.

    ``k`` compares the top ``k`` of each list (default: each record's own
    ``k``); ``surface`` and ``since`` (unix seconds, inclusive) filter the
    records; other record kinds are ignored. The result is JSON-ready (only
    dicts, lists, str, finite floats, ints and None); ``surfaces`` maps each
    surface name, in sorted order, to its section (empty when no record passed
    the filter). Rates and statistics without data are None.

    Raises:
        ValueError: ``k`` is below 1, ``p`` is not in (0, 1), or ``max_points`` is below 1.
    """
    _check_options(k, p, max_points)
    tallies, used = _fold(records, k=k, surface=surface, since=since, p=p)
    users = {i.user for tally in tallies.values() for i in tally.impressions}
    found = histories(users) if histories is not None and users else {}
    sections = {
        name: _surface_report(
            tallies[name],
            thresholds,
            max_points,
            summarise(
                tallies[name].impressions,
                found,
                window_s=window_s,
                engagement_types=engagement_types,
                confidence=confidence,
            ),
        )
        for name in sorted(tallies)
    }
    firsts = [s["first_ts"] for s in sections.values() if s["first_ts"] is not None]
    lasts = [s["last_ts"] for s in sections.values() if s["last_ts"] is not None]
    return {
        "k": k,
        "p": p,
        "filters": {"surface": surface, "since": since},
        "thresholds": attrs.asdict(thresholds),
        "records": used,
        "first_ts": min(firsts) if firsts else None,
        "last_ts": max(lasts) if lasts else None,
        "surfaces": sections,
    }


def _check_options(k: int | None, p: float, max_points: int) -> None:
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie strictly between 0 and 1, got {p}")
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")


def _fold(
    records: Iterable[Mapping[str, Any]],
    *,
    k: int | None,
    surface: str | None,
    since: float | None,
    p: float,
) -> tuple[dict[str, _Surface], int]:
    """The tallies of the records that pass the filters, per surface, and how many passed."""
    tallies: dict[str, _Surface] = {}
    used = 0
    for record in records:
        kind = record.get("kind")
        if kind not in ("comparison", "served", "interleaving"):
            continue
        name = record.get("surface")
        if name is None or (surface is not None and name != surface):
            continue
        ts = _number(record.get("ts"))
        if since is not None and (ts is None or ts < since):
            continue
        used += 1
        tally = tallies.setdefault(str(name), _Surface())
        tally.saw(ts)
        if kind == "comparison":
            _add_comparison(tally, record, k, p, ts)
        elif kind == "interleaving":
            _add_impression(tally, record, ts)
        else:
            _add_served(tally, record)
    return tallies, used


# --- terminal ----------------------------------------------------------------------------


def format_value(value: Any, spec: str = ".3f", scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (escape sequences) shown escaped."""
    return text if text.isprintable() else repr(text)[1:-1]


def format_time(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


COLUMNS: Final[tuple[tuple[str, int, Callable[[Mapping[str, Any]], str]], ...]] = (
    ("cmp", 7, lambda s: str(s["comparisons"])),
    ("served", 7, lambda s: str(s["served"])),
    ("ovl@k", 6, lambda s: format_value(s["overlap_at_k"]["mean"])),
    ("jac@k", 6, lambda s: format_value(s["jaccard_at_k"]["mean"])),
    ("rbo", 6, lambda s: format_value(s["rbo"]["median"])),
    ("A/A", 6, lambda s: format_value(s["noise_floor"]["median"])),
    ("tau", 6, lambda s: format_value(s["kendall_tau"]["mean"])),
    ("rt p50", 7, lambda s: format_value(s["latency_ms"]["realtime"]["p50"], ".1f")),
    ("rt p99", 7, lambda s: format_value(s["latency_ms"]["realtime"]["p99"], ".1f")),
    ("lg p50", 7, lambda s: format_value(s["latency_ms"]["legacy"]["p50"], ".1f")),
    ("lg p99", 7, lambda s: format_value(s["latency_ms"]["legacy"]["p99"], ".1f")),
    ("err%", 6, lambda s: format_value(s["errors"]["realtime"]["rate"], ".2f", 100)),
    ("fb%", 6, lambda s: format_value(s["fallback"]["rate"], ".2f", 100)),
)

LEGEND: Final = (
    "cmp: comparisons; ovl@k, jac@k: mean overlap and Jaccard of the top k; rbo: median "
    "rank-biased overlap, real time vs legacy (p = {p:g}); A/A: median RBO of the real-time "
    "path with itself (noise floor); tau: mean Kendall's tau on shared items; rt/lg p50/p99: "
    "latency in ms of the real-time and legacy paths; err%: real-time errors per comparison; "
    "fb%: fallbacks per served request."
)


def format_table(report: Mapping[str, Any]) -> str:
    """The report as a fixed-width terminal table, one row per surface, then each verdict."""
    sections: Mapping[str, Mapping[str, Any]] = report["surfaces"]
    if not sections:
        return "no comparison or served records"
    names = {name: _printable(name) for name in sections}
    width = max(7, *(len(shown) for shown in names.values()))
    header = f"{'surface':<{width}} " + " ".join(f"{t:>{w}}" for t, w, _ in COLUMNS)
    header += "  verdict"
    lines = [
        f"shadow report: {report['records']} records, {format_time(report['first_ts'])} to "
        f"{format_time(report['last_ts'])}, k = {report['k'] or 'per record'}",
        "",
        header,
        "-" * len(header),
    ]
    for name, section in sections.items():
        cells = " ".join(f"{cell(section):>{w}}" for _, w, cell in COLUMNS)
        lines.append(f"{names[name]:<{width}} {cells}  {section['verdict']}")
    lines.append("")
    for name, section in sections.items():
        lines.append(f"{names[name]}: {section['verdict']}")
        lines.extend(f"  - {_printable(reason)}" for reason in section["reasons"])
    lines.extend(format_interleaving(sections, names, width))
    lines.extend(["", textwrap.fill(LEGEND.format(p=report["p"]), width=100)])
    return "\n".join(lines)


INTERLEAVING_COLUMNS: Final[tuple[tuple[str, int, Callable[[Mapping[str, Any]], str]], ...]] = (
    ("impr", 7, lambda s: str(s["impressions"])),
    ("wins", 6, lambda s: str(s["wins"])),
    ("losses", 6, lambda s: str(s["losses"])),
    ("ties", 7, lambda s: str(s["ties"])),
    ("pref", 7, lambda s: format_value(s["preference"], "+.3f")),
    ("interval", 17, lambda s: format_interval(s["ci"])),
)


def format_interval(ci: Sequence[float] | None) -> str:
    return "-" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"


def format_interleaving(
    sections: Mapping[str, Mapping[str, Any]], names: Mapping[str, str], width: int
) -> list[str]:
    """The interleaving table: a row per surface that served interleaved lists, then one per
    activity bucket of its users; empty when none did."""
    shown = {
        name: s["interleaving"] for name, s in sections.items() if s["interleaving"]["impressions"]
    }
    if not shown:
        return []
    first = next(iter(shown.values()))
    width = max(width, *(len(f"  {bucket} events") for bucket in ACTIVITY))
    header = f"{'surface':<{width}} " + " ".join(f"{t:>{w}}" for t, w, _ in INTERLEAVING_COLUMNS)
    lines = [
        "",
        f"interleaving (team draft; engagement credited by request_id, else within "
        f"{first['window_s']:g} s; {first['confidence']:.0%} confidence sequence, valid at "
        "every look):",
        "",
        header + "  verdict",
        "-" * (len(header) + 9),
    ]
    for name, section in shown.items():
        rows = [(names[name], section)]
        rows.extend((f"  {bucket} events", cut) for bucket, cut in section["by_activity"].items())
        for label, row in rows:
            cells = " ".join(f"{cell(row):>{w}}" for _, w, cell in INTERLEAVING_COLUMNS)
            lines.append(f"{label:<{width}} {cells}  {row['verdict']}")
    lines.append(
        "pref: (wins - losses) / (wins + losses), positive when real time is preferred; a win: "
        "more of the engaged items came from the real-time list."
    )
    return lines
