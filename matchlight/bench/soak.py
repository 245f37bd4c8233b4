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
import tempfile
import time
from pathlib import Path
from typing import Any, Final

import attrs

from actors import StoreError
from matchlight.bench import soak_check, soak_load, soak_report
from matchlight.bench.harness import ServerFailed, collect
from matchlight.bench.index_workload import note
from matchlight.bench.soak_load import ACKED, CONNECTION_FAILURES, HOST, INTERNAL
from matchlight.bench.soak_server import (
    STOP_TIMEOUT_S,
    SoakServer,
    Trainer,
    free_port,
)
from matchlight.cli.argtypes import positive_float, positive_int
from matchlight.client import Client, RpcError
from matchlight.server.worker_figures import memory

CALL_TIMEOUT_S: Final = 60.0
RSS_EVERY_S: Final = 2.0
INGEST_CLIENTS: Final = 2
ITEM_BATCH: Final = 1_000
#: How long the clients may take to finish once told to stop.
COLLECT_TIMEOUT_S: Final = 300.0
TRAIN_TIMEOUT_S: Final = 300.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of ``matchlight bench soak``."""
    _schedule_arguments(parser)
    _load_arguments(parser)
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


def _schedule_arguments(parser: argparse.ArgumentParser) -> None:
    """How long the soak runs, and how often it kills the server and trains."""
    parser.add_argument(
        "--minutes",
        type=positive_float,
        default=10.0,
        help="how long the load runs; setup and checks add about a minute",
    )
    parser.add_argument(
        "--kill-every",
        type=positive_float,
        default=60.0,
        metavar="SECONDS",
        help="SIGKILL the server this often and start it again",
    )
    parser.add_argument(
        "--train-every",
        type=positive_float,
        default=150.0,
        metavar="SECONDS",
        help="run `matchlight train --epochs 2` beside the server this often",
    )


def _load_arguments(parser: argparse.ArgumentParser) -> None:
    """The population and the load."""
    parser.add_argument(
        "--users",
        type=positive_int,
        default=2_000,
        help="user population, by default small enough that per-user state fills up "
        "during warm-up, so that RSS can be judged",
    )
    parser.add_argument("--items", type=positive_int, default=2_000, help="catalogue size")
    parser.add_argument(
        "--rate",
        type=positive_float,
        default=2_500.0,
        metavar="EVENTS_PER_S",
        help="target ingest rate over all ingest clients",
    )
    parser.add_argument(
        "--read-rate",
        type=positive_float,
        default=100.0,
        metavar="CALLS_PER_S",
        help="recommend, search and get_item calls per second",
    )
    parser.add_argument("--batch", type=positive_int, default=100, help="events per ingest call")
    parser.add_argument("--seed", type=int, default=1, help="workload seed")


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
    report: dict[str, Any] = {"config": _config(args, run, data)}
    report.update(_soak(args, run, data, logs, began))
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


@attrs.define(kw_only=True)
class _Soak:
    """The moving parts of one run: the server, the trainer, the client processes and the
    objects they share with the orchestrator (spawn context)."""

    args: argparse.Namespace
    run: str
    data: Path
    server: SoakServer
    trainer: Trainer
    ctx: Any
    #: The port the clients connect to (``ctx.Value``).
    port: Any
    #: The progress counters (``ctx.Array``, indexed by ``soak_load.ACKED`` ...).
    shared: Any
    stop: Any
    results: Any
    procs: list[Any] = attrs.field(factory=list)

    def close(self) -> None:
        """Stop the clients, kill the server, wait a little for a training run."""
        self.stop.set()
        for p in self.procs:
            if p.is_alive():
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
        self.server.close()
        self.trainer.poll(wait=1.0)


def _soak(
    args: argparse.Namespace, run: str, data: Path, logs: Path, began: float
) -> dict[str, Any]:
    """The load, then the checks: the report's figures, or why the run was aborted."""
    ctx = mp.get_context("spawn")
    port = ctx.Value("i", free_port())
    soak = _Soak(
        args=args,
        run=run,
        data=data,
        server=SoakServer(data, logs, port, began),
        trainer=Trainer(data, logs, began),
        ctx=ctx,
        port=port,
        shared=ctx.Array("q", 3),
        stop=ctx.Event(),
        results=ctx.Queue(),
    )
    try:
        load, reports = _load_phase(soak)
        return _check_phase(soak, load, reports)
    except (ServerFailed, StoreError, RuntimeError, OSError, RpcError) as exc:
        aborted = f"{type(exc).__name__}: {exc}"
        note(f"soak: ABORTED: {aborted}")
        return {
            "aborted": aborted,
            "lifetimes": [attrs.asdict(life) for life in soak.server.lifetimes],
        }
    finally:
        soak.close()


