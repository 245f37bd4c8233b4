"""OpenTelemetry in the real server: `OTEL_TRACES_EXPORTER=console` prints its spans, named
for `OTEL_SERVICE_NAME`; a caller's traceparent is the parent of the server span, and the
actor, store, index, scoring and re-ranking spans are children of that.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgpack
import pytest

from matchlight.bench.harness import RunningServer, start_server
from tests.system.conftest import REPO_ROOT, server_env

pytestmark = pytest.mark.system

CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER_SPAN = "00f067aa0ba902b7"


def spans_in(text: str) -> list[dict[str, Any]]:
    """The JSON objects the console exporter printed (one per span, each over many lines)."""
    decoder = json.JSONDecoder()
    spans, at = [], text.find("{")
    while at != -1:
        obj, end = decoder.raw_decode(text, at)
        if isinstance(obj, dict) and "context" in obj:
            spans.append(obj)
        at = text.find("{", end)
    return spans


def call(sock: Any, msgid: int, method: str, params: dict[str, Any]) -> Any:
    sock.sendall(msgpack.packb([0, msgid, method, [params]]))
    unpacker = msgpack.Unpacker(raw=False)
    while True:
        data = sock.recv(1 << 16)
        assert data, "the server closed the connection"
        unpacker.feed(data)
        for message in unpacker:
            assert message[1] == msgid
            assert message[2] is None, message[2]
            return message[3]


def traced_server(tmp_path: Path, *, workers: int) -> RunningServer:
    """A server on ``tmp_path / "d"`` printing its spans on stdout (stderr to a file)."""
    env = server_env() | {"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "ml-under-test"}
    return start_server(
        tmp_path / "d",
        *("--workers", str(workers)),
        log_level="WARNING",
        stderr=tmp_path / "stderr",
        env=env,
        cwd=REPO_ROOT,
    )


def test_a_callers_traceparent_parents_the_server_span_and_its_children(tmp_path: Path) -> None:
    import socket

    # One process: every span of a call is in its exporter (see the worker test below).
    process = traced_server(tmp_path, workers=1)
    try:
        assert process.address.startswith("127.0.0.1:"), process.address
        port = process.port
        trace = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "tracestate": "k=v"}
        with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
            item = {"id": "p1", "kind": "pro", "terms": {"city": "austin"}}
            call(sock, 1, "upsert_items", {"items": [item], "_trace": trace})
            event = {"id": "e1", "type": "like", "user": "u1", "item": "p1", "ts": 1.0}
            call(sock, 2, "ingest", {"events": [event], "_trace": trace})
            call(sock, 3, "recommend", {"user": "u2", "k": 3, "_trace": trace})
            call(sock, 4, "health", {})  # no _trace: a root span of its own
    finally:
        code = process.stop(timeout=30)
    assert code == 0, (tmp_path / "stderr").read_text()[-2000:]
    spans = spans_in(process.stdout_after_ready.decode())
    by_name: dict[str, list[dict[str, Any]]] = {}
    for span in spans:
        by_name.setdefault(span["name"], []).append(span)
        assert span["resource"]["attributes"]["service.name"] == "ml-under-test"

    servers = [s for s in spans if s["kind"] == "SpanKind.SERVER"]
    assert {s["name"] for s in servers} >= {
        "matchlight/upsert_items",
        "matchlight/ingest",
        "matchlight/recommend",
        "matchlight/health",
    }
    for server in servers:
        assert server["attributes"]["rpc.method"] == server["name"].split("/")[1]
        assert server["attributes"]["rpc.system"] == "msgpack_rpc"
        if server["name"] == "matchlight/health":
            assert server["parent_id"] is None
            assert server["context"]["trace_id"] != f"0x{CALLER_TRACE}"
        else:
            assert server["context"]["trace_id"] == f"0x{CALLER_TRACE}"
            assert server["parent_id"] == f"0x{CALLER_SPAN}"
            assert "key=k, value=v" in server["context"]["trace_state"]

    def parent_name(span: dict[str, Any]) -> str:
        (parent,) = [s for s in spans if s["context"]["span_id"] == span["parent_id"]]
        return str(parent["name"])

    expected = {
        "actors.decide": "matchlight/ingest",
        "store.commit": "matchlight/ingest",
        "index.query": "matchlight/recommend",
        "ranker.score": "matchlight/recommend",
        "ranker.rerank": "matchlight/recommend",
    }
    for child, parent in expected.items():
        assert child in by_name, f"no {child} span among {sorted(by_name)}"
        assert parent in {parent_name(span) for span in by_name[child]}, child


def test_with_workers_a_forwarded_write_is_traced_across_processes(tmp_path: Path) -> None:
    """A reader's server span parents the writer's, in the caller's trace; each span's
    resource names the worker that made it."""
    import socket

    process = traced_server(tmp_path, workers=3)
    try:
        trace = {"traceparent": f"00-{CALLER_TRACE}-{CALLER_SPAN}-01", "tracestate": "k=v"}
        with socket.create_connection(("127.0.0.1", process.port), timeout=15) as sock:
            event = {"id": "e1", "type": "like", "user": "u1", "item": "p1", "ts": 1.0}
            call(sock, 1, "ingest", {"events": [event], "_trace": trace})
    finally:
        code = process.stop(timeout=30)
    assert code == 0, (tmp_path / "stderr").read_text()[-2000:]
    spans = [
        s
        for s in spans_in(process.stdout_after_ready.decode())
        if s["context"]["trace_id"] == f"0x{CALLER_TRACE}"
    ]
    ingests = [s for s in spans if s["name"] == "matchlight/ingest"]
    assert len(ingests) == 2, ingests  # the reader's, then the writer's
    (reader,) = [s for s in ingests if s["parent_id"] == f"0x{CALLER_SPAN}"]
    (writer,) = [s for s in ingests if s is not reader]
    assert reader["resource"]["attributes"]["matchlight.worker"].startswith("reader-")
    assert writer["resource"]["attributes"]["matchlight.worker"] == "writer"
    by_id = {s["context"]["span_id"]: s for s in spans}
    # The writer's span descends from the reader's (through the forwarding client's context).
    parent = by_id.get(writer["parent_id"])
    while parent is not None and parent is not reader:
        parent = by_id.get(parent["parent_id"])
    assert parent is reader
    commits = [s for s in spans if s["name"] == "store.commit"]
    assert [c["parent_id"] for c in commits] == [writer["context"]["span_id"]]


def test_an_unknown_traces_exporter_stops_the_server_with_a_clear_message(tmp_path: Path) -> None:
    env = dict(os.environ) | server_env() | {"OTEL_TRACES_EXPORTER": "zipkin-over-carrier-pigeon"}
    result = subprocess.run(
        [sys.executable, "-m", "matchlight.cli", "serve", "--data", str(tmp_path / "d")],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert "OTEL_TRACES_EXPORTER" in result.stderr
