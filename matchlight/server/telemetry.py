"""OpenTelemetry tracing and metrics: one pipeline, configured once by the application.

The path, as OpenTelemetry prescribes (libraries use the API, the application
configures the SDK):

1. :func:`configure` builds a :class:`Telemetry` (an SDK tracer provider and
   meter provider) from the standard ``OTEL_*`` variables;
2. the application (``matchlight serve``) calls :meth:`Telemetry.install`
   once, making them the process's global providers;
3. every library layer gets its tracer and meter from the OpenTelemetry API by
   name (``trace.get_tracer("matchlight.actors")``,
   ``metrics.get_meter("matchlight.actors")``): ``actors/`` (decide and commit
   spans, the commit-size histogram), ``ranker/`` (index query, scoring,
   re-ranking spans), ``legacy_adapter/``. Nothing is handed a ``Telemetry``
   object; until step 2 their instruments are the API's no-ops.

The server (this package), which owns the ``Telemetry``, records its own spans
and metrics on it directly: one ``SERVER`` span per RPC call
(:meth:`Telemetry.server_span`), named ``matchlight/{method}`` after the RPC
conventions (``{rpc.service}/{rpc.method}``), whose parent is the caller's W3C
trace context when the request map carries ``"_trace": {"traceparent": ...,
"tracestate": ...}``, and the instruments listed on :class:`Telemetry`. They are
the same providers the libraries reach once installed, so a library's span
started while a server span is current is its child. Clients put their current
context into a request with :func:`matchlight.client.inject_trace`.
:func:`configure` itself leaves the global providers alone, so tests build as
many as they like with in-memory exporters; :data:`NOOP` is the do-nothing
default.

The semantic conventions have no ``rpc.system`` value for msgpack-RPC, so spans
and metrics say ``rpc.system = "msgpack_rpc"`` (the enum's spelling style, as in
``connect_rpc``), and an error's contract code goes in ``rpc.msgpack_rpc.error_code``
(after ``rpc.jsonrpc.error_code``) and in ``error.type``.

OpenTelemetry keeps the current span in a ``contextvars`` variable, which Trio
copies into a child task when the task is spawned: a task started inside a
span sees it as its parent; a task started earlier (an actor's loop) does not,
so a message handed to such a task must carry the context itself.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Mapping
from contextlib import AbstractContextManager, nullcontext
from contextvars import Token
from types import TracebackType
from typing import Any, Final

from opentelemetry import context as otel_context
from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.metrics import Counter, Histogram, Meter, NoOpMeter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from opentelemetry.util.types import AttributeValue

from matchlight import __version__
from matchlight.server.logs import WORKER_VARIABLE

__all__ = [
    "ERROR_CODE_ATTRIBUTE",
    "NOOP",
    "OTHER_METHOD",
    "RPC_SERVICE",
    "RPC_SYSTEM",
    "Telemetry",
    "configure",
]

#: ``rpc.system``: the conventions' enum has no msgpack-RPC value; this follows its spelling.
RPC_SYSTEM: Final = "msgpack_rpc"
#: ``rpc.service``, and the first half of every server span's name.
RPC_SERVICE: Final = "matchlight"
#: ``rpc.method`` for a method the server does not know (the conventions' value).
OTHER_METHOD: Final = "_OTHER"
#: Where an exception's string ``code`` (an :class:`~matchlight.errors.RpcError`'s) goes.
ERROR_CODE_ATTRIBUTE: Final = "rpc.msgpack_rpc.error_code"

_TRACES_EXPORTER: Final = "OTEL_TRACES_EXPORTER"
_METRICS_EXPORTER: Final = "OTEL_METRICS_EXPORTER"
_EXPORTERS: Final = ("console", "otlp", "none")

# Bucket boundaries: the defaults (0, 5, 10, 25, … ms) cannot tell 1 ms from 4 ms,
# and the targets are a few milliseconds.
_MS_BUCKETS: Final = (
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    25.0,
    50.0,
    100.0,
    250.0,
    500.0,
    1000.0,
    2500.0,
    5000.0,
    10000.0,
)

_PROPAGATOR: Final = TraceContextTextMapPropagator()
_DISABLED: Final = nullcontext(trace.INVALID_SPAN)  # reusable: nullcontext keeps no state


class Telemetry:
    """The SDK's tracer and meter providers, and the server's instruments on them.

    Build one with :func:`configure` (or use :data:`NOOP`); :meth:`install` makes
    its providers the global ones the libraries use. The server's instruments:

    - ``rpc_duration``: histogram ``rpc.server.duration`` (ms) per ``rpc.method``,
      recorded by :meth:`server_span`;
    - ``events_ingested``: counter ``matchlight.events.ingested`` (events accepted);
    - ``visible_lag``: histogram ``matchlight.event.visible_lag`` (ms from an event's
      acceptance to its being applied and indexed).

    (The events per group commit, ``matchlight.store.commit.events``, are
    recorded by the store writer in ``actors/``, through the global meter.)
    """

    def __init__(
        self,
        *,
        tracer_provider: TracerProvider,
        meter_provider: MeterProvider,
        tracing: bool,
        metrics: bool,
    ) -> None:
        """Wrap two providers; ``tracing``/``metrics`` say whether anything reads their output.

        Without ``tracing``, :meth:`server_span` only times the call; without
        ``metrics`` the instruments are the API's no-ops; with neither,
        :meth:`server_span` does nothing at all.
        """
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.tracer: trace.Tracer = tracer_provider.get_tracer("matchlight")
        # An SDK meter with no reader still costs ~2 µs a measurement; the API's no-op, ~0.3.
        self.meter: Meter = (
            meter_provider.get_meter("matchlight") if metrics else NoOpMeter("matchlight")
        )
        self.rpc_duration: Histogram = self.meter.create_histogram(
            "rpc.server.duration",
            unit="ms",
            description="Duration of an incoming RPC call",
            explicit_bucket_boundaries_advisory=_MS_BUCKETS,
        )
        self.events_ingested: Counter = self.meter.create_counter(
            "matchlight.events.ingested", unit="{event}", description="Events accepted"
        )
        self.recommend_served: Counter = self.meter.create_counter(
            "matchlight.recommend.served",
            unit="{request}",
            description="recommend answers by surface and the path that served them "
            "(realtime, legacy, fallback, interleaved)",
        )
        self.visible_lag: Histogram = self.meter.create_histogram(
            "matchlight.event.visible_lag",
            unit="ms",
            description="Time from an event's acceptance to its being applied and indexed",
            explicit_bucket_boundaries_advisory=_MS_BUCKETS,
        )
        self._tracing = tracing
        self._active = tracing or metrics
        self._shutdown_lock = threading.Lock()
        self._shut_down = False

    def server_span(
        self, method: str, params: Any, *, peer: str | None = None
    ) -> AbstractContextManager[Span]:
        """A ``SERVER`` span for one RPC call, current inside the ``with`` block.

        ``method`` becomes ``rpc.method`` and the span name ``matchlight/{method}``;
        pass :data:`OTHER_METHOD` for a name the server does not recognise (span names
        and metric series must stay few). ``params`` is the request's raw params: when
        it is ``[map]`` and the map has ``"_trace": {"traceparent": str, "tracestate"?: str}``,
        that W3C context is the span's parent; anything else (a missing, malformed or
        unparsable ``_trace``, a non-string ``tracestate`` aside) gives a root span.
        Never raises on bad input. ``peer`` becomes ``network.peer.address``.

        On exit it records ``rpc_duration`` for the method. If the block raises, the
        span records the exception, gets status ERROR and ``error.type`` (the
        exception's string ``code`` attribute if it has one, also put in
        ``rpc.msgpack_rpc.error_code``; otherwise its class name), the duration is
        recorded with the same ``error.type``, and the exception propagates.
        Not a checkpoint.
        """
        if not self._active:
            return _DISABLED
        return _ServerSpan(self, method, params, peer)

    def install(self) -> None:
        """Make these the process's global tracer and meter providers.

        What the libraries' tracers and meters (got by name from the OpenTelemetry
        API) record through from then on, instruments made earlier included. Call it
        once, at startup: OpenTelemetry keeps the first global providers set and
        ignores (with a warning) any later ones.
        """
        trace.set_tracer_provider(self.tracer_provider)
        otel_metrics.set_meter_provider(self.meter_provider)

    def shutdown(self) -> None:
        """Flush and shut down both providers (exports what is pending); idempotent.

        Blocks while the exporters finish (at most their timeouts): call it once,
        at exit, outside the event loop or in a worker thread.
        """
        with self._shutdown_lock:
            if self._shut_down:
                return
            self._shut_down = True
        try:
            self.tracer_provider.shutdown()
        finally:
            self.meter_provider.shutdown()


class _ServerSpan:
    """:meth:`Telemetry.server_span`'s context manager (a class: cheaper than a generator)."""

    __slots__ = ("_attributes", "_method", "_parent", "_span", "_start", "_telemetry", "_token")
    _span: Span
    _token: Token[Context] | None  # None: no span was made current (tracing is off)

    def __init__(self, telemetry: Telemetry, method: str, params: Any, peer: str | None) -> None:
        if type(method) is not str:
            method = OTHER_METHOD
        self._telemetry = telemetry
        self._method = method
        # Without tracing (metrics only) the span would be dropped: skip the parsing too.
        self._parent = _parent_context(params) if telemetry._tracing else None
        attributes: dict[str, AttributeValue] = {
            "rpc.system": RPC_SYSTEM,
            "rpc.service": RPC_SERVICE,
            "rpc.method": method,
        }
        if peer is not None:
            attributes["network.peer.address"] = peer
        self._attributes = attributes

    def __enter__(self) -> Span:
        if self._parent is None:
            self._span = trace.INVALID_SPAN
            self._token = None
        else:
            span = self._telemetry.tracer.start_span(
                f"{RPC_SERVICE}/{self._method}",
                context=self._parent,
                kind=SpanKind.SERVER,
                attributes=self._attributes,
            )
            self._span = span
            self._token = otel_context.attach(trace.set_span_in_context(span, self._parent))
        self._start = time.perf_counter()
        return self._span

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        elapsed_ms = (time.perf_counter() - self._start) * 1000.0
        span = self._span
        labels: dict[str, AttributeValue] = {
            "rpc.system": RPC_SYSTEM,
            "rpc.service": RPC_SERVICE,
            "rpc.method": self._method,
        }
        try:
            if exc is not None:
                code = getattr(exc, "code", None)
                if type(code) is str:
                    labels["error.type"] = code
                    labels[ERROR_CODE_ATTRIBUTE] = code
                else:
                    labels["error.type"] = _qualified_name(type(exc))
                if span.is_recording():
                    span.record_exception(exc, escaped=True)
                    span.set_attributes(labels)
                    span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            # While the span is still current, so an exemplar can point at it.
            self._telemetry.rpc_duration.record(elapsed_ms, labels)
        finally:
            if self._token is not None:
                otel_context.detach(self._token)
                span.end()