def _load_phase(soak: _Soak) -> tuple[dict[str, Any], list[Any]]:
    """Start the server, load the catalogue, run the load, stop everything with SIGTERM.

    Returns the load's timeline and the clients' reports.
    """
    args, server, port = soak.args, soak.server, soak.port
    first = server.start()
    note(
        f"soak: server on {HOST}:{port.value}, data {soak.data}; started in {first.healthy_s:.2f} s"
    )
    _load_catalogue(port.value, args)
    soak.procs = _start_clients(soak)
    load = _Driver(args=args, server=server, shared=soak.shared).drive(soak.trainer, soak.procs)
    note("soak: load done; letting the clients finish")
    soak.stop.set()
    reports = collect(soak.results, len(soak.procs), soak.procs, COLLECT_TIMEOUT_S)
    for p in soak.procs:
        p.join(timeout=STOP_TIMEOUT_S)
    soak.trainer.poll(wait=TRAIN_TIMEOUT_S)
    stop_s, code = server.terminate()
    load["stop"] = {"seconds": round(stop_s, 3), "exit_code": code}
    note(f"soak: stopped with SIGTERM in {stop_s:.2f} s (exit {code}); reading the log")
    return load, reports


def _check_phase(soak: _Soak, load: dict[str, Any], reports: list[Any]) -> dict[str, Any]:
    """Check the log against the acknowledgements, restart, check the state against the log."""
    server = soak.server
    ingest = {i: r for kind, i, r in reports if kind == "ingest"}
    log_findings, expect = soak_check.read_log(soak.data, soak.run, ingest)
    final = server.start()
    note(f"soak: restarted in {final.healthy_s:.2f} s; comparing state with the log")
    with Client(HOST, soak.port.value, timeout=CALL_TIMEOUT_S) as client:
        catalogue = [soak_load.item_id(k) for k in range(soak.args.items)]
        state = soak_check.compare_state(client, expect, catalogue)
    final_stop_s, final_code = server.terminate()
    load["final_stop"] = {"seconds": round(final_stop_s, 3), "exit_code": final_code}
    return soak_report.summarise(load, reports, log_findings, state, server, soak.trainer)


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


def _start_clients(soak: _Soak) -> list[Any]:
    """Start the ingest clients, the catalogue client and the read client."""
    args = soak.args
    common = {"run": soak.run, "users": args.users, "items": args.items, "seed": args.seed}
    common["timeout"] = CALL_TIMEOUT_S
    shared = (soak.port, soak.stop, soak.shared, soak.results)
    procs = [
        soak.ctx.Process(
            daemon=True,
            target=soak_load.ingest_client,
            args=(i, {**common, "batch": args.batch, "rate": args.rate / INGEST_CLIENTS}, *shared),
        )
        for i in range(INGEST_CLIENTS)
    ]
    catalogue = {**common, "changes": 10, "removals": 5, "remove_every": 10.0}
    procs.append(
        soak.ctx.Process(daemon=True, target=soak_load.catalogue_client, args=(catalogue, *shared))
    )
    procs.append(
        soak.ctx.Process(
            daemon=True,
            target=soak_load.read_client,
            args=(0, {**common, "rate": args.read_rate}, *shared),
        )
    )
    for p in procs:
        p.start()
    return procs


