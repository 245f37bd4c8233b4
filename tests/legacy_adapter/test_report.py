"""The shadow report: :func:`build_report` on known records, and ``matchlight shadow-report``
on a real comparison log (the table, the JSON, the offline HTML, the filters, the failures).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from legacy_adapter.metrics import (
    INVESTIGATE,
    NOT_ENOUGH_DATA,
    READY,
    Thresholds,
    kendall_tau,
    overlap_at_k,
    rbo,
)
from legacy_adapter.report import build_report, format_table
from legacy_adapter.report_html import render_html
from matchlight.cli import shadow_report
from ranker import DecisionLog

START = datetime(2026, 11, 27, tzinfo=UTC).timestamp()
DAY = 86_400.0


def path(items: list[str], ms: float | None = 0.0, error: str | None = None) -> dict[str, Any]:
    return {"items": items, "latency_ms": ms, "error": error}


def comparison(
    surface: str,
    ts: float,
    legacy: dict[str, Any],
    realtime: dict[str, Any],
    *,
    aa: dict[str, Any] | None = None,
    k: int = 10,
    mode: str = "shadow",
) -> dict[str, Any]:
    return {
        "kind": "comparison",
        "ts": ts,
        "surface": surface,
        "user": "u",
        "mode": mode,
        "request_id": "r",
        "trace_id": None,
        "k": k,
        "legacy": legacy,
        "realtime": realtime,
        "aa": aa,
    }


def served(
    surface: str, ts: float, source: str, reason: str | None = None, ms: float = 1.0
) -> dict[str, Any]:
    return {
        "kind": "served",
        "ts": ts,
        "surface": surface,
        "user": "u",
        "mode": "shadow",
        "request_id": "r",
        "source": source,
        "reason": reason,
        "latency_ms": ms,
    }


def _swap(rng: random.Random, items: list[str], swaps: int, pool: list[str]) -> list[str]:
    """``items`` with ``swaps`` adjacent transpositions and one foreign item per swap."""
    out = list(items)
    for _ in range(swaps):
        i = rng.randrange(len(out) - 1)
        out[i], out[i + 1] = out[i + 1], out[i]
        out[rng.randrange(len(out))] = rng.choice(pool)
    return list(dict.fromkeys(out))


def synthetic(seed: int = 5) -> list[dict[str, Any]]:
    """Two days of records on three surfaces.

    ``home_feed`` is healthy (real time close to legacy, closer still to itself);
    ``pro_match`` is broken (unrelated lists, errors, deadline misses, fallbacks,
    slow); ``stories`` has too few requests. Some users are absent from the feed.
    """
    rng = random.Random(seed)
    pool = [f"pro-{i}" for i in range(300)]
    records: list[dict[str, Any]] = []

    for i in range(300):  # home_feed: shadow, healthy
        ts = START + i * (2 * DAY / 300) + rng.random()
        legacy = rng.sample(pool, 10)
        real = _swap(rng, legacy, 2, pool)
        rt_ms = max(0.5, rng.gauss(8.0, 2.0))
        if rng.random() < 0.05:
            records.append(comparison("home_feed", ts, path([], None, "absent"), path(real, rt_ms)))
        else:
            aa = path(_swap(rng, real, 1, pool), rt_ms) if rng.random() < 0.5 else None
            records.append(comparison("home_feed", ts, path(legacy), path(real, rt_ms), aa=aa))
        records.append(served("home_feed", ts, "legacy", ms=0.3))

    for i in range(200):  # pro_match: canary, broken
        ts = START + i * (2 * DAY / 200) + rng.random()
        legacy = rng.sample(pool, 10)
        rt_ms = rng.expovariate(1 / 30.0)
        roll = rng.random()
        if roll < 0.04:
            realtime = path([], rt_ms, "error: RuntimeError: boom")
        elif roll < 0.07:
            realtime = path([], 50.0, "deadline: 50 ms")
        else:
            realtime = path(rng.sample(pool, 10), rt_ms)
        aa = None
        if realtime["error"] is None and rng.random() < 0.3:
            aa = path(_swap(rng, realtime["items"], 1, pool), rt_ms)
        records.append(comparison("pro_match", ts, path(legacy), realtime, aa=aa, k=8, mode="live"))
        if rng.random() < 0.1:
            records.append(served("pro_match", ts, "fallback", "deadline", ms=50.0))
        else:
            records.append(served("pro_match", ts, "realtime", ms=rt_ms))

    for i in range(20):  # stories: too few
        ts = START + DAY + i * 60.0
        legacy = rng.sample(pool, 5)
        records.append(
            comparison("stories", ts, path(legacy), path(_swap(rng, legacy, 1, pool), 3.0), k=5)
        )
        records.append(served("stories", ts, "legacy"))
    records.sort(key=lambda record: record["ts"])
    return records


@pytest.fixture
def data(tmp_path: Path) -> Path:
    directory = tmp_path / "data"
    with DecisionLog(directory / "comparisons") as log:
        log.write(synthetic())
    return directory


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="matchlight")
    sub = parser.add_subparsers(dest="command", required=True)
    shadow_report.register(sub)
    args = parser.parse_args(["shadow-report", *argv])
    code: int = args.func(args)
    return code


def as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, allow_nan=False))


# --- build_report ------------------------------------------------------------------------


def test_build_report_counts_and_metrics_by_hand() -> None:
    records = [
        comparison("s", START, path(["a", "b", "c"]), path(["a", "c", "b"], 5.0), k=3),
        comparison(
            "s",
            START + 1,
            path(["a", "b", "c"]),
            path(["a", "b", "c"], 7.0),
            aa=path(["a", "c", "b"], 6.0),
            k=3,
        ),
        comparison("s", START + 2, path([], None, "absent"), path(["x"], 9.0), k=3),
        comparison("s", START + 3, path(["a"]), path([], 50.0, "deadline: 50 ms"), k=3),
        served("s", START, "legacy"),
        served("s", START + 1, "fallback", "error: KeyError: x"),
        served("s", START + 2, "realtime"),
        served("s", START + 3, "fallback", "deadline"),
        {"kind": "something else", "surface": "s", "ts": START},
        served("other", START - 10, "legacy"),
    ]
    report = build_report(records)
    assert list(report["surfaces"]) == ["other", "s"]
    s = report["surfaces"]["s"]
    assert (s["comparisons"], s["compared"], s["served"]) == (4, 2, 4)
    assert s["errors"]["realtime"] == {"count": 1, "rate": 0.25, "kinds": {"deadline": 1}}
    assert s["errors"]["legacy"]["count"] == 0
    assert s["absent"]["legacy"] == {"count": 1, "rate": 0.25}
    assert s["fallback"] == {"count": 2, "rate": 0.5, "reasons": {"error": 1, "deadline": 1}}
    # Ranking metrics over the two comparisons where both answered.
    assert s["rbo"]["mean"] == pytest.approx((0.955 + 1.0) / 2)
    assert s["overlap_at_k"]["mean"] == 1.0
    # [a,c,b] vs [a,b,c]: 2 of 3 pairs concordant, tau 1/3; identical lists, tau 1.
    assert s["kendall_tau"]["mean"] == pytest.approx((1 / 3 + 1) / 2)
    assert s["kendall_tau"]["count"] == 2
    assert s["noise_floor"]["count"] == 1
    assert s["noise_floor"]["median"] == pytest.approx(0.955)
    # Latency: every measured real-time answer, failures included; the absent legacy not.
    assert s["latency_ms"]["realtime"]["count"] == 4
    assert s["latency_ms"]["realtime"]["p50"] == 8.0
    assert s["latency_ms"]["legacy"]["count"] == 3
    assert s["verdict"] == INVESTIGATE  # 25% errors, 50% fallbacks
    assert report["first_ts"] == START - 10
    assert report["last_ts"] == START + 3
    assert as_json(report) == report


def test_build_report_k_surface_and_since() -> None:
    records = synthetic()
    top3 = build_report(records, k=3, surface="stories")
    assert list(top3["surfaces"]) == ["stories"]
    assert top3["surfaces"]["stories"]["k"] == [3]
    expected = [
        overlap_at_k(r["realtime"]["items"][:3], r["legacy"]["items"][:3], 3)
        for r in records
        if r["kind"] == "comparison" and r["surface"] == "stories"
    ]
    assert top3["surfaces"]["stories"]["overlap_at_k"]["mean"] == pytest.approx(
        math.fsum(expected) / len(expected)
    )
    assert build_report(records)["surfaces"]["pro_match"]["k"] == [8]

    since = START + DAY
    later = build_report(records, since=since)
    for name, section in later["surfaces"].items():
        assert section["comparisons"] == sum(
            1
            for r in records
            if r["kind"] == "comparison" and r["surface"] == name and r["ts"] >= since
        )
        assert section["first_ts"] >= since
    assert build_report(records, surface="nope")["surfaces"] == {}


def test_the_time_series_is_capped_in_buckets() -> None:
    records = synthetic()
    report = build_report(records, max_points=25)
    series = report["surfaces"]["home_feed"]["series"]
    assert len(series) == 25
    assert sum(point["n"] for point in series) == 300
    assert [p["ts"] for p in series] == sorted(p["ts"] for p in series)
    full = build_report(records)["surfaces"]["stories"]["series"]
    assert len(full) == 20
    assert all(point["n"] == 1 for point in full)


def test_bad_numbers_in_records_are_ignored() -> None:
    records = [
        comparison("s", START, path(["a"]), path(["a"], math.nan)),
        comparison("s", START, path(["a"]), path(["a"], math.inf)),
        served("s", START, "realtime", ms=math.nan),
    ]
    report = build_report(records)
    assert report["surfaces"]["s"]["latency_ms"]["realtime"]["count"] == 0
    json.dumps(report, allow_nan=False)


def test_build_report_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError, match="k must"):
        build_report([], k=0)
    with pytest.raises(ValueError, match="max_points"):
        build_report([], max_points=0)


def test_the_synthetic_surfaces_get_the_expected_verdicts() -> None:
    report = build_report(synthetic())
    verdicts = {name: s["verdict"] for name, s in report["surfaces"].items()}
    assert verdicts == {"home_feed": READY, "pro_match": INVESTIGATE, "stories": NOT_ENOUGH_DATA}
    reasons = " | ".join(report["surfaces"]["pro_match"]["reasons"])
    for expected in ("error rate", "fallback rate", "p99", "beyond normal variation"):
        assert expected in reasons


# --- HTML ----------------------------------------------------------------------------------

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}


class TagBalance(HTMLParser):
    """Checks that every opened element is closed, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.svgs = 0
        self.attributes: set[str] = set()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.svgs += tag == "svg"
        self.attributes.update(name for name, _ in attrs)
        if tag not in VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attributes.update(name for name, _ in attrs)  # <line .../>: opened and closed

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:]}")
        else:
            self.stack.pop()


