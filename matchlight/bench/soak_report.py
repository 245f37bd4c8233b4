"""The report of ``matchlight bench soak``: figures from the run's parts, checks, the table."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Final

import attrs

from matchlight.bench import soak_load
from matchlight.bench.harness import latency_summary, percentiles
from matchlight.bench.soak_server import Lifetime, SoakServer, Trainer

#: The RSS at the end may differ from its value after warm-up by this share.
RSS_TOLERANCE: Final = 0.20


def _percentiles(durations: list[float]) -> dict[str, float]:
    if not durations:
        return {"calls": 0}
    return {
        "calls": len(durations),
        **latency_summary(durations, stats=("p50", "p99"), digits=2),
        **latency_summary(durations, stats=("max",), digits=1),
    }


def _latency(starts: list[float], durations: list[float], downtimes: list[Any]) -> dict[str, Any]:
    """Percentiles of every successful call, and of those that overlapped no restart."""
    calm = [
        d
        for s, d in zip(starts, durations, strict=True)
        if not any(s < up and s + d > down for down, up in downtimes)
    ]
    return {"all": _percentiles(durations), "outside_restarts": _percentiles(calm)}


def summarise(
    load: dict[str, Any],
    reports: list[Any],
    log: dict[str, Any],
    state: dict[str, Any],
    server: SoakServer,
    trainer: Trainer,
) -> dict[str, Any]:
    """The report's figures from the load's timeline, the clients' reports and the checks."""
    ingest = [r for kind, _, r in reports if kind == "ingest"]
    reads = [r for kind, _, r in reports if kind == "read"]
    catalogue = next(r for kind, _, r in reports if kind == "catalogue")
    lifetimes = [attrs.asdict(life) for life in server.lifetimes]
    # The first lifetime is the initial start, the last the post-check restart: restarts
    # under load are those in between, each after a kill (or a crash).
    restarts = server.lifetimes[1:-1]
    return {
        "load_s": load["load_s"],
        "kills": load["kills"],
        "crashes": load["crashes"],
        "stop": load["stop"],
        "final_stop": load["final_stop"],
        "events": _event_figures(ingest, load["load_s"]),
        "log": log,
        "state": state,
        "errors": _error_figures([r for _, _, r in reports]),
        "reads": _read_figures(reads, load["downtimes"]),
        "catalogue": {k: catalogue[k] for k in ("upserts", "removals", "readds")},
        "train": {"runs": trainer.runs, "skipped": trainer.skipped},
        "restarts": _restart_figures(restarts),
        "lifetimes": lifetimes,
        "rss": _rss_verdict(server.lifetimes[:-1], load["rss_samples"], load["load_s"]),
    }


def _event_figures(ingest: list[dict[str, Any]], load_s: float) -> dict[str, Any]:
    """What the ingest clients sent and had acknowledged."""
    acked = sum(len(r["acked_batches"]) * r["batch"] for r in ingest)
    return {
        "acked": acked,
        "acked_per_s": round(acked / load_s),
        "batches": sum(r["batches"] for r in ingest),
        "retried_batches": sum(r["retried_batches"] for r in ingest),
        "gave_up_batches": sum(len(r["gave_up_batches"]) for r in ingest),
        "duplicates_reported": sum(r["duplicates"] for r in ingest),
        "partial_batches": sum(r["partial_batches"] for r in ingest),
    }


def _error_figures(every: list[dict[str, Any]]) -> dict[str, Any]:
    """Every client's failed calls: error answers by method and code, connection failures,
    timeouts, and a message per kind."""
    errors: Counter[str] = Counter()
    connection: Counter[str] = Counter()
    timeouts: Counter[str] = Counter()
    messages: dict[str, str] = {}
    for r in every:
        errors.update(r["errors"])
        connection.update(r["connection"])
        timeouts.update(r["timeouts"])
        messages.update(r["messages"])
    by_code: Counter[str] = Counter()
    for key, n in errors.items():
        by_code[key.split()[1]] += n
    return {
        "rpc": dict(sorted(errors.items())),
        "by_code": dict(sorted(by_code.items())),
        "internal": by_code["internal"],
        "connection": dict(sorted(connection.items())),
        "timeouts": dict(sorted(timeouts.items())),
        "messages": messages,
    }


