"""Per-worker figures of a node run as worker processes, for ``stats``.

Each worker writes its own figures (process id, memory, requests, how far its
projections are) to ``DATA/run/worker-NAME.json`` every :data:`PUBLISH_S`
seconds, and the supervisor writes how often it restarted each worker to
``DATA/run/supervisor.json``. A reader's ``stats`` reads them all, so one call
shows every worker and the node's totals whichever reader answers. The files
are figures, not state: written without fsync and replaced atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import trio

#: The supervisor's directory inside the data directory (the writer's socket, these figures).
RUN_DIR: Final = "run"
#: How often a worker publishes its figures, seconds.
PUBLISH_S: Final = 1.0
SUPERVISOR_FILE: Final = "supervisor.json"


def memory(pid: int) -> dict[str, float]:
    """``VmRSS``, ``RssAnon`` and ``RssFile`` of process ``pid`` in MiB (empty if it is gone).

    ``RssAnon`` is the process's own memory; ``RssFile`` is mostly the LMDB
    pages it has mapped, which every worker shares (``VmRSS`` counts both)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return {}
    out = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile"):
            out[key] = round(int(value.split()[0]) / 1024.0, 1)
    return out


def write_figures(path: Path, figures: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``figures`` as JSON (atomically; no fsync: figures, not state)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(figures))
    os.replace(tmp, path)


async def publish(run_dir: Path, name: str, figures: Callable[[], dict[str, Any]]) -> None:
    """Write ``figures()`` (with the pid and memory) for worker ``name`` until cancelled."""
    path = run_dir / f"worker-{name}.json"
    while True:
        out = {"pid": os.getpid(), **memory(os.getpid()), **figures()}
        with contextlib.suppress(OSError):  # a full disk: stats go stale, serving goes on
            write_figures(path, out)
        await trio.sleep(PUBLISH_S)


def read_all(run_dir: Path) -> dict[str, Any]:
    """``workers`` (each worker's last figures, with its restarts) and the node's totals."""
    workers: dict[str, dict[str, Any]] = {}
    for path in sorted(run_dir.glob("worker-*.json")):
        with contextlib.suppress(OSError, ValueError):
            workers[path.stem.removeprefix("worker-")] = json.loads(path.read_text())
    restarts: dict[str, int] = {}
    with contextlib.suppress(OSError, ValueError):
        restarts = json.loads((run_dir / SUPERVISOR_FILE).read_text())["restarts"]
    for name, figures in workers.items():
        figures["restarts"] = restarts.get(name, 0)
    return {
        "workers": workers,
        "workers_requests_total": sum(w.get("requests", 0) for w in workers.values()),
        "workers_rss_anon_mib_total": round(
            sum(w.get("RssAnon", 0.0) for w in workers.values()), 1
        ),
        "workers_restarts_total": sum(restarts.values()),
    }