def check_html(text: str, surfaces: int) -> ET.Element:
    balance = TagBalance()
    balance.feed(text)
    balance.close()
    assert balance.errors == []
    assert balance.stack == []
    assert balance.svgs == 4 * surfaces  # RBO and latency histograms, each over time
    # Nothing to fetch: no scripts, no sources, no links, no external references.
    assert not balance.attributes & {"src", "href", "xlink:href", "srcset", "onload", "onclick"}
    root = ET.fromstring(text)  # also well-formed XML
    svgs = list(root.iter("svg"))
    assert len(svgs) == 4 * surfaces
    for svg in svgs:
        ET.fromstring(ET.tostring(svg))
        assert svg.find("title") is not None
    lowered = text.lower()
    assert "http://" not in lowered
    assert "https://" not in lowered
    assert "<script" not in lowered
    return root


def test_render_html_is_self_contained_with_charts() -> None:
    report = build_report(synthetic())
    root = check_html(render_html(report), 3)
    # Charts carry marks: bars in the histograms, dots over time.
    assert len(list(root.iter("rect"))) > 50
    assert len(list(root.iter("circle"))) > 300


def test_render_html_escapes_record_strings() -> None:
    name = '<script>alert("x")</script>&'
    records = [
        comparison(name, START, path(["a"]), path(["b"], 1.0, "error: <b>bold</b>")),
        served(name, START, "fallback", '<img src="x">: oops'),
    ]
    text = render_html(build_report(records))
    assert name not in text
    assert "<b>bold" not in text
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;" in text
    check_html(text, 1)