def _read_figures(reads: list[dict[str, Any]], downtimes: list[Any]) -> dict[str, Any]:
    """The read client's latency per method (all, and outside restarts) and what it saw."""
    latency = {}
    for method in soak_load.READS:
        starts = [s for r in reads for s in r["samples"][method][0]]
        durations = [d for r in reads for d in r["samples"][method][1]]
        latency[method] = _latency(starts, durations, downtimes)
    models: Counter[str] = Counter()
    for r in reads:
        models.update(r["models"])
    return {
        "latency": latency,
        "get_item_not_found": sum(r["get_item_not_found"] for r in reads),
        "recommend_empty": sum(r["recommend_empty"] for r in reads),
        "models_served": dict(models),
    }


def _restart_figures(restarts: list[Lifetime]) -> dict[str, Any]:
    if not restarts:
        return {"count": 0}
    listening = [r.listening_s for r in restarts]
    healthy = [r.healthy_s for r in restarts]
    return {
        "count": len(restarts),
        "listening_p50_s": round(percentiles(listening, (50,))[0], 3),
        "listening_max_s": round(max(listening), 3),
        "healthy_p50_s": round(percentiles(healthy, (50,))[0], 3),
        "healthy_max_s": round(max(healthy), 3),
    }


#: Columns of an RSS sample: [seconds into the load, lifetime, VmRSS, RssAnon, RssFile].
_COLUMNS: Final = {"VmRSS": 2, "RssAnon": 3, "RssFile": 4}


def _rss_verdict(
    lifetimes: list[Lifetime], samples: list[list[float]], load_s: float
) -> dict[str, Any]:
    """RSS at the end against warm-up: the end of the second lifetime if there were two kills
    (both then measured just before a kill or stop), else the first sample a third in.

    The verdict is on the anonymous part (``RssAnon``: the heap, numpy arrays), the memory
    the server itself holds; ``VmRSS`` and its file-backed part (mapped LMDB pages, shared
    libraries: clean, reclaimable, growing with the log) are reported beside it.
    """
    out: dict[str, Any] = {"tolerance": RSS_TOLERANCE, "samples": samples}
    if len(lifetimes) >= 3 and lifetimes[1].rss_end:
        warm_at: dict[str, float] | None = lifetimes[1].rss_end
        out["warm_up_at"] = "the end of the 2nd server lifetime"
    else:
        later = [s for s in samples if s[0] >= load_s / 3]
        warm_at = {k: later[0][i] for k, i in _COLUMNS.items()} if later else None
        out["warm_up_at"] = f"{later[0][0]:.0f} s into the run" if later else ""
    end_at = lifetimes[-1].rss_end if lifetimes else None
    for key, name in (("VmRSS", ""), ("RssAnon", "anon_"), ("RssFile", "file_")):
        warm = warm_at.get(key) if warm_at else None
        end = end_at.get(key) if end_at else None
        out[f"{name}warm_up_mib"], out[f"{name}end_mib"] = warm, end
        if warm and end:
            out[f"{name}change"] = round(end / warm - 1.0, 4)
            out[f"{name}within"] = abs(end / warm - 1.0) <= RSS_TOLERANCE
        else:
            out[f"{name}change"], out[f"{name}within"] = None, False
    out["max_mib"] = max((s[2] for s in samples), default=None)
    return out


def scan_logs(logs: Path) -> dict[str, Any]:
    """Lines of the server logs that say ERROR or show a traceback."""
    lines: list[str] = []
    count = 0
    for path in sorted(logs.glob("server-*.log")):
        for line in path.read_text(errors="replace").splitlines():
            if " ERROR " in line or "Traceback" in line or "CRITICAL" in line:
                count += 1
                if len(lines) < 10:
                    lines.append(f"{path.name}: {line[:300]}")
    return {"error_lines": count, "examples": lines, "dir": str(logs)}


