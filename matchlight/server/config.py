"""What ``matchlight serve`` was told (:class:`ServeConfig`, built by the command line)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from actors import SystemConfig
from legacy_adapter import FeedSource
from matchlight.server.auth import Tokens
from matchlight.server.rpc import Limits
from matchlight.server.telemetry import NOOP, Telemetry
from ranker import Surfaces

if TYPE_CHECKING:
    from matchlight.server.worker_roles import WorkerRole

DEFAULT_LISTEN = "127.0.0.1:7420"


@attrs.frozen(kw_only=True)
class ServeConfig:
    data: Path
    listen: str = DEFAULT_LISTEN
    drain_s: float = 5.0
    system: SystemConfig = attrs.field(factory=SystemConfig)
    surfaces: Surfaces = attrs.field(factory=Surfaces)
    #: The file ``surfaces`` was read from (``--config``), if any.
    config_file: Path | None = None
    #: How often to look for a new model artifact, seconds.
    model_poll_s: float = 2.0
    #: Decision records kept (the oldest are deleted beyond this).
    decision_retention: int = 1_000_000
    #: Who may call what; ``None``: everyone may call everything.
    tokens: Tokens | None = None
    #: Serve TLS with this context (certificate and key loaded).
    tls: ssl.SSLContext | None = None
    limits: Limits = attrs.field(factory=Limits)
    #: Tracing and metrics (from the OTEL_* environment by default).
    telemetry: Telemetry = NOOP
    #: The legacy batch feed (``--legacy-feed``), if any.
    legacy_feed: FeedSource | None = None
    feed_poll_s: float = 5.0
    #: The ``[migration.SURFACE]`` entries of the config file.
    migration: dict[str, dict[str, Any]] = attrs.field(factory=dict)
    #: Comparison and served records kept for ``shadow-report``.
    comparison_retention: int = 1_000_000
    #: Processes on this node: 1 serves everything in this one; more is a writer and
    #: readers under a supervisor (see :mod:`matchlight.server.workers`).
    workers: int = 1
    #: Set in a worker process: what the supervisor started it as.
    worker: WorkerRole | None = None
    #: The command line after ``matchlight`` (a supervisor starts its workers with it).
    argv: tuple[str, ...] = ()
