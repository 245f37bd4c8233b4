"""``matchlight bench soak``: mixed load for minutes, ``kill -9`` every minute, then proof.

A real ``matchlight serve`` runs on a data dir (a temporary one unless
``--data``) on a fixed loopback port, under a mixed load from separate client
processes, each with its own connection (:mod:`matchlight.bench.soak_load`):

- ingest clients sending interaction events (view, click, like, save,
  dismiss, hire) of a fixed population of ``--users`` users (Zipf-like
  activity, s = 0.5) on a fixed catalogue of ``--items`` items (each user keeps to a
  personal taste set of 20 items drawn by Zipf popularity, so that state
  plateaus), stamped with the wall clock, paced to ``--rate`` events/s in all;
  each batch is resent with the same event ids until acknowledged;
- a catalogue client moving prices and topics every second and removing a few
  items every 10 s, each re-added 4 s later;
- a read client calling ``recommend`` (60%), ``search`` (25%) and ``get_item``
  (15%) at ``--read-rate`` calls/s;
- ``matchlight train --epochs 2`` every ``--train-every`` seconds beside the
  server, which hot-reloads each model.

Every ``--kill-every`` seconds the server gets SIGKILL and is started again on
the same data and port; the clients reconnect by themselves. The restart is
timed from spawn to its ``listening`` line and to the first answered ``health``.
The server's resident set (``VmRSS``, with its anonymous and file-backed parts)
is sampled every 2 s.

At the end the server is stopped with SIGTERM and the run is checked
(:mod:`matchlight.bench.soak_check`): every acknowledged event id must be in the
log (**lost** = 0) and no id twice; the server is started once more and every
user's and item's ``counters`` must equal the counts of their events in the log
(above: **applied twice**; below: **missing from state**); no call may have been
answered ``internal``; and the server's own memory (its anonymous resident
set: the heap and numpy arrays, what a leak grows) at the end must be within
20% of its value after warm-up, that is at the end of the second server
lifetime (both measured just before a kill or the final stop, so both servers
are equally old), or, with fewer than two kills, a third into the run. Exit
code 1 unless all hold. ``VmRSS`` and its file-backed part are reported beside
it: the file-backed part is the LMDB pages the server touched through its
memory map (clean and reclaimable, growing with the log) and shared libraries.

Progress goes to stderr, the report to stdout, ``--json FILE`` gets every
figure with the RSS samples. The data dir (with the server's and the trainer's
logs in ``DIR/soak-logs``) is deleted at the end unless ``--keep``, ``--data``
or a failed check.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import random
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import attrs

from actors import StoreError
from matchlight.bench import soak_check, soak_load, soak_report
from matchlight.bench.e2e import collect
from matchlight.bench.index_workload import note
from matchlight.bench.soak_load import ACKED, CONNECTION_FAILURES, HOST, INTERNAL
from matchlight.bench.soak_server import (
    STOP_TIMEOUT_S,
    ServerFailed,
    SoakServer,
    Trainer,
    free_port,
    rss,
)
from matchlight.cli.argtypes import positive_float, positive_int
from matchlight.client import Client, RpcError

CALL_TIMEOUT_S: Final = 60.0
RSS_EVERY_S: Final = 2.0
INGEST_CLIENTS: Final = 2
ITEM_BATCH: Final = 1_000
#: How long the clients may take to finish once told to stop.
COLLECT_TIMEOUT_S: Final = 300.0
TRAIN_TIMEOUT_S: Final = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``matchlight bench soak``."""
    parser.add_argument(
        "--minutes",
        type=positive_float,
        default=10.0,
        help="how long the load runs (default 10; setup and checks add about a minute)",
    )
    parser.add_argument(
        "--kill-every",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="SIGKILL the server this often and start it again (default 60)",
    )
    parser.add_argument(
        "--train-every",
        type=positive_float,
        default=150.0,
        metavar="SECONDS",
        help="run `matchlight train --epochs 2` beside the server this often (default 150)",
    )
    parser.add_argument(
        "--users",
        type=positive_int,
        default=2_000,
        help="user population (default 2000: small enough that per-user state fills up "
        "during warm-up, so that RSS can be judged)",
    )
    parser.add_argument(
        "--items", type=positive_int, default=2_000, help="catalogue size (default 2000)"
    )
    parser.add_argument(
        "--rate",
        type=positive_float,
        default=2_500.0,
        metavar="EVENTS_PER_S",
        help="target ingest rate over all ingest clients (default 2500)",
    )
    parser.add_argument(
        "--read-rate",
        type=positive_float,
        default=100.0,
        metavar="CALLS_PER_S",
        help="recommend, search and get_item calls per second (default 100)",
    )
    parser.add_argument(
        "--batch", type=positive_int, default=100, help="events per ingest call (default 100)"
    )
    parser.add_argument("--seed", type=int, default=1, help="workload seed (default 1)")
    parser.add_argument(
        "--data",
        metavar="DIR",
        help="data directory to serve (default: a temporary one, deleted at the end)",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the temporary data dir (with its server and trainer logs) at the end",
    )
    parser.add_argument("--json", metavar="FILE", help="also write every figure as JSON")