def checks(report: dict[str, Any]) -> list[dict[str, Any]]:
    if "aborted" in report:
        return [{"name": "the soak ran to the end", "passed": False, "detail": report["aborted"]}]
    log, state, errors, rss_ = report["log"], report["state"], report["errors"], report["rss"]
    twice = log["in_log_twice"] + state["applied_twice"]
    change = rss_.get("change")
    return [
        {
            "name": "acknowledged events lost",
            "passed": log["lost"] == 0,
            "detail": f"{log['lost']:,} of {log['acked']:,}",
        },
        {
            "name": "events applied twice",
            "passed": twice == 0,
            "detail": f"{twice:,} ({log['in_log_twice']:,} ids twice in the log, "
            f"{state['applied_twice']:,} counted above the log in state)",
        },
        {
            "name": "events missing from state",
            "passed": state["missing_from_state"] == 0 and state["items_exists_wrong"] == 0,
            "detail": f"{state['missing_from_state']:,} (over {state['users_checked']:,} users, "
            f"{state['items_checked']:,} items; {state['items_exists_wrong']} items exist wrongly)",
        },
        {
            "name": "acknowledged ids missing from the idempotency index",
            "passed": log["idempotency"]["missing"] == 0,
            "detail": "{missing} of {checked:,} sampled".format(**log["idempotency"]),
        },
        {
            "name": "internal errors",
            "passed": errors["internal"] == 0,
            "detail": f"{errors['internal']}",
        },
        {
            "name": "server exits other than ours",
            "passed": not report["crashes"],
            "detail": f"{len(report['crashes'])}",
        },
        {
            "name": f"server memory (anonymous RSS) at the end within {RSS_TOLERANCE:.0%} "
            "of warm-up",
            "passed": bool(rss_["anon_within"]),
            "detail": f"{_moved(rss_, 'anon_')}, warm-up at {rss_['warm_up_at']}",
        },
        {
            "name": "  VmRSS (with the mapped pages of the data files)",
            "info": True,
            "passed": bool(rss_["within"]),
            "detail": f"{rss_['warm_up_mib']} → {rss_['end_mib']} MiB"
            + (f" ({change:+.1%})" if change is not None else ""),
        },
        {
            "name": "  of which file-backed (mapped LMDB pages, libraries)",
            "info": True,
            "passed": bool(rss_["file_within"]),
            "detail": _moved(rss_, "file_"),
        },
    ]


def _moved(rss_: dict[str, Any], name: str) -> str:
    change = rss_[f"{name}change"]
    return f"{rss_[f'{name}warm_up_mib']} → {rss_[f'{name}end_mib']} MiB" + (
        f" ({change:+.1%})" if change is not None else ""
    )


def print_report(report: dict[str, Any]) -> None:
    """The report on stdout: load, restarts and RSS per lifetime, errors, checks, verdict."""
    c = report["config"]
    print(
        f"\nmatchlight bench soak: {c['minutes']:g} min, kill -9 every {c['kill_every_s']:g} s, "
        f"train every {c['train_every_s']:g} s; {c['users']:,} users, {c['items']:,} items, "
        f"target {c['rate']:,.0f} events/s + {c['read_rate']:,.0f} reads/s; {c['cores']} cores; "
        f"wall {report['wall_s']:.0f} s"
    )
    if "aborted" not in report:
        _print_load(report)
    if report.get("lifetimes"):
        _print_lifetimes(report)
    if "aborted" not in report:
        _print_errors(report)
    logs = report["server_log"]
    print(f"\nserver logs ({logs['dir']}): {logs['error_lines']} ERROR/traceback lines")
    for line in logs["examples"]:
        print(f"  {line}")
    print("\nchecks")
    for check in report["checks"]:
        mark = "info" if check.get("info") else "PASS" if check["passed"] else "FAIL"
        print(f"  [{mark}] {check['name']}: {check['detail']}")
    rss_ = report.get("rss", {})
    if rss_ and not rss_["within"]:
        print(
            "  note: the verdict judges the server's own memory (anonymous RSS: the heap, numpy\n"
            "  arrays). VmRSS also counts the pages of the LMDB files mapped into the server;\n"
            "  they follow the size of the log (more of them when the page cache already holds\n"
            "  the file, e.g. after `matchlight train` read it) and are clean and reclaimable."
        )
    print(f"\nverdict: {'PASS' if report['passed'] else 'FAIL'}")