def test_render_html_of_a_surface_without_comparisons() -> None:
    text = render_html(build_report([served("s", START, "legacy")]))
    check_html(text, 1)
    assert "no data" in text


# --- the command ---------------------------------------------------------------------------


def test_shadow_report_prints_the_table_and_writes_json_and_html(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json, out_html = tmp_path / "report.json", tmp_path / "report.html"
    assert run("--data", str(data), "--json", str(out_json), "--html", str(out_html)) == 0
    printed = capsys.readouterr().out

    expected = build_report(synthetic())
    written = json.loads(out_json.read_text())
    assert written == as_json(expected)
    assert printed.strip() == format_table(expected).strip()

    rows = {line.split()[0]: line for line in printed.splitlines() if line.split()}
    for name, section in expected["surfaces"].items():
        row = rows[name]
        assert row.endswith(section["verdict"])
        assert str(section["comparisons"]) in row
        for value, spec in (
            (section["overlap_at_k"]["mean"], ".3f"),
            (section["jaccard_at_k"]["mean"], ".3f"),
            (section["rbo"]["median"], ".3f"),
            (section["kendall_tau"]["mean"], ".3f"),
            (section["latency_ms"]["realtime"]["p50"], ".1f"),
            (section["latency_ms"]["realtime"]["p99"], ".1f"),
        ):
            assert format(value, spec) in row
        assert f"{name}: {section['verdict']}" in printed
        for reason in section["reasons"]:
            assert reason in printed
    assert "ready for canary" in printed
    assert "investigate" in printed
    assert "not enough data" in printed

    home = written["surfaces"]["home_feed"]
    assert home["noise_floor"]["count"] > 100
    assert home["absent"]["legacy"]["count"] > 0
    errors = written["surfaces"]["pro_match"]["errors"]["realtime"]
    assert set(errors["kinds"]) == {"error", "deadline"}
    assert sum(errors["kinds"].values()) == errors["count"]
    check_html(out_html.read_text(encoding="utf-8"), 3)


def test_the_json_numbers_are_the_metrics_of_the_records(data: Path, tmp_path: Path) -> None:
    out_json = tmp_path / "r.json"
    assert run("--data", str(data), "--surface", "stories", "--json", str(out_json)) == 0
    stories = json.loads(out_json.read_text())["surfaces"]["stories"]
    mine = [r for r in synthetic() if r["kind"] == "comparison" and r["surface"] == "stories"]
    rbos = sorted(rbo(r["realtime"]["items"], r["legacy"]["items"]) for r in mine)
    taus = [kendall_tau(r["realtime"]["items"], r["legacy"]["items"]) for r in mine]
    defined = [t for t in taus if t is not None]
    assert stories["rbo"]["median"] == pytest.approx((rbos[9] + rbos[10]) / 2)
    assert stories["kendall_tau"]["mean"] == pytest.approx(math.fsum(defined) / len(defined))
    assert stories["kendall_tau"]["count"] == len(defined)


def test_the_surface_filter(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    args = ["--data", str(data), "--surface", "pro_match", "--json", str(out_json)]
    assert run(*args, "--html", str(out_html)) == 0
    printed = capsys.readouterr().out
    assert "pro_match" in printed
    assert "home_feed" not in printed
    assert "stories" not in printed
    assert list(json.loads(out_json.read_text())["surfaces"]) == ["pro_match"]
    check_html(out_html.read_text(encoding="utf-8"), 1)


@pytest.mark.parametrize("since", [str(START + DAY), "2026-11-28", "2026-11-28T00:00:00+00:00"])
def test_the_since_filter(data: Path, tmp_path: Path, since: str) -> None:
    out_json = tmp_path / "r.json"
    assert run("--data", str(data), "--since", since, "--json", str(out_json)) == 0
    written = json.loads(out_json.read_text())
    assert written["filters"]["since"] == START + DAY
    records = synthetic()
    for name in ("home_feed", "pro_match", "stories"):
        assert written["surfaces"][name]["comparisons"] == sum(
            1
            for r in records
            if r["kind"] == "comparison" and r["surface"] == name and r["ts"] >= START + DAY
        )
    assert written["surfaces"]["home_feed"]["comparisons"] < 300


def test_threshold_flags_change_the_verdict(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "r.json"
    few = ["--min-requests", "10", "--min-noise-samples", "0"]  # stories: 20, no A/A pairs
    assert run("--data", str(data), *few, "--json", str(out_json)) == 0
    stories = json.loads(out_json.read_text())["surfaces"]["stories"]
    assert stories["verdict"] == READY
    assert "no A/A noise floor" in stories["reasons"][-1]
    lenient = ["--max-error-rate", "0.5", "--max-fallback-rate", "0.5", "--max-p99-ms", "1000"]
    assert (
        run("--data", str(data), *lenient, "--min-rbo-vs-noise", "0", "--json", str(out_json)) == 0
    )
    written = json.loads(out_json.read_text())
    assert written["surfaces"]["pro_match"]["verdict"] == READY
    assert written["thresholds"]["max_p99_ms"] == 1000.0
    capsys.readouterr()


def test_help_shows_the_threshold_defaults() -> None:
    parser = argparse.ArgumentParser(prog="matchlight")
    sub = parser.add_subparsers(dest="command")
    shadow_report.register(sub)
    text = sub.choices["shadow-report"].format_help()
    t = Thresholds()
    for flag, default in (
        ("--min-requests", t.min_requests),
        ("--max-error-rate", t.max_error_rate),
        ("--max-fallback-rate", t.max_fallback_rate),
        ("--max-p99-ms", t.max_p99_ms),
        ("--min-rbo-vs-noise", t.min_rbo_vs_noise),
        ("--min-noise-samples", t.min_noise_samples),
    ):
        assert flag in text
        assert f"default {default:g}" in " ".join(text.split())


def test_a_missing_data_dir_is_exit_1_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "nowhere"
    assert run("--data", str(missing)) == 1
    err = capsys.readouterr().err
    assert "no comparison records" in err
    assert str(missing / "comparisons") in err
    assert not missing.exists()  # nothing created


def test_no_records_for_the_filter_is_exit_1(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_json = tmp_path / "r.json"
    assert run("--data", str(data), "--surface", "nope", "--json", str(out_json)) == 1
    assert "no records" in capsys.readouterr().err
    assert not out_json.exists()
    assert run("--data", str(data), "--since", "2030-01-01") == 1
    assert "since 2030-01-01" in capsys.readouterr().err


def test_an_empty_log_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    DecisionLog(tmp_path / "comparisons").close()
    assert run("--data", str(tmp_path)) == 1
    assert "no records" in capsys.readouterr().err


def test_an_unwritable_output_is_exit_1(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run("--data", str(data), "--json", str(tmp_path / "no" / "such" / "dir.json")) == 1
    assert "cannot write" in capsys.readouterr().err


def test_parse_since() -> None:
    day = datetime(2026, 11, 28, tzinfo=UTC).timestamp()
    assert shadow_report.parse_since("1795000000") == 1_795_000_000.0
    assert shadow_report.parse_since("1795000000.5") == 1_795_000_000.5
    assert shadow_report.parse_since("2026-11-28") == day
    assert shadow_report.parse_since("2026-11-28T10:00") == day + 10 * 3600
    assert shadow_report.parse_since("2026-11-28T10:00Z") == day + 10 * 3600
    assert shadow_report.parse_since("2026-11-28T10:00+01:00") == day + 9 * 3600
    for bad in ("yesterday", "2026-13-01", "nan"):
        with pytest.raises(argparse.ArgumentTypeError):
            shadow_report.parse_since(bad)


def test_a_bad_since_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        run("--data", str(tmp_path), "--since", "last tuesday")
    assert exit_info.value.code == 2
    assert "--since" in capsys.readouterr().err


def test_the_table_escapes_control_characters_and_items_may_be_maps() -> None:
    name = "evil\x1b[2J"
    mapped = {"items": [{"id": "a", "score": 1.0}, {"id": "b"}], "latency_ms": 1.0, "error": None}
    report = build_report([comparison(name, START, path(["a", "b"]), mapped)])
    assert report["surfaces"][name]["rbo"]["median"] == 1.0
    table = format_table(report)
    assert "\x1b" not in table
    assert "evil\\x1b[2J" in table


# --- interleaving --------------------------------------------------------------------------


def test_shadow_report_credits_interleaved_lists_from_the_event_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Users click the real-time team's items two times in three (named by request_id, or
    not): the report reads those clicks from DIR/events and finds real time preferred."""
    from actors import InteractionRecorded, LmdbEventStore

    directory = tmp_path / "data"
    rng = random.Random(4)
    records: list[dict[str, Any]] = []
    events: list[InteractionRecorded] = []
    for n in range(300):
        user, ts, request_id = f"u{n % 40}", 1_000.0 + 100.0 * n, f"req-{n}"
        items = [f"r{n}", f"l{n}", f"r{n}b", f"l{n}b"]
        teams = ["realtime", "legacy", "realtime", "legacy"]
        records.append(
            {
                "kind": "interleaving",
                "ts": ts,
                "surface": "home",
                "user": user,
                "request_id": request_id,
                "items": items,
                "teams": teams,
            }
        )
        if n % 5 == 4:
            continue  # no click: a tie
        item = items[0] if rng.random() < 2 / 3 else items[1]
        props = {"request_id": request_id} if n % 2 else {}
        events.append(
            InteractionRecorded(
                id=f"e{n}", type="click", user=user, item=item, ts=ts + 30.0, props=props
            )
        )
        events.append(  # a view of the other team's item is no engagement
            InteractionRecorded(id=f"v{n}", type="view", user=user, item=items[3], ts=ts + 1.0)
        )
    records.append({"kind": "interleaving", "ts": 5.0, "surface": "home", "items": ["x"]})
    with DecisionLog(directory / "comparisons") as log:
        log.write(records)
    with LmdbEventStore(directory / "events") as store:
        store.append(events)

    out_json, out_html = tmp_path / "r.json", tmp_path / "r.html"
    assert run("--data", str(directory), "--json", str(out_json), "--html", str(out_html)) == 0
    printed = capsys.readouterr().out
    found = json.loads(out_json.read_text())["surfaces"]["home"]["interleaving"]
    clicked = [e for e in events if e.type == "click"]
    wins = sum(1 for e in clicked if e.item.startswith("r"))
    assert (found["impressions"], found["wins"], found["losses"], found["ties"]) == (
        300,
        wins,
        len(clicked) - wins,
        60,
    )
    assert found["malformed_records"] == 1
    assert found["preference"] == pytest.approx((2 * wins - len(clicked)) / len(clicked))
    assert found["verdict"] == "real time preferred"
    assert found["ci"][0] > 0
    assert sum(cut["impressions"] for cut in found["by_activity"].values()) == 300
    assert "interleaving (team draft" in printed
    assert "real time preferred" in printed
    page = out_html.read_text(encoding="utf-8")
    assert "Interleaving" in page
    assert "&lt;10 events" in page
    check_html(page, 1)

    # Counting views as the engagement turns it around: only legacy items were viewed.
    assert run("--data", str(directory), "--engagement", "view", "--json", str(out_json)) == 0
    views = json.loads(out_json.read_text())["surfaces"]["home"]["interleaving"]
    assert views["verdict"] == "legacy preferred"
    assert views["wins"] == 0
