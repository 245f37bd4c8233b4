"""Tracing and metrics setup (matchlight.server.telemetry), against in-memory exporters.

Library spans are made as the libraries make them, with a tracer got by name; in
process that is ``telemetry.tracer_provider.get_tracer(name)`` (what
``trace.get_tracer(name)`` returns once :meth:`Telemetry.install` made the provider
global, which a test process must not do); the global path itself runs in a subprocess.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import pytest
import trio
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader, NumberDataPoint
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import matchlight
from matchlight.client import inject_trace
from matchlight.errors import BadRequest
from matchlight.server.telemetry import NOOP, OTHER_METHOD, Telemetry, configure

REPO = Path(__file__).resolve().parents[2]

TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
SPAN_ID = "b7ad6b7169203331"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"


@pytest.fixture
def spans() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def reader() -> InMemoryMetricReader:
    return InMemoryMetricReader()


@pytest.fixture
def telemetry(spans: InMemorySpanExporter, reader: InMemoryMetricReader) -> Iterator[Telemetry]:
    # An empty environment: the process's OTEL_* variables must not add exporters here.
    t = configure({}, span_exporter=spans, metric_reader=reader)
    yield t
    t.shutdown()


def library_span(
    telemetry: Telemetry, name: str, **attributes: Any
) -> AbstractContextManager[trace.Span]:
    """An ``INTERNAL`` span as ``actors/`` or ``ranker/`` makes one, on ``telemetry``'s provider."""
    tracer = telemetry.tracer_provider.get_tracer("matchlight.ranker")
    return tracer.start_as_current_span(name, attributes=attributes)


def only(spans: InMemorySpanExporter) -> ReadableSpan:
    (span,) = spans.get_finished_spans()
    return span


def by_name(spans: InMemorySpanExporter) -> dict[str, ReadableSpan]:
    return {span.name: span for span in spans.get_finished_spans()}


def points(reader: InMemoryMetricReader, name: str) -> list[Any]:
    data = reader.get_metrics_data()
    if data is None:
        return []
    return [
        point
        for resource_metrics in data.resource_metrics
        for scope_metrics in resource_metrics.scope_metrics
        for metric in scope_metrics.metrics
        if metric.name == name
        for point in metric.data.data_points
    ]


# --- server spans ---------------------------------------------------------------------