def _parent_context(params: Any) -> Context:
    """The caller's context from ``params[0]["_trace"]``; an empty context if none is usable.

    Empty, not ``None`` (which would mean "the current context"): a request without a
    valid trace context is a root span whatever the handling task's context holds.
    """
    root = Context()
    if type(params) is not list or len(params) != 1:
        return root
    request = params[0]
    if not isinstance(request, Mapping):
        return root
    carried = request.get("_trace")
    if not isinstance(carried, Mapping):
        return root
    traceparent = carried.get("traceparent")
    if type(traceparent) is not str:
        return root
    carrier = {"traceparent": traceparent}
    tracestate = carried.get("tracestate")
    if type(tracestate) is str:
        carrier["tracestate"] = tracestate
    try:
        return _PROPAGATOR.extract(carrier, context=root)
    except Exception:  # a propagator bug must not fail a request; the span is a root
        return root


def _qualified_name(cls: type[BaseException]) -> str:
    module = cls.__module__
    return cls.__qualname__ if module == "builtins" else f"{module}.{cls.__qualname__}"


def configure(
    environ: Mapping[str, str] | None = None,
    *,
    span_exporter: SpanExporter | None = None,
    metric_reader: MetricReader | None = None,
) -> Telemetry:
    """A :class:`Telemetry` configured from ``OTEL_*`` variables (``os.environ`` by default).

    - ``OTEL_SERVICE_NAME``: the resource's ``service.name`` (default ``matchlight``);
      ``service.version`` is :data:`matchlight.__version__`.
    - ``OTEL_TRACES_EXPORTER``, ``OTEL_METRICS_EXPORTER``: a comma-separated list of
      ``console`` (stdout), ``otlp`` (OTLP over HTTP/protobuf) and ``none``; unset or
      empty means ``none``, so nothing is exported by default.

    The OTLP exporters read their own settings (``OTEL_EXPORTER_OTLP_ENDPOINT``,
    ``…_HEADERS``, ``…_TIMEOUT`` in seconds, …) from the process environment, as do
    the SDK's other knobs (``OTEL_TRACES_SAMPLER``, ``OTEL_BSP_*``,
    ``OTEL_METRIC_EXPORT_INTERVAL``, ``OTEL_RESOURCE_ATTRIBUTES``). Creating an
    exporter sends nothing.

    ``span_exporter`` (through a :class:`SimpleSpanProcessor`, so spans are there as
    soon as they end) and ``metric_reader`` are added to whatever the environment
    selects; tests pass in-memory ones. The global providers are left alone: the
    application calls :meth:`Telemetry.install` once, and
    :meth:`Telemetry.shutdown` at exit.

    Raises :exc:`ValueError` naming the variable for an exporter value other than
    ``console``, ``otlp`` or ``none``, or, with ``otlp``, for an
    ``OTEL_EXPORTER_OTLP[_TRACES|_METRICS]_PROTOCOL`` other than ``http/protobuf``
    (the only protocol the installed exporter speaks).
    """
    env = os.environ if environ is None else environ
    traces = _exporters(env, _TRACES_EXPORTER)
    metric_exporters = _exporters(env, _METRICS_EXPORTER)
    if "otlp" in traces:
        _check_protocol(env, "TRACES")
    if "otlp" in metric_exporters:
        _check_protocol(env, "METRICS")
    resource = _resource(env)
    processors = _span_processors(traces, span_exporter)
    readers = _metric_readers(metric_exporters, metric_reader)
    # Without a processor a span would be built and dropped: sample nothing instead.
    tracer_provider = TracerProvider(resource=resource, sampler=None if processors else ALWAYS_OFF)
    for processor in processors:
        tracer_provider.add_span_processor(processor)
    meter_provider = MeterProvider(metric_readers=readers, resource=resource)
    return Telemetry(
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        tracing=bool(processors),
        metrics=bool(readers),
    )