@attrs.define(kw_only=True)
class _Driver:
    """The load phase's clock: samples RSS, trains, kills and restarts the server on schedule,
    and keeps the timeline the report is made of."""

    args: argparse.Namespace
    server: SoakServer
    shared: Any
    t0: float = attrs.field(factory=time.monotonic)
    samples: list[list[float]] = attrs.field(factory=list)
    downtimes: list[tuple[float, float]] = attrs.field(factory=list)
    crashes: list[dict[str, Any]] = attrs.field(factory=list)
    #: The latest non-empty RSS sample (what a crashed server's lifetime ends with).
    last: dict[str, float] = attrs.field(factory=dict)

    def drive(self, trainer: Trainer, procs: list[Any]) -> dict[str, Any]:
        """Run the load for ``--minutes``; the timeline. Raises RuntimeError if a client dies."""
        args, server, t0 = self.args, self.server, self.t0
        end = t0 + args.minutes * 60.0
        next_kill, next_train = t0 + args.kill_every, t0 + args.train_every
        status_every = min(30.0, max(5.0, args.kill_every / 2))
        next_rss, next_status = t0, t0 + status_every
        while (now := time.monotonic()) < end:
            failed = [p.exitcode for p in procs if p.exitcode not in (None, 0)]
            if failed:
                raise RuntimeError(f"a client process failed (exit code {failed[0]})")
            code = server.exited()
            if code is not None:  # not a kill of ours: a real crash
                self._crashed(code)
                continue
            trainer.poll()
            if now >= next_rss:
                self.sample()
                next_rss = now + RSS_EVERY_S
            if now >= next_train:
                trainer.start()
                next_train += args.train_every
            if now >= next_kill:
                self._kill(now)
                next_kill += args.kill_every
                continue
            if now >= next_status:
                self._status(now)
                next_status = now + status_every
            time.sleep(0.1)
        server.current.rss_end = self.sample()
        return {
            "load_s": round(time.monotonic() - t0, 1),
            "rss_samples": self.samples,
            "downtimes": self.downtimes,
            "crashes": self.crashes,
            "kills": sum(1 for life in server.lifetimes if life.end == "kill -9"),
        }

    def sample(self) -> dict[str, float]:
        """The current server's RSS now (empty if it is gone), also kept as a sample."""
        life = self.server.current
        now = memory(life.pid)
        if now:
            self.last = dict(now)
            self.samples.append(
                [round(time.monotonic() - self.t0, 1), life.number]
                + [now.get(k, 0.0) for k in ("VmRSS", "RssAnon", "RssFile")]
            )
            life.rss_max_mib = max(life.rss_max_mib, now["VmRSS"])
        return now

    def _crashed(self, code: int) -> None:
        server = self.server
        server.current.rss_end = dict(self.last)
        server.crashed(code)
        self.crashes.append({"lifetime": server.current.number, "exit_code": code})
        self._restart(f"the server EXITED BY ITSELF with {code}")

    def _kill(self, now: float) -> None:
        server = self.server
        life = server.current
        before = self.sample()
        life.rss_end = before
        server.kill()
        self._restart(
            f"kill -9 #{len(self.downtimes) + 1 - len(self.crashes)} (lived "
            f"{now - server.t0 - life.started_s:.0f} s, RSS {before.get('VmRSS', 0.0):.0f} MiB)"
        )

    def _restart(self, reason: str) -> None:
        wall = time.time()
        life = self.server.start()
        self.downtimes.append((wall, time.time()))
        shared, t0 = self.shared, self.t0
        acked = shared[ACKED]
        note(
            f"[{time.monotonic() - t0:6.1f} s] {reason}; restarted (pid {life.pid}): listening in "
            f"{life.listening_s:.2f} s, healthy in {life.healthy_s:.2f} s; "
            f"{acked:,} events acked ({acked / (time.monotonic() - t0):,.0f}/s), "
            f"{shared[CONNECTION_FAILURES]:,} connection failures, "
            f"{shared[INTERNAL]} internal errors"
        )

    def _status(self, now: float) -> None:
        acked = self.shared[ACKED]
        rss_mib = self.samples[-1][2] if self.samples else 0
        note(
            f"[{now - self.t0:6.1f} s] lifetime {self.server.current.number}: "
            f"{acked:,} events acked, RSS {rss_mib:.0f} MiB"
        )