def test_server_span_without_trace_is_a_root_server_span_with_rpc_attributes(
    telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    with telemetry.server_span("ingest", [{"events": []}], peer="127.0.0.1"):
        pass
    span = only(spans)
    assert span.name == "matchlight/ingest"
    assert span.kind is SpanKind.SERVER
    assert span.parent is None
    assert dict(span.attributes or {}) == {
        "rpc.system": "msgpack_rpc",
        "rpc.service": "matchlight",
        "rpc.method": "ingest",
        "network.peer.address": "127.0.0.1",
    }
    assert span.status.status_code is StatusCode.UNSET


def test_server_span_is_a_root_even_inside_another_span(
    telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    """A request without ``_trace`` does not inherit whatever the serving task's context holds."""
    with telemetry.tracer.start_as_current_span("ambient"), telemetry.server_span("health", []):
        pass
    assert by_name(spans)["matchlight/health"].parent is None


def test_server_span_continues_the_callers_trace(
    telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    params = [{"user": "u1", "_trace": {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"}}]
    with telemetry.server_span("recommend", params) as current:
        assert trace.get_current_span() is current
    span = only(spans)
    assert span.context is not None
    assert span.parent is not None
    assert format(span.context.trace_id, "032x") == TRACE_ID
    assert format(span.parent.span_id, "016x") == SPAN_ID
    assert span.parent.is_remote
    assert span.context.trace_state.to_header() == "vendor=abc"


def test_a_non_string_tracestate_is_dropped_but_the_parent_kept(
    telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    with telemetry.server_span(
        "search", [{"_trace": {"traceparent": TRACEPARENT, "tracestate": 7}}]
    ):
        pass
    span = only(spans)
    assert span.parent is not None
    assert format(span.parent.span_id, "016x") == SPAN_ID
    assert span.context is not None
    assert len(span.context.trace_state) == 0


@pytest.mark.parametrize(
    "params",
    [
        None,
        [],
        {"_trace": {"traceparent": TRACEPARENT}},  # a map, not [map]
        [{"_trace": {"traceparent": TRACEPARENT}}, {}],  # two params
        ["not a map"],
        [{"_trace": TRACEPARENT}],  # _trace not a map
        [{"_trace": [TRACEPARENT]}],
        [{"_trace": {}}],
        [{"_trace": {"traceparent": 5}}],  # traceparent not a string
        [{"_trace": {"traceparent": b"00-" + TRACE_ID.encode()}}],
        [{"_trace": {"traceparent": "garbage"}}],
        [{"_trace": {"traceparent": f"00-{'0' * 32}-{SPAN_ID}-01"}}],  # invalid trace id
        [{"_trace": {"traceparent": f"ff-{TRACE_ID}-{SPAN_ID}-01"}}],  # forbidden version
        [{"_trace": {"traceparent": "00-" + "a" * 10_000}}],
        [{1: 2, "_trace": {1: 2, "traceparent": None}}],
    ],
)
def test_malformed_trace_context_gives_a_root_span_and_no_error(
    telemetry: Telemetry, spans: InMemorySpanExporter, params: Any
) -> None:
    with telemetry.server_span("search", params):
        pass
    assert only(spans).parent is None


def test_a_non_string_method_is_other(telemetry: Telemetry, spans: InMemorySpanExporter) -> None:
    with telemetry.server_span(42, []):  # type: ignore[arg-type]
        pass
    span = only(spans)
    assert span.name == f"matchlight/{OTHER_METHOD}"
    assert (span.attributes or {})["rpc.method"] == OTHER_METHOD


# --- child spans ----------------------------------------------------------------------


def test_child_spans_have_the_server_span_as_parent(
    telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    with telemetry.server_span("recommend", []):
        with library_span(telemetry, "index.query", candidates=1000):
            pass
        with (
            library_span(telemetry, "ranker.score"),
            library_span(telemetry, "ranker.rerank"),
        ):
            pass
    named = by_name(spans)
    server = named["matchlight/recommend"].context
    assert server is not None
    for name in ("index.query", "ranker.score"):
        span = named[name]
        assert span.kind is SpanKind.INTERNAL
        assert span.parent is not None
        assert span.parent.span_id == server.span_id
        assert span.parent.trace_id == server.trace_id
    assert (named["index.query"].attributes or {})["candidates"] == 1000
    rerank_parent = named["ranker.rerank"].parent
    assert rerank_parent is not None
    assert rerank_parent.span_id == named["ranker.score"].context.span_id


async def test_a_trio_task_spawned_inside_a_server_span_sees_it_as_parent(
    telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    async def handle() -> None:
        with library_span(telemetry, "actor.handle"):
            await trio.lowlevel.checkpoint()

    with telemetry.server_span("ingest", []):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(handle)
    named = by_name(spans)
    parent = named["actor.handle"].parent
    assert parent is not None
    assert parent.span_id == named["matchlight/ingest"].context.span_id


# --- errors ---------------------------------------------------------------------------


def test_an_exception_marks_the_server_span_error_and_propagates(
    telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    with pytest.raises(ValueError, match="boom"), telemetry.server_span("get_item", []):
        raise ValueError("boom")
    span = only(spans)
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "ValueError: boom"
    (event,) = span.events
    assert event.name == "exception"
    assert (event.attributes or {})["exception.type"] == "ValueError"
    assert (event.attributes or {})["exception.message"] == "boom"
    assert (span.attributes or {})["error.type"] == "ValueError"
    assert "rpc.msgpack_rpc.error_code" not in (span.attributes or {})


def test_an_rpc_errors_code_is_recorded(telemetry: Telemetry, spans: InMemorySpanExporter) -> None:
    with pytest.raises(BadRequest), telemetry.server_span("search", []):
        raise BadRequest("limit: expected an integer")
    attributes = only(spans).attributes or {}
    assert attributes["rpc.msgpack_rpc.error_code"] == "bad_request"
    assert attributes["error.type"] == "bad_request"
    assert only(spans).status.status_code is StatusCode.ERROR


def test_a_non_string_code_attribute_is_not_an_rpc_code(
    telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    class Coded(Exception):
        code = 3

    with pytest.raises(Coded), telemetry.server_span("search", []):
        raise Coded
    attributes = only(spans).attributes or {}
    assert "rpc.msgpack_rpc.error_code" not in attributes
    assert str(attributes["error.type"]).endswith("Coded")


def test_an_exception_in_a_child_span_marks_it_error(
    telemetry: Telemetry, spans: InMemorySpanExporter
) -> None:
    with (
        pytest.raises(KeyError),
        telemetry.server_span("recommend", []),
        library_span(telemetry, "ranker.score"),
    ):
        raise KeyError("u1")
    named = by_name(spans)
    assert named["ranker.score"].status.status_code is StatusCode.ERROR
    assert [e.name for e in named["ranker.score"].events] == ["exception"]
    assert named["matchlight/recommend"].status.status_code is StatusCode.ERROR


# --- metrics --------------------------------------------------------------------------


def test_rpc_duration_is_recorded_per_method(
    telemetry: Telemetry, reader: InMemoryMetricReader
) -> None:
    for _ in range(3):
        with telemetry.server_span("health", []):
            pass
    with telemetry.server_span("recommend", []):
        time.sleep(0.002)
    with pytest.raises(BadRequest), telemetry.server_span("recommend", []):
        raise BadRequest("k: expected an integer")

    by_key = {
        (p.attributes["rpc.method"], p.attributes.get("error.type")): p
        for p in points(reader, "rpc.server.duration")
    }
    assert set(by_key) == {("health", None), ("recommend", None), ("recommend", "bad_request")}
    assert by_key["health", None].count == 3
    assert by_key["recommend", None].count == 1
    assert by_key["recommend", None].sum >= 2.0  # milliseconds
    failed = by_key["recommend", "bad_request"]
    assert failed.count == 1
    assert failed.attributes["rpc.msgpack_rpc.error_code"] == "bad_request"
    for point in by_key.values():
        assert point.attributes["rpc.system"] == "msgpack_rpc"
        assert point.attributes["rpc.service"] == "matchlight"


def test_the_other_instruments_record_values(
    telemetry: Telemetry, reader: InMemoryMetricReader
) -> None:
    telemetry.events_ingested.add(5)
    telemetry.events_ingested.add(2)
    telemetry.visible_lag.record(1.5)
    telemetry.visible_lag.record(3.5)

    (ingested,) = points(reader, "matchlight.events.ingested")
    assert isinstance(ingested, NumberDataPoint)
    assert ingested.value == 7
    (lag,) = points(reader, "matchlight.event.visible_lag")
    assert (lag.count, lag.sum) == (2, 5.0)


def test_metrics_are_recorded_without_tracing(reader: InMemoryMetricReader) -> None:
    t = configure({}, metric_reader=reader)
    try:
        with t.server_span("health", []) as span:
            assert not span.is_recording()
    finally:
        t.shutdown()
    (point,) = points(reader, "rpc.server.duration")
    assert point.count == 1


# --- propagation from clients ---------------------------------------------------------


def test_inject_trace_round_trip(telemetry: Telemetry, spans: InMemorySpanExporter) -> None:
    server_spans = InMemorySpanExporter()
    server = configure({}, span_exporter=server_spans)
    try:
        request = {"user": "u1", "k": 10}
        with telemetry.tracer.start_as_current_span("client call") as client_span:
            sent = inject_trace(request)
        assert request == {"user": "u1", "k": 10}  # not modified
        assert sent is not None
        assert set(sent) == {"user", "k", "_trace"}
        with server.server_span("recommend", [sent]):
            pass
    finally:
        server.shutdown()
    parent = only(server_spans).parent
    assert parent is not None
    assert parent.trace_id == client_span.get_span_context().trace_id
    assert parent.span_id == client_span.get_span_context().span_id


def test_inject_trace_carries_tracestate(telemetry: Telemetry) -> None:
    incoming = [{"_trace": {"traceparent": TRACEPARENT, "tracestate": "vendor=abc"}}]
    with telemetry.server_span("recommend", incoming):
        traced = inject_trace({})
    assert traced is not None
    carried = traced["_trace"]
    assert carried["tracestate"] == "vendor=abc"
    assert carried["traceparent"].startswith(f"00-{TRACE_ID}-")


def test_inject_trace_without_a_span_leaves_the_params_alone() -> None:
    """The client's semantics (README): nothing to add, the very same params; a ``_trace``
    set by the caller is kept (``tests/matchlight/test_client_unit.py``)."""
    request = {"user": "u1", "_trace": {"traceparent": TRACEPARENT}}
    sent = inject_trace(request)
    assert sent == request
    assert sent is request


# --- configure and the no-op default --------------------------------------------------


def test_service_name_and_version_come_from_the_environment(spans: InMemorySpanExporter) -> None:
    t = configure({"OTEL_SERVICE_NAME": "svc-a"}, span_exporter=spans)
    try:
        with t.server_span("health", []):
            pass
    finally:
        t.shutdown()
    attributes = only(spans).resource.attributes
    assert attributes["service.name"] == "svc-a"
    assert attributes["service.version"] == matchlight.__version__


def test_service_name_defaults_to_matchlight(spans: InMemorySpanExporter) -> None:
    t = configure({}, span_exporter=spans)
    try:
        with t.server_span("health", []):
            pass
    finally:
        t.shutdown()
    assert only(spans).resource.attributes["service.name"] == "matchlight"


@pytest.mark.parametrize("variable", ["OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER"])
@pytest.mark.parametrize("value", ["jaeger", "console,zipkin"])
def test_an_unknown_exporter_is_refused(variable: str, value: str) -> None:
    with pytest.raises(ValueError, match=variable) as info:
        configure({variable: value})
    assert "console, otlp, none" in str(info.value)


@pytest.mark.parametrize(
    ("variable", "signal"),
    [
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "TRACES"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "TRACES"),
        ("OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "METRICS"),
    ],
)
def test_an_otlp_protocol_other_than_http_protobuf_is_refused(variable: str, signal: str) -> None:
    with pytest.raises(ValueError, match=variable):
        configure({f"OTEL_{signal}_EXPORTER": "otlp", variable: "grpc"})


@pytest.mark.parametrize("value", ["", "none", "None", " none "])
def test_no_exporter_means_no_tracing(value: str) -> None:
    t = configure({"OTEL_TRACES_EXPORTER": value, "OTEL_METRICS_EXPORTER": value})
    try:
        with t.server_span("health", []) as span, library_span(t, "child") as child:
            assert not span.is_recording()
            assert not child.is_recording()
    finally:
        t.shutdown()


def test_otlp_exporters_build_without_sending_anything(monkeypatch: pytest.MonkeyPatch) -> None:
    # A closed local port and a short timeout: should anything be sent, it fails fast.
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "1")
    monkeypatch.setenv("OTEL_METRIC_EXPORT_INTERVAL", "3600000")
    t = configure(
        {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "OTLP",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
    )
    started = time.monotonic()
    # A span never ended is never exported.
    assert t.tracer.start_span("probe").is_recording()
    t.shutdown()
    assert time.monotonic() - started < 1.0


def test_shutdown_is_idempotent(
    telemetry: Telemetry, spans: InMemorySpanExporter, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        telemetry.shutdown()
        telemetry.shutdown()
    assert caplog.records == []


_INSTALLED = """
import json

import trio
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from actors import MemoryEventStore, RecordInteraction, open_actor_system
from matchlight.server.telemetry import configure

spans, reader = InMemorySpanExporter(), InMemoryMetricReader()
telemetry = configure({}, span_exporter=spans, metric_reader=reader)
telemetry.install()


async def main() -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        events = [
            RecordInteraction(id=f"e{n}", type="like", user="u", item="i", ts=1.0)
            for n in range(7)
        ]
        with telemetry.server_span("ingest", []):
            await system.ingest(events)


trio.run(main)
commits = [
    {"count": point.count, "sum": point.sum, "bounds": list(point.explicit_bounds)}
    for resource in reader.get_metrics_data().resource_metrics
    for scope in resource.scope_metrics
    for metric in scope.metrics
    if metric.name == "matchlight.store.commit.events"
    for point in metric.data.data_points
]
finished = [
    {"name": s.name, "id": s.context.span_id, "parent": s.parent and s.parent.span_id}
    for s in spans.get_finished_spans()
]
print(json.dumps({"commits": commits, "spans": finished}))
"""


def _run_python(code: str, **environ: str) -> str:
    """Run ``code`` in a fresh interpreter (global providers are set once per process)
    with ``environ`` added; returns its stdout, after checking it succeeded."""
    env = {
        **os.environ,
        **environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    result = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_install_routes_the_libraries_spans_and_metrics_to_its_providers() -> None:
    """After :meth:`Telemetry.install` the actors' spans (children of the server span) and the
    store writer's commit-size histogram, registered once with power-of-two buckets, reach
    the configured exporters. In a subprocess: global providers are set once per process."""
    out = json.loads(_run_python(_INSTALLED))
    (commit,) = out["commits"]
    assert commit["sum"] == 7
    assert commit["count"] >= 1
    assert commit["bounds"] == [float(2**i) for i in range(17)]
    by_name = {span["name"]: span for span in out["spans"]}
    server = by_name["matchlight/ingest"]
    for child in ("actors.decide", "store.commit"):
        assert by_name[child]["parent"] == server["id"], child


def test_configure_leaves_the_global_providers_alone(telemetry: Telemetry) -> None:
    assert trace.get_tracer_provider() is not telemetry.tracer_provider


def test_noop_does_nothing_but_lets_exceptions_through() -> None:
    with NOOP.server_span("ingest", [{"_trace": {"traceparent": TRACEPARENT}}]) as span:
        assert not span.is_recording()
        with library_span(NOOP, "store.commit", events=3) as child:
            assert not child.is_recording()
    with pytest.raises(BadRequest), NOOP.server_span("ingest", []):
        raise BadRequest("events: expected a list")
    NOOP.events_ingested.add(1)
    NOOP.visible_lag.record(0.5)


def test_console_exporter_prints_spans_in_a_subprocess() -> None:
    code = (
        "from matchlight.server.telemetry import configure\n"
        "t = configure()\n"
        "with t.server_span('health', []):\n"
        "    pass\n"
        "t.shutdown()\n"
    )
    stdout = _run_python(
        code,
        OTEL_TRACES_EXPORTER="console",
        OTEL_METRICS_EXPORTER="none",
        OTEL_SERVICE_NAME="svc-under-test",
    )
    assert '"name": "matchlight/health"' in stdout
    assert "svc-under-test" in stdout
    assert "SpanKind.SERVER" in stdout