def _resource(env: Mapping[str, str]) -> Resource:
    """``service.name`` from ``OTEL_SERVICE_NAME`` (default ``matchlight``), the version, and
    in a worker process of ``serve --workers N`` which worker (``matchlight.worker``)."""
    attributes = {
        "service.name": env.get("OTEL_SERVICE_NAME") or "matchlight",
        "service.version": __version__,
    }
    worker = env.get(WORKER_VARIABLE)
    if worker:
        attributes["matchlight.worker"] = worker
    return Resource.create(attributes)


def _span_processors(exporters: frozenset[str], extra: SpanExporter | None) -> list[SpanProcessor]:
    """A processor per selected exporter, and one for ``extra`` (spans there once they end)."""
    processors: list[SpanProcessor] = []
    if "console" in exporters:
        # The stdout of now, not of the SDK's import (the exporter's default).
        processors.append(SimpleSpanProcessor(ConsoleSpanExporter(out=sys.stdout)))
    if "otlp" in exporters:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        processors.append(BatchSpanProcessor(OTLPSpanExporter()))
    if extra is not None:
        processors.append(SimpleSpanProcessor(extra))
    return processors


def _metric_readers(exporters: frozenset[str], extra: MetricReader | None) -> list[MetricReader]:
    """A periodic reader per selected exporter, and ``extra``."""
    readers: list[MetricReader] = []
    if "console" in exporters:
        readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter(out=sys.stdout)))
    if "otlp" in exporters:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

        readers.append(PeriodicExportingMetricReader(OTLPMetricExporter()))
    if extra is not None:
        readers.append(extra)
    return readers


