"""Logging setup: readable lines for a terminal, or one JSON object per line for collectors.

``matchlight --log-format json ...`` writes records like
``{"ts": "2026-11-28T21:47:00.123Z", "level": "INFO", "logger": "matchlight.server.app",
"message": "...", "trace_id": "..."}``; an exception adds ``"exc"``, and a worker process of
``serve --workers N`` adds ``"worker"`` (its name; text lines show it as ``[reader-1]``). The trace
and span ids of the current OpenTelemetry span, when there is one, let a log
line be found from its trace.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Final

from opentelemetry import trace

FORMATS: Final = ("text", "json")
TEXT_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: Set by the supervisor of ``serve --workers N`` in each worker's environment: its name.
WORKER_VARIABLE: Final = "MATCHLIGHT_WORKER"


def _worker() -> str | None:
    return os.environ.get(WORKER_VARIABLE) or None


class JsonFormatter(logging.Formatter):
    """One JSON object per record."""

    def format(self, record: logging.LogRecord) -> str:
        out = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        worker = _worker()
        if worker is not None:
            out["worker"] = worker
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            out["trace_id"] = f"{context.trace_id:032x}"
            out["span_id"] = f"{context.span_id:016x}"
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False)


def configure(level: str, fmt: str = "text") -> None:
    """Log to stderr at ``level`` in ``fmt`` (``text`` or ``json``).

    Raises:
        ValueError: an unknown level or format.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown log format {fmt!r} (text or json)")
    handler = logging.StreamHandler(sys.stderr)
    worker = _worker()
    text = (
        TEXT_FORMAT if worker is None else TEXT_FORMAT.replace("%(name)s", f"[{worker}] %(name)s")
    )
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(text))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
