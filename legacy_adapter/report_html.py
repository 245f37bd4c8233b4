"""The shadow report as one self-contained HTML page: tables and inline SVG charts.

No scripts and no external URLs, so the file opens offline; every string that
comes from records is escaped. :func:`render_html` takes what
:func:`legacy_adapter.report.build_report` makes.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Final

from legacy_adapter.interleaving import PREFER_LEGACY, PREFER_REALTIME
from legacy_adapter.metrics import (
    INVESTIGATE,
    READY,
)
from legacy_adapter.report import (
    COLUMNS,
    INTERLEAVING_COLUMNS,
    LEGEND,
    format_time,
    format_value,
    nice_ceiling,
)

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
    css = {
        READY: "ready",
        PREFER_REALTIME: "ready",
        INVESTIGATE: "investigate",
        PREFER_LEGACY: "investigate",
    }.get(outcome, "nodata")
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
    x_low, x_high = _time_range([x for _, _, points in present for x, _ in points])
    top = y_top or nice_ceiling(max(y for _, _, points in present for _, y in points))
    plot_w, plot_h = _WIDTH - _LEFT - _RIGHT, _HEIGHT - _TOP - _BOTTOM

    def x_of(value: float) -> float:
        return _LEFT + plot_w * (value - x_low) / (x_high - x_low)

    def y_of(value: float) -> float:
        return _HEIGHT - _BOTTOM - plot_h * min(value, top) / top

    parts = [*_svg_open(title), *_y_ticks(top, y_of, ".3g"), *_frame("time (UTC)", y_label)]
    parts.extend(_time_ticks(x_low, x_high, x_of))
    parts.extend(_mark_lines(marks, top, y_of))
    for _, color, points in present:
        parts.extend(_plot_series([(x_of(x), y_of(y)) for x, y in points], color, lines=lines))
    parts.extend(_legend([(label, color) for label, color, _ in present]))
    parts.append("</svg>")
    return "\n".join(parts)


def _time_range(xs: Sequence[float]) -> tuple[float, float]:
    """The time axis's ends: the first and last time, a minute wide at least."""
    x_low, x_high = min(xs), max(xs)
    if x_high - x_low <= 0:
        return x_low - 30, x_high + 30
    return x_low, x_high


def _time_ticks(x_low: float, x_high: float, x_of: Callable[[float], float]) -> list[str]:
    """Five time labels along the x axis, from ``x_low`` to ``x_high``."""
    span = x_high - x_low
    parts = []
    for i, anchor in enumerate(("start", "middle", "middle", "middle", "end")):
        value = x_low + span * i / 4
        parts.append(
            f'<text x="{x_of(value):.1f}" y="{_HEIGHT - _BOTTOM + 14}" text-anchor="{anchor}">'
            f"{_time_label(value, span)}</text>"
        )
    return parts


def _mark_lines(
    marks: Sequence[tuple[str, float, str]], top: float, y_of: Callable[[float], float]
) -> list[str]:
    """Dashed horizontal reference lines (label, value, color), those within 0 to ``top``."""
    parts = []
    for label, value, color in marks:
        if 0 <= value <= top:
            y = y_of(value)
            parts.append(
                f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{_WIDTH - _RIGHT}" y2="{y:.1f}" '
                f'stroke="{color}" stroke-dasharray="5 3" stroke-width="1.2"/>'
                f'<text x="{_WIDTH - _RIGHT - 4}" y="{y - 4:.1f}" text-anchor="end" '
                f'fill="{color}">{_E(label)}</text>'
            )
    return parts


def _plot_series(coordinates: list[tuple[float, float]], color: str, *, lines: bool) -> list[str]:
    """One series' points (in SVG coordinates) as dots, joined by a line if ``lines``."""
    parts = []
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
    return parts


#: A dashed reference line of a chart: (label, value, color).
_Mark = tuple[str, float, str]


def charts(section: Mapping[str, Any], thresholds: Mapping[str, Any] | None = None) -> list[str]:
    """The four SVG charts of a surface section: RBO and latency histograms, each over time.

    With ``thresholds`` (as in a report), the over-time charts mark the A/A
    median, the RBO below which the verdict is "investigate", and the p99 limit.
    """
    rbo_marks, ms_marks = _chart_marks(section, thresholds)
    return [*_histogram_charts(section["histograms"]), *_time_charts(section, rbo_marks, ms_marks)]


def _chart_marks(
    section: Mapping[str, Any], thresholds: Mapping[str, Any] | None
) -> tuple[list[_Mark], list[_Mark]]:
    """The reference lines of the RBO and the latency over time charts."""
    rbo_marks: list[_Mark] = []
    ms_marks: list[_Mark] = []
    floor = section["noise_floor"]["median"]
    if floor is not None:
        rbo_marks.append((f"A/A median {floor:.3f}", floor, _COLORS["aa"]))
    if thresholds is not None:
        if floor is not None:
            low = thresholds["min_rbo_vs_noise"] * floor
            rbo_marks.append((f"investigate below {low:.3f}", low, _ALERT))
        limit = thresholds["max_p99_ms"]
        ms_marks.append((f"p99 limit {limit:g} ms", limit, _ALERT))
    return rbo_marks, ms_marks


