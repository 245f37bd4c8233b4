"""Several processes append to one decision log (a node's reader workers do): nothing is lost."""

from __future__ import annotations

import multiprocessing as mp
from pathlib import Path

from ranker.decisions import DecisionLog

WRITERS = 3
WRITES = 40
PER_WRITE = 5


def _append(path: str, writer: int) -> None:
    with DecisionLog(path, map_size=64 << 10) as log:
        for n in range(WRITES):
            log.write([{"writer": writer, "n": n, "k": k} for k in range(PER_WRITE)])


def test_concurrent_processes_keep_every_record_once_in_order(tmp_path: Path) -> None:
    path = tmp_path / "decisions"
    DecisionLog(path).close()
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_append, args=(str(path), w)) for w in range(WRITERS)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=120)
        assert p.exitcode == 0
    with DecisionLog(path) as log:
        records = log.read(limit=10_000)
    assert [r["seq"] for r in records] == list(range(1, WRITERS * WRITES * PER_WRITE + 1))
    assert sorted((r["writer"], r["n"], r["k"]) for r in records) == [
        (w, n, k) for w in range(WRITERS) for n in range(WRITES) for k in range(PER_WRITE)
    ]


def _append_eight(path: str, name: str) -> None:
    with DecisionLog(path, retention=10) as log:
        log.write([{"from": name}] * 8)


def test_retention_counts_what_every_process_wrote(tmp_path: Path) -> None:
    path = tmp_path / "decisions"
    ctx = mp.get_context("spawn")
    for name in ("first", "second"):  # each opened before the other wrote: its count is stale
        p = ctx.Process(target=_append_eight, args=(str(path), name))
        p.start()
        p.join(timeout=60)
        assert p.exitcode == 0
    with DecisionLog(path, retention=10) as log:
        kept = log.read(limit=100)
    assert [r["seq"] for r in kept] == list(range(7, 17))
    assert [r["from"] for r in kept] == ["first"] * 2 + ["second"] * 8
