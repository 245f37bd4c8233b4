"""The shadow report: per surface, how the real-time path compares with legacy, and a verdict.

:func:`build_report` folds the router's records (``comparison`` and
``served``, as stored in ``DATA/comparisons``) into a JSON-ready dict;
:func:`format_table` renders it for a terminal and :func:`render_html` as one
self-contained HTML page whose charts are inline SVG (no scripts, no external
URLs: it opens offline). Pure: no I/O here, ``matchlight shadow-report`` reads
and writes.

Ranking metrics (overlap@k, Jaccard@k, RBO, Kendall's tau) are computed over
the comparisons where *both* paths answered (``error`` None); comparisons
where a path failed or had no list for the user (``"absent"``) are counted
as errors or absences instead, so they do not read as disagreement.
"""

from __future__ import annotations

import html
import math
import textwrap
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

import attrs

from legacy_adapter.metrics import (
    DEFAULT_P,
    DEFAULT_THRESHOLDS,
    INVESTIGATE,
    READY,
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


def _nice_ceiling(value: float) -> float:
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
    top = _nice_ceiling(max(float(t) for t in tops if t is not None)) if tops else 1.0
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


def _surface_report(tally: _Surface, thresholds: Thresholds, max_points: int) -> dict[str, Any]:
    real_latency = summary(tally.latency["realtime"])
    noise = _brief(tally.aa_rbo)
    rbo_stats = _brief(tally.rbo)
    noise_median, rbo_median = noise["median"], rbo_stats["median"]
    realtime_errors = sum(tally.errors["realtime"].values())
    fallbacks = tally.sources["fallback"]
    stats = SurfaceStats(
        comparisons=tally.comparisons,
        realtime_errors=realtime_errors,
        served=tally.served,
        fallbacks=fallbacks,
        realtime_p99_ms=real_latency["p99"],
        rbo_median=rbo_median,
        noise_median=noise_median,
        noise_samples=len(tally.aa_rbo),
    )
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
        "verdict": outcome,
        "reasons": reasons,
        "first_ts": tally.first_ts,
        "last_ts": tally.last_ts,
        "series": _series(tally.points, max_points),
        "histograms": _histograms(tally),
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
) -> dict[str, Any]:
    """The report of ``records``: per surface, the metrics, the verdict and the chart data.

    ``k`` compares the top ``k`` of each list (default: each record's own
    ``k``); ``surface`` and ``since`` (unix seconds, inclusive) filter the
    records; other record kinds are ignored. The result is JSON-ready (only
    dicts, lists, str, finite floats, ints and None); ``surfaces`` maps each
    surface name, in sorted order, to its section (empty when no record passed
    the filter). Rates and statistics without data are None.

    Raises:
        ValueError: ``k`` is below 1, ``p`` is not in (0, 1), or ``max_points`` is below 1.
    """
    if k is not None and k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie strictly between 0 and 1, got {p}")
    if max_points < 1:
        raise ValueError(f"max_points must be at least 1, got {max_points}")
    tallies: dict[str, _Surface] = {}
    used = 0
    for record in records:
        kind = record.get("kind")
        if kind not in ("comparison", "served"):
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
        else:
            _add_served(tally, record)
    sections = {
        name: _surface_report(tallies[name], thresholds, max_points) for name in sorted(tallies)
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


# --- terminal ----------------------------------------------------------------------------


def _fmt(value: Any, spec: str = ".3f", scale: float = 1.0) -> str:
    return "-" if value is None else format(value * scale, spec)


def _printable(text: str) -> str:
    """``text`` safe for a terminal: control characters (escape sequences) shown escaped."""
    return text if text.isprintable() else repr(text)[1:-1]


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


_COLUMNS: Final[tuple[tuple[str, int, Callable[[Mapping[str, Any]], str]], ...]] = (
    ("cmp", 7, lambda s: str(s["comparisons"])),
    ("served", 7, lambda s: str(s["served"])),
    ("ovl@k", 6, lambda s: _fmt(s["overlap_at_k"]["mean"])),
    ("jac@k", 6, lambda s: _fmt(s["jaccard_at_k"]["mean"])),
    ("rbo", 6, lambda s: _fmt(s["rbo"]["median"])),
    ("A/A", 6, lambda s: _fmt(s["noise_floor"]["median"])),
    ("tau", 6, lambda s: _fmt(s["kendall_tau"]["mean"])),
    ("rt p50", 7, lambda s: _fmt(s["latency_ms"]["realtime"]["p50"], ".1f")),
    ("rt p99", 7, lambda s: _fmt(s["latency_ms"]["realtime"]["p99"], ".1f")),
    ("lg p50", 7, lambda s: _fmt(s["latency_ms"]["legacy"]["p50"], ".1f")),
    ("lg p99", 7, lambda s: _fmt(s["latency_ms"]["legacy"]["p99"], ".1f")),
    ("err%", 6, lambda s: _fmt(s["errors"]["realtime"]["rate"], ".2f", 100)),
    ("fb%", 6, lambda s: _fmt(s["fallback"]["rate"], ".2f", 100)),
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
    header = f"{'surface':<{width}} " + " ".join(f"{t:>{w}}" for t, w, _ in _COLUMNS)
    header += "  verdict"
    lines = [
        f"shadow report: {report['records']} records, {_when(report['first_ts'])} to "
        f"{_when(report['last_ts'])}, k = {report['k'] or 'per record'}",
        "",
        header,
        "-" * len(header),
    ]
    for name, section in sections.items():
        cells = " ".join(f"{cell(section):>{w}}" for _, w, cell in _COLUMNS)
        lines.append(f"{names[name]:<{width}} {cells}  {section['verdict']}")
    lines.append("")
    for name, section in sections.items():
        lines.append(f"{names[name]}: {section['verdict']}")
        lines.extend(f"  - {_printable(reason)}" for reason in section["reasons"])
    lines.extend(["", textwrap.fill(LEGEND.format(p=report["p"]), width=100)])
    return "\n".join(lines)


# --- HTML --------------------------------------------------------------------------------

_E = html.escape
_WIDTH, _HEIGHT = 640, 260
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 44, 48
_COLORS: Final = {"realtime": "#1f77b4", "legacy": "#e8710a", "aa": "#2ca02c"}
_ALERT: Final = "#c62828"

_CSS: Final = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; } h2 { margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.6em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
.verdict { display: inline-block; padding: 0.2em 0.7em; border-radius: 1em; font-weight: 600; }
.ready { background: #d7f5dd; color: #125c24; }
.investigate { background: #fde0dc; color: #8a1c0f; }
.nodata { background: #eee; color: #555; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
svg { background: #fafafa; border: 1px solid #e4e4e4; }
svg text { font-size: 11px; fill: #333; }
.note { color: #666; font-size: 0.9em; }
"""


def _badge(outcome: str) -> str:
    css = {READY: "ready", INVESTIGATE: "investigate"}.get(outcome, "nodata")
    return f'<span class="verdict {css}">{_E(outcome)}</span>'


def _svg_open(title: str) -> list[str]:
    return [
        f'<svg width="{_WIDTH}" height="{_HEIGHT}" viewBox="0 0 {_WIDTH} {_HEIGHT}" '
        f'role="img" aria-label="{_E(title)}">',
        f"<title>{_E(title)}</title>",
        f'<text x="{_WIDTH / 2}" y="16" text-anchor="middle" font-weight="600">{_E(title)}</text>',
    ]


def _frame(x_label: str, y_label: str) -> list[str]:
    bottom, right = _HEIGHT - _BOTTOM, _WIDTH - _RIGHT
    return [
        f'<line x1="{_LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="#555"/>',
        f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" stroke="#555"/>',
        f'<text x="{(_LEFT + right) / 2}" y="{_HEIGHT - 8}" text-anchor="middle">'
        f"{_E(x_label)}</text>",
        f'<text x="14" y="{(_TOP + bottom) / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {(_TOP + bottom) / 2})">{_E(y_label)}</text>',
    ]


def _y_ticks(top: float, scale: Callable[[float], float], spec: str) -> list[str]:
    out = []
    for i in range(5):
        value = top * i / 4
        y = scale(value)
        out.append(
            f'<line x1="{_LEFT - 4}" y1="{y:.1f}" x2="{_WIDTH - _RIGHT}" y2="{y:.1f}" '
            f'stroke="#e0e0e0"/><text x="{_LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">'
            f"{format(value, spec)}</text>"
        )
    return out


def _legend(entries: Sequence[tuple[str, str]]) -> list[str]:
    out = []
    x = _LEFT + 8
    for label, color in entries:
        out.append(
            f'<rect x="{x}" y="24" width="10" height="10" fill="{color}"/>'
            f'<text x="{x + 14}" y="33">{_E(label)}</text>'
        )
        x += 24 + 7 * len(label)
    return out


def _empty(title: str) -> str:
    return "\n".join(
        [
            *_svg_open(title),
            f'<text x="{_WIDTH / 2}" y="{_HEIGHT / 2}" text-anchor="middle">no data</text>',
            "</svg>",
        ]
    )


def _histogram_svg(
    title: str,
    x_label: str,
    edges: Sequence[float],
    series: Sequence[tuple[str, str, Sequence[int]]],
) -> str:
    """Side-by-side bars per bin, each series (label, color, counts) as shares of its total.

    Shares, not counts: the series differ in size (A/A pairs are a sample).
    """
    present = [
        (label, color, counts, sum(counts)) for label, color, counts in series if any(counts)
    ]
    if not present:
        return _empty(title)
    shares = [[c / total for c in counts] for _, _, counts, total in present]
    top = max(0.05, math.ceil(max(max(s) for s in shares) * 20) / 20)
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM
    bins = len(edges) - 1

    def y_of(value: float) -> float:
        return _HEIGHT - _BOTTOM - plot_h * value / top

    parts = [*_svg_open(title), *_y_ticks(top, y_of, ".0%"), *_frame(x_label, "share")]
    bin_w = plot_w / bins
    bar_w = bin_w * 0.9 / len(present)
    for index, ((label, color, _, total), values) in enumerate(zip(present, shares, strict=True)):
        for b, value in enumerate(values):
            if value:
                x = _LEFT + b * bin_w + bin_w * 0.05 + index * bar_w
                parts.append(
                    f'<rect x="{x:.1f}" y="{y_of(value):.1f}" width="{bar_w:.1f}" '
                    f'height="{_HEIGHT - _BOTTOM - y_of(value):.1f}" fill="{color}">'
                    f"<title>{_E(label)}: {value:.1%} of {total} in "
                    f"[{edges[b]:g}, {edges[b + 1]:g})</title></rect>"
                )
    for b in range(0, bins + 1, max(1, bins // 5)):
        parts.append(
            f'<text x="{_LEFT + b * bin_w:.1f}" y="{_HEIGHT - _BOTTOM + 14}" '
            f'text-anchor="middle">{edges[b]:g}</text>'
        )
    parts.extend(_legend([(f"{label} (n={total})", color) for label, color, _, total in present]))
    parts.append("</svg>")
    return "\n".join(parts)


def _time_label(ts: float, span: float) -> str:
    moment = datetime.fromtimestamp(ts, UTC)
    return moment.strftime("%m-%d %H:%M" if span < 3 * 86400 else "%Y-%m-%d")


def _time_svg(
    title: str,
    y_label: str,
    series: Sequence[tuple[str, str, Sequence[tuple[float, float]]]],
    *,
    y_top: float | None = None,
    lines: bool = False,
    marks: Sequence[tuple[str, float, str]] = (),
) -> str:
    """(time, value) points of each series (label, color, points), as dots and optional lines.

    The y axis runs from 0 to ``y_top`` (default: the largest value, rounded up);
    ``marks`` are dashed horizontal reference lines (label, value, color) drawn
    when they fall inside it.
    """
    present = [(label, color, points) for label, color, points in series if points]
    if not present:
        return _empty(title)
    xs = [x for _, _, points in present for x, _ in points]
    x_low, x_high = min(xs), max(xs)
    span = x_high - x_low
    if span <= 0:
        x_low, x_high, span = x_low - 30, x_high + 30, 60.0
    top = y_top or _nice_ceiling(max(y for _, _, points in present for _, y in points))
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def x_of(value: float) -> float:
        return _LEFT + plot_w * (value - x_low) / (x_high - x_low)

    def y_of(value: float) -> float:
        return _HEIGHT - _BOTTOM - plot_h * min(value, top) / top

    parts = [*_svg_open(title), *_y_ticks(top, y_of, ".3g"), *_frame("time (UTC)", y_label)]
    for i, anchor in enumerate(("start", "middle", "middle", "middle", "end")):
        value = x_low + (x_high - x_low) * i / 4
        parts.append(
            f'<text x="{x_of(value):.1f}" y="{_HEIGHT - _BOTTOM + 14}" text-anchor="{anchor}">'
            f"{_time_label(value, span)}</text>"
        )
    for label, value, color in marks:
        if 0 <= value <= top:
            y = y_of(value)
            parts.append(
                f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_WIDTH - _RIGHT}" y2="{y:.1f}" '
                f'stroke="{color}" stroke-dasharray="5 3" stroke-width="1.2"/>'
                f'<text x="{_WIDTH - _RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end" '
                f'fill="{color}">{_E(label)}</text>'
            )
    for _, color, points in present:
        coordinates = [(x_of(x), y_of(y)) for x, y in points]
        if lines and len(coordinates) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
            parts.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="1.2" '
                'stroke-opacity="0.8"/>'
            )
        parts.extend(
            f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2" fill="{color}" fill-opacity="0.7"/>'
            for x, y in coordinates
        )
    parts.extend(_legend([(label, color) for label, color, _ in present]))
    parts.append("</svg>")
    return "\n".join(parts)


def charts(section: Mapping[str, Any], thresholds: Mapping[str, Any] | None = None) -> list[str]:
    """The four SVG charts of a surface section: RBO and latency histograms, each over time.

    With ``thresholds`` (as in a report), the over-time charts mark the A/A
    median, the RBO below which the verdict is "investigate", and the p99 limit.
    """
    histograms, series = section["histograms"], section["series"]
    rbo_h, ms_h = histograms["rbo"], histograms["latency_ms"]
    overflow = ms_h["overflow"]
    ms_note = (
        f" (last bin includes {overflow['realtime'] + overflow['legacy']} above)"
        if overflow["realtime"] or overflow["legacy"]
        else ""
    )

    def points(key: str) -> list[tuple[float, float]]:
        return [(p["ts"], p[key]) for p in series if p[key] is not None]

    rbo_marks: list[tuple[str, float, str]] = []
    ms_marks: list[tuple[str, float, str]] = []
    floor = section["noise_floor"]["median"]
    if floor is not None:
        rbo_marks.append((f"A/A median {floor:.3f}", floor, _COLORS["aa"]))
    if thresholds is not None:
        if floor is not None:
            low = thresholds["min_rbo_vs_noise"] * floor
            rbo_marks.append((f"investigate below {low:.3f}", low, _ALERT))
        limit = thresholds["max_p99_ms"]
        ms_marks.append((f"p99 limit {limit:g} ms", limit, _ALERT))

    return [
        _histogram_svg(
            "RBO distribution",
            "rank-biased overlap",
            rbo_h["edges"],
            [
                ("real time vs legacy", _COLORS["legacy"], rbo_h["legacy"]),
                ("real time vs itself (A/A)", _COLORS["aa"], rbo_h["aa"]),
            ],
        ),
        _histogram_svg(
            "Latency distribution" + ms_note,
            "latency (ms)",
            ms_h["edges"],
            [
                ("real time", _COLORS["realtime"], ms_h["realtime"]),
                ("legacy", _COLORS["legacy"], ms_h["legacy"]),
            ],
        ),
        _time_svg(
            "RBO over time (real time vs legacy)",
            "RBO",
            [("real time vs legacy", _COLORS["legacy"], points("rbo"))],
            y_top=1.0,
            marks=rbo_marks,
        ),
        _time_svg(
            "Latency over time",
            "latency (ms)",
            [
                ("real time", _COLORS["realtime"], points("realtime_ms")),
                ("legacy", _COLORS["legacy"], points("legacy_ms")),
            ],
            y_top=ms_h["edges"][-1],
            lines=True,
            marks=ms_marks,
        ),
    ]


def _row(cells: Iterable[str], tag: str = "td") -> str:
    return "<tr>" + "".join(f"<{tag}>{cell}</{tag}>" for cell in cells) + "</tr>"


def _details(section: Mapping[str, Any]) -> str:
    """A table of the surface's metrics, one row per measure."""
    lat = section["latency_ms"]
    rows = [
        ("comparisons (both answered)", f"{section['comparisons']} ({section['compared']})"),
        ("served requests", str(section["served"])),
        ("k", ", ".join(str(k) for k in section["k"]) or "-"),
    ]
    for label, key in (
        ("overlap@k", "overlap_at_k"),
        ("Jaccard@k", "jaccard_at_k"),
        ("RBO, real time vs legacy", "rbo"),
        ("RBO_min (lower bound)", "rbo_min"),
        ("Kendall's tau on shared items", "kendall_tau"),
        ("A/A noise floor (RBO)", "noise_floor"),
    ):
        stats = section[key]
        rows.append(
            (
                label,
                f"mean {_fmt(stats['mean'])}, median {_fmt(stats['median'])}, "
                f"p10 {_fmt(stats['p10'])} (n={stats['count']})",
            )
        )
    rows.append(("median RBO / A/A median", _fmt(section["rbo_vs_noise"])))
    for label, key in (("real-time", "realtime"), ("legacy", "legacy"), ("served", "served")):
        rows.append(
            (
                f"{label} latency (ms)",
                f"p50 {_fmt(lat[key]['p50'], '.2f')}, p99 {_fmt(lat[key]['p99'], '.2f')} "
                f"(n={lat[key]['count']})",
            )
        )
    for label, key in (("real-time", "realtime"), ("legacy", "legacy")):
        errors, absent = section["errors"][key], section["absent"][key]
        kinds = ", ".join(f"{kind}: {n}" for kind, n in errors["kinds"].items())
        rows.append(
            (
                f"{label} errors",
                f"{errors['count']} ({_fmt(errors['rate'], '.2f', 100)}%)"
                + (f": {kinds}" if kinds else ""),
            )
        )
        rows.append((f"{label} absent", f"{absent['count']} ({_fmt(absent['rate'], '.2f', 100)}%)"))
    fallback = section["fallback"]
    reasons = ", ".join(f"{kind}: {n}" for kind, n in fallback["reasons"].items())
    rows.append(
        (
            "fallbacks",
            f"{fallback['count']} ({_fmt(fallback['rate'], '.2f', 100)}%)"
            + (f": {reasons}" if reasons else ""),
        )
    )
    rows.append(("sources served", ", ".join(f"{s}: {n}" for s, n in section["sources"].items())))
    rows.append(("modes compared", ", ".join(f"{m}: {n}" for m, n in section["modes"].items())))
    body = "".join(_row([_E(label), _E(value)]) for label, value in rows)
    return f"<table>{body}</table>"


def render_html(report: Mapping[str, Any], *, title: str = "Matchlight shadow report") -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no scripts, no URLs).

    Every record-derived string is escaped. The markup is also well-formed XML.
    """
    sections: Mapping[str, Mapping[str, Any]] = report["surfaces"]
    head = [_E(t) for t, _, _ in _COLUMNS]
    overview = [_row(["surface", *head, "verdict"], "th")]
    for name, section in sections.items():
        overview.append(
            _row(
                [
                    _E(name),
                    *(_E(cell(section)) for _, _, cell in _COLUMNS),
                    _badge(section["verdict"]),
                ]
            )
        )
    thresholds = ", ".join(f"{key} = {value:g}" for key, value in report["thresholds"].items())
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8"/>',
        '<meta name="viewport" content="width=device-width, initial-scale=1"/>',
        f"<title>{_E(title)}</title>",
        f"<style>{_CSS}</style>",
        "</head>",
        "<body>",
        f"<h1>{_E(title)}</h1>",
        f'<p class="note">{report["records"]} records from {_E(_when(report["first_ts"]))} to '
        f"{_E(_when(report['last_ts']))}; k = {_E(str(report['k'] or 'per record'))}; "
        f"thresholds: {_E(thresholds)}.</p>",
        f"<table>{''.join(overview)}</table>",
        f'<p class="note">{_E(LEGEND.format(p=report["p"]))}</p>',
    ]
    for name, section in sections.items():
        parts.extend(
            [
                f'<section id="surface-{_E(name)}">',
                f"<h2>{_E(name)} {_badge(section['verdict'])}</h2>",
                "<ul>",
                *(f"<li>{_E(reason)}</li>" for reason in section["reasons"]),
                "</ul>",
                _details(section),
                '<div class="charts">',
                *charts(section, report["thresholds"]),
                "</div>",
                "</section>",
            ]
        )
    parts.extend(["</body>", "</html>", ""])
    return "\n".join(parts)