# -- the run ------------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    """Run the soak, print the report, write ``--json``; 0 if every check passed."""
    began = time.monotonic()
    if args.data is None:
        root = Path(tempfile.mkdtemp(prefix="matchlight-soak-"))
        data, temporary = root / "data", True
    else:
        data, temporary = Path(args.data), False
    logs = data / "soak-logs"
    logs.mkdir(parents=True, exist_ok=True)
    run = secrets.token_hex(4)
    ctx = mp.get_context("spawn")
    port = ctx.Value("i", free_port())
    shared = ctx.Array("q", 3)
    stop, results = ctx.Event(), ctx.Queue()
    server = SoakServer(data, logs, port, began)
    trainer = Trainer(data, logs, began)
    procs: list[Any] = []
    report: dict[str, Any] = {"config": _config(args, run, data)}
    try:
        first = server.start()
        note(
            f"soak: server on {HOST}:{port.value}, data {data}; started in {first.healthy_s:.2f} s"
        )
        _load_catalogue(port.value, args)
        procs = _start_clients(ctx, args, run, port, stop, shared, results)
        load = _drive(args, server, trainer, procs, shared)
        note("soak: load done; letting the clients finish")
        stop.set()
        reports = collect(results, len(procs), procs, COLLECT_TIMEOUT_S)
        for p in procs:
            p.join(timeout=STOP_TIMEOUT_S)
        trainer.poll(wait=TRAIN_TIMEOUT_S)
        stop_s, code = server.terminate()
        load["stop"] = {"seconds": round(stop_s, 3), "exit_code": code}
        note(f"soak: stopped with SIGTERM in {stop_s:.2f} s (exit {code}); reading the log")
        ingest = {i: r for kind, i, r in reports if kind == "ingest"}
        log_findings, expect = soak_check.read_log(data, run, ingest)
        final = server.start()
        note(f"soak: restarted in {final.healthy_s:.2f} s; comparing state with the log")
        with Client(HOST, port.value, timeout=CALL_TIMEOUT_S) as client:
            catalogue = [soak_load.item_id(k) for k in range(args.items)]
            state = soak_check.compare_state(client, expect, catalogue)
        final_stop_s, final_code = server.terminate()
        load["final_stop"] = {"seconds": round(final_stop_s, 3), "exit_code": final_code}
        report.update(soak_report.summarise(load, reports, log_findings, state, server, trainer))
    except (ServerFailed, StoreError, RuntimeError, OSError, RpcError) as exc:
        report["aborted"] = f"{type(exc).__name__}: {exc}"
        report["lifetimes"] = [attrs.asdict(life) for life in server.lifetimes]
        note(f"soak: ABORTED: {report['aborted']}")
    finally:
        stop.set()
        for p in procs:
            if p.is_alive():
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
        server.close()
        trainer.poll(wait=1.0)
    report["server_log"] = soak_report.scan_logs(logs)
    report["wall_s"] = round(time.monotonic() - began, 1)
    report["checks"] = soak_report.checks(report)
    report["passed"] = all(c["passed"] for c in report["checks"] if not c.get("info"))
    soak_report.print_report(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    keep = args.keep or not report["passed"]
    if temporary and not keep:
        shutil.rmtree(data.parent, ignore_errors=True)
    elif temporary:
        note(f"soak: kept the data dir {data} (server and trainer logs in {logs})")
    return 0 if report["passed"] else 1


def _config(args: argparse.Namespace, run: str, data: Path) -> dict[str, Any]:
    return {
        "minutes": args.minutes,
        "kill_every_s": args.kill_every,
        "train_every_s": args.train_every,
        "users": args.users,
        "items": args.items,
        "rate": args.rate,
        "read_rate": args.read_rate,
        "batch": args.batch,
        "ingest_clients": INGEST_CLIENTS,
        "seed": args.seed,
        "run": run,
        "data": str(data),
        "cores": os.cpu_count(),
    }


def _load_catalogue(port: int, args: argparse.Namespace) -> None:
    rng = random.Random(f"soak-catalogue-{args.seed}")
    with Client(HOST, port, timeout=CALL_TIMEOUT_S) as client:
        for lo in range(0, args.items, ITEM_BATCH):
            entries = [
                soak_load.catalogue_entry(k, rng)
                for k in range(lo, min(lo + ITEM_BATCH, args.items))
            ]
            client.call("upsert_items", {"items": entries})
    note(f"soak: {args.items:,} items upserted")


def _start_clients(
    ctx: Any, args: argparse.Namespace, run: str, port: Any, stop: Any, shared: Any, results: Any
) -> list[Any]:
    common = {"run": run, "users": args.users, "items": args.items, "seed": args.seed}
    common["timeout"] = CALL_TIMEOUT_S
    procs = [
        ctx.Process(
            daemon=True,
            target=soak_load.ingest_client,
            args=(
                i,
                {**common, "batch": args.batch, "rate": args.rate / INGEST_CLIENTS},
                port,
                stop,
                shared,
                results,
            ),
        )
        for i in range(INGEST_CLIENTS)
    ]
    procs.append(
        ctx.Process(
            daemon=True,
            target=soak_load.catalogue_client,
            args=(
                {**common, "changes": 10, "removals": 5, "remove_every": 10.0},
                port,
                stop,
                shared,
                results,
            ),
        )
    )
    procs.append(
        ctx.Process(
            daemon=True,
            target=soak_load.read_client,
            args=(0, {**common, "rate": args.read_rate}, port, stop, shared, results),
        )
    )
    for p in procs:
        p.start()
    return procs


def _drive(
    args: argparse.Namespace, server: SoakServer, trainer: Trainer, procs: list[Any], shared: Any
) -> dict[str, Any]:
    """The load phase: sample RSS, train, kill and restart on schedule; the timeline."""
    t0 = time.monotonic()
    end = t0 + args.minutes * 60.0
    next_kill, next_train = t0 + args.kill_every, t0 + args.train_every
    status_every = min(30.0, max(5.0, args.kill_every / 2))
    next_rss, next_status = t0, t0 + status_every
    samples: list[list[float]] = []
    downtimes: list[tuple[float, float]] = []
    crashes: list[dict[str, Any]] = []
    last: dict[str, float] = {}

    def sample() -> dict[str, float]:
        life = server.current
        now = rss(life.pid)
        if now:
            last.clear()
            last.update(now)
            samples.append(
                [round(time.monotonic() - t0, 1), life.number]
                + [now.get(k, 0.0) for k in ("VmRSS", "RssAnon", "RssFile")]
            )
            life.rss_max_mib = max(life.rss_max_mib, now["VmRSS"])
        return now

    def restart(reason: str) -> None:
        wall = time.time()
        life = server.start()
        downtimes.append((wall, time.time()))
        acked = shared[ACKED]
        note(
            f"[{time.monotonic() - t0:6.1f} s] {reason}; restarted (pid {life.pid}): listening in "
            f"{life.listening_s:.2f} s, healthy in {life.healthy_s:.2f} s; "
            f"{acked:,} events acked ({acked / (time.monotonic() - t0):,.0f}/s), "
            f"{shared[CONNECTION_FAILURES]:,} connection failures, "
            f"{shared[INTERNAL]} internal errors"
        )

    while True:
        now = time.monotonic()
        if now >= end:
            break
        failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
        if failed:
            raise RuntimeError(f"a client process failed (exit code {failed[0]})")
        code = server.exited()
        if code is not None:  # not a kill of ours: a real crash
            server.current.rss_end = dict(last)
            server.crashed(code)
            crashes.append({"lifetime": server.current.number, "exit_code": code})
            restart(f"the server EXITED BY ITSELF with {code}")
            continue
        trainer.poll()
        if now >= next_rss:
            sample()
            next_rss = now + RSS_EVERY_S
        if now >= next_train:
            trainer.start()
            next_train += args.train_every
        if now >= next_kill:
            life = server.current
            before = sample()
            life.rss_end = before
            server.kill()
            restart(
                f"kill -9 #{len(downtimes) + 1 - len(crashes)} (lived "
                f"{now - server.t0 - life.started_s:.0f} s, RSS {before.get('VmRSS', 0.0):.0f} MiB)"
            )
            next_kill += args.kill_every
            continue
        if now >= next_status:
            acked = shared[ACKED]
            note(
                f"[{now - t0:6.1f} s] lifetime {server.current.number}: {acked:,} events acked, "
                f"RSS {samples[-1][2] if samples else 0:.0f} MiB"
            )
            next_status = now + status_every
        time.sleep(0.1)
    server.current.rss_end = sample()
    return {
        "load_s": round(time.monotonic() - t0, 1),
        "rss_samples": samples,
        "downtimes": downtimes,
        "crashes": crashes,
        "kills": sum(1 for life in server.lifetimes if life.end == "kill -9"),
    }


def run_cli(argv: list[str] | None = None) -> int:
    """``python -m matchlight.bench.soak [flags]``: the same run without the ``matchlight`` CLI."""
    parser = argparse.ArgumentParser(prog="python -m matchlight.bench.soak")
    add_arguments(parser)
    return main(parser.parse_args(argv))


if __name__ == "__main__":
    from matchlight.bench import soak

    sys.exit(soak.run_cli())