def _histogram_charts(histograms: Mapping[str, Any]) -> list[str]:
    """The RBO and the latency distributions."""
    rbo_h, ms_h = histograms["rbo"], histograms["latency_ms"]
    overflow = ms_h["overflow"]
    ms_note = (
        f" (last bin includes {overflow['realtime'] + overflow['legacy']} above)"
        if overflow["realtime"] or overflow["legacy"]
        else ""
    )
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
    ]


def _time_charts(
    section: Mapping[str, Any], rbo_marks: list[_Mark], ms_marks: list[_Mark]
) -> list[str]:
    """The RBO and the latencies over time (the latency axis as the histogram's)."""
    series = section["series"]

    def points(key: str) -> list[tuple[float, float]]:
        return [(p["ts"], p[key]) for p in series if p[key] is not None]

    return [
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
            y_top=section["histograms"]["latency_ms"]["edges"][-1],
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
                f"mean {format_value(stats['mean'])}, median {format_value(stats['median'])}, "
                f"p10 {format_value(stats['p10'])} (n={stats['count']})",
            )
        )
    rows.append(("median RBO / A/A median", format_value(section["rbo_vs_noise"])))
    for label, key in (("real-time", "realtime"), ("legacy", "legacy"), ("served", "served")):
        rows.append(
            (
                f"{label} latency (ms)",
                f"p50 {format_value(lat[key]['p50'], '.2f')}, "
                f"p99 {format_value(lat[key]['p99'], '.2f')} (n={lat[key]['count']})",
            )
        )
    for label, key in (("real-time", "realtime"), ("legacy", "legacy")):
        errors, absent = section["errors"][key], section["absent"][key]
        kinds = ", ".join(f"{kind}: {n}" for kind, n in errors["kinds"].items())
        rows.append(
            (
                f"{label} errors",
                f"{errors['count']} ({format_value(errors['rate'], '.2f', 100)}%)"
                + (f": {kinds}" if kinds else ""),
            )
        )
        absent_share = format_value(absent["rate"], ".2f", 100)
        rows.append((f"{label} absent", f"{absent['count']} ({absent_share}%)"))
    fallback = section["fallback"]
    reasons = ", ".join(f"{kind}: {n}" for kind, n in fallback["reasons"].items())
    rows.append(
        (
            "fallbacks",
            f"{fallback['count']} ({format_value(fallback['rate'], '.2f', 100)}%)"
            + (f": {reasons}" if reasons else ""),
        )
    )
    rows.append(("sources served", ", ".join(f"{s}: {n}" for s, n in section["sources"].items())))
    rows.append(("modes compared", ", ".join(f"{m}: {n}" for m, n in section["modes"].items())))
    body = "".join(_row([_E(label), _E(value)]) for label, value in rows)
    return f"<table>{body}</table>"


def _interleaving(section: Mapping[str, Any]) -> list[str]:
    """The surface's interleaving results: a row overall and one per activity bucket."""
    found = section["interleaving"]
    if not found["impressions"]:
        return []
    rows = [_row(["users", *(_E(t) for t, _, _ in INTERLEAVING_COLUMNS), "verdict"], "th")]
    cuts = [("all", found)] + [
        (f"{bucket} events", cut) for bucket, cut in found["by_activity"].items()
    ]
    for label, cut in cuts:
        cells = (_E(cell(cut)) for _, _, cell in INTERLEAVING_COLUMNS)
        rows.append(_row([_E(label), *cells, _badge(cut["verdict"])]))
    return [
        f"<h3>Interleaving {_badge(found['verdict'])}</h3>",
        f'<p class="note">Team-draft interleaving of the real-time and the legacy list. '
        f"Engagement is credited by request_id, else within {found['window_s']:g} s of the "
        f"decision; pref = (wins &#8722; losses) / (wins + losses), positive when real time "
        f"is preferred; the interval is a {found['confidence']:.0%} confidence sequence, "
        "valid however often the report is read.</p>",
        f"<table>{''.join(rows)}</table>",
    ]


def render_html(report: Mapping[str, Any], *, title: str = "Matchlight shadow report") -> str:
    """The report as one self-contained HTML page (inline CSS and SVG, no scripts, no URLs).

    Every record-derived string is escaped. The markup is also well-formed XML.
    """
    sections: Mapping[str, Mapping[str, Any]] = report["surfaces"]
    head = [_E(t) for t, _, _ in COLUMNS]
    overview = [_row(["surface", *head, "verdict"], "th")]
    for name, section in sections.items():
        overview.append(
            _row(
                [
                    _E(name),
                    *(_E(cell(section)) for _, _, cell in COLUMNS),
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
        f'<p class="note">{report["records"]} records from '
        f"{_E(format_time(report['first_ts']))} to {_E(format_time(report['last_ts']))}; "
        f"k = {_E(str(report['k'] or 'per record'))}; "
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
                *_interleaving(section),
                '<div class="charts">',
                *charts(section, report["thresholds"]),
                "</div>",
                "</section>",
            ]
        )
    parts.extend(["</body>", "</html>", ""])
    return "\n".join(parts)