def _print_load(report: dict[str, Any]) -> None:
    ev, reads, log = report["events"], report["reads"], report["log"]
    train = report["train"]["runs"]
    ok = sum(1 for t in train if t.get("exit") == 0)
    print(f"\nload ({report['load_s']:.0f} s)")
    rows = [
        ("events acknowledged", f"{ev['acked']:,} ({ev['acked_per_s']:,}/s)"),
        ("events in the log at the end", f"{log['events']:,} (seq gaps: {log['seq_gaps']})"),
        ("ingest batches / resent after a failure",
         f"{ev['batches']:,} / {ev['retried_batches']:,}"),
        ("  events the server called duplicates", f"{ev['duplicates_reported']:,}"),
        ("  batches partly duplicate (not atomic)", f"{ev['partial_batches']}"),
        ("  batches given up", f"{ev['gave_up_batches']}"),
        ("events logged but never acknowledged", f"{log['logged_not_acked']:,}"),
        ("catalogue upserts / removals / re-adds", "{upserts:,} / {removals:,} / {readds:,}".format(
            **report["catalogue"])),
        ("train runs ok / started / skipped",
         f"{ok} / {len(train)} / {report['train']['skipped']}"),
        ("model versions served by recommend", f"{len(reads['models_served'])}"),
    ]  # fmt: skip
    for method, lat in reads["latency"].items():
        a, calm = lat["all"], lat["outside_restarts"]
        if a["calls"]:
            rows.append(
                (
                    f"{method}: calls, p50 / p99 ms",
                    f"{a['calls']:,}, {a['p50_ms']} / {a['p99_ms']} "
                    f"(outside restarts {calm.get('p50_ms')} / {calm.get('p99_ms')})",
                )
            )
    for label, value in rows:
        print(f"  {label:<44} {value}")


def _print_lifetimes(report: dict[str, Any]) -> None:
    print(
        "\nserver lifetimes (RSS in MiB just before the kill or stop; time from spawn to "
        "'listening' and to the first answered health, s)"
    )
    print(f"  {'#':>3} {'ended by':<24} {'lived s':>8} {'RSS':>7} {'anon':>7} {'file':>7} "
          f"{'max':>7} {'listening':>10} {'healthy':>8}")  # fmt: skip
    last = len(report["lifetimes"])
    for life in report["lifetimes"]:
        end = life["rss_end"]
        lived = (life["ended_s"] - life["started_s"]) if life["ended_s"] else 0.0
        how = life["end"] or "(still running)"
        if life["number"] == last and "rss" in report:
            how = f"{how}, checks"
        print(
            f"  {life['number']:>3} {how[:24]:<24} {lived:>8.0f} {_mib(end.get('VmRSS'))} "
            f"{_mib(end.get('RssAnon'))} {_mib(end.get('RssFile'))} "
            f"{_mib(life['rss_max_mib'] or None)} "
            f"{life['listening_s']:>10.2f} {life['healthy_s']:>8.2f}"
        )
    r = report.get("restarts", {"count": 0})
    if r["count"]:
        print(
            f"  restarts under load: {r['count']}; to listening p50 {r['listening_p50_s']} s, "
            f"max {r['listening_max_s']} s; to healthy p50 {r['healthy_p50_s']} s, "
            f"max {r['healthy_max_s']} s"
        )
    if "stop" in report:
        print(
            f"  clean stops: {report['stop']['seconds']} s (exit {report['stop']['exit_code']}), "
            f"after the checks {report['final_stop']['seconds']} s "
            f"(exit {report['final_stop']['exit_code']})"
        )


def _mib(value: float | None) -> str:
    return f"{'-':>7}" if value is None else f"{value:>7.1f}"


def _print_errors(report: dict[str, Any]) -> None:
    e = report["errors"]
    print("\nerrors seen by the clients")
    conn = ", ".join(f"{m} {n:,}" for m, n in e["connection"].items()) or "none"
    print(f"  server unreachable (expected while it restarts): {conn}")
    print(f"  timeouts: {', '.join(f'{m} {n:,}' for m, n in e['timeouts'].items()) or 'none'}")
    codes = ", ".join(f"{k} {n:,}" for k, n in e["by_code"].items()) or "none"
    print(f"  error answers by code: {codes}")
    for key, n in e["rpc"].items():
        print(f"    {key}: {n:,} (e.g. {e['messages'].get(key, '')!r})")
    if e["internal"]:
        print(f"  !!! {e['internal']} calls answered 'internal': a server bug; see the server logs")