def _exporters(env: Mapping[str, str], variable: str) -> frozenset[str]:
    """The exporter names ``variable`` selects, without ``none``."""
    raw = env.get(variable, "")
    names = {part.strip().lower() for part in raw.split(",")} - {""}
    unknown = names - set(_EXPORTERS)
    if unknown:
        raise ValueError(
            f"{variable}={raw!r}: unknown exporter {sorted(unknown)[0]!r} "
            f"(allowed: {', '.join(_EXPORTERS)}, comma-separated)"
        )
    return frozenset(names - {"none"})


def _check_protocol(env: Mapping[str, str], signal: str) -> None:
    """Refuse an OTLP protocol other than the HTTP/protobuf one the exporters speak."""
    for variable in (f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL", "OTEL_EXPORTER_OTLP_PROTOCOL"):
        value = env.get(variable, "").strip()
        if value:
            if value != "http/protobuf":
                raise ValueError(
                    f"{variable}={value!r}: only http/protobuf is supported "
                    "(the OTLP/HTTP exporter; point OTEL_EXPORTER_OTLP_ENDPOINT at port 4318)"
                )
            return


def _noop() -> Telemetry:
    resource = Resource({"service.name": "matchlight"})
    return Telemetry(
        tracer_provider=TracerProvider(
            resource=resource, sampler=ALWAYS_OFF, shutdown_on_exit=False
        ),
        meter_provider=MeterProvider(resource=resource, shutdown_on_exit=False),
        tracing=False,
        metrics=False,
    )


#: Telemetry that records and exports nothing: ``server_span`` returns a shared
#: no-op context manager yielding an invalid (non-recording) span.
NOOP: Final = _noop()
