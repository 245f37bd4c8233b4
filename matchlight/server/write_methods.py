"""The contract's write methods (``ingest``, ``upsert_items``, ``remove_items``).

Where a write goes depends on how the node runs:

- one process (``--workers 1``), or the writer worker: :class:`WriteMethods`
  validates the request and calls the write path (the actor system, or the
  writer's :class:`~actors.write_path.WritePath`);
- a reader worker: :class:`ForwardedWrites` sends the request as it came to
  the writer worker over its unix socket and answers what the writer answers,
  errors included (the writer validates). If the writer cannot be reached
  (it is being restarted), the caller gets ``unavailable``: retrying is safe,
  event ids make ``ingest`` idempotent.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Final, Protocol

from opentelemetry import trace

from actors import FieldLimitError, RecordInteraction, RemoveItem, UpsertItem
from actors.system import WriteResult
from matchlight.client import AsyncClient
from matchlight.errors import BadRequest, Unavailable
from matchlight.server import validation
from matchlight.server.rpc import Handler
from matchlight.server.telemetry import NOOP, Telemetry

#: The write methods, by name.
WRITE_METHODS: Final = ("ingest", "upsert_items", "remove_items")


class WritePathLike(Protocol):
    """What the write methods call: :class:`~actors.ActorSystem` or
    :class:`~actors.write_path.WritePath`."""

    async def ingest(self, commands: Sequence[RecordInteraction]) -> WriteResult: ...

    async def upsert_items(self, commands: Sequence[UpsertItem]) -> WriteResult: ...

    async def remove_items(self, commands: Sequence[RemoveItem]) -> WriteResult: ...


class WriteMethods:
    """Validate a write and apply it through ``writes``; ``clock_skew_s`` bounds event times."""

    def __init__(
        self, writes: WritePathLike, *, clock_skew_s: float, telemetry: Telemetry = NOOP
    ) -> None:
        self.writes = writes
        self.clock_skew_s = clock_skew_s
        self.telemetry = telemetry

    def table(self) -> dict[str, Handler]:
        return {
            "ingest": self.ingest,
            "upsert_items": self.upsert_items,
            "remove_items": self.remove_items,
        }

    async def ingest(self, params: Any) -> dict[str, Any]:
        commands = validation.events(
            validation.params_map(params), now=time.time(), clock_skew_s=self.clock_skew_s
        )
        started = time.perf_counter()
        try:
            result = await self.writes.ingest(commands)
        except FieldLimitError as exc:
            raise BadRequest(str(exc)) from None
        # Accepted → durable (and, in one process, applied and indexed).
        self.telemetry.visible_lag.record((time.perf_counter() - started) * 1000)
        self.telemetry.events_ingested.add(result.accepted)
        return {"accepted": result.accepted, "duplicates": result.duplicates, "seq": result.seq}

    async def upsert_items(self, params: Any) -> dict[str, Any]:
        commands = validation.items(validation.params_map(params), now=time.time())
        try:
            result = await self.writes.upsert_items(commands)
        except FieldLimitError as exc:
            raise BadRequest(str(exc)) from None
        return {"accepted": result.accepted, "seq": result.seq}

    async def remove_items(self, params: Any) -> dict[str, Any]:
        commands = validation.removals(validation.params_map(params), now=time.time())
        result = await self.writes.remove_items(commands)
        return {"removed": result.accepted, "seq": result.seq}


class ForwardedWrites:
    """A reader worker's write methods: each request goes to the writer worker as it came."""

    def __init__(self, writer: AsyncClient) -> None:
        self.writer = writer

    def table(self) -> dict[str, Handler]:
        return {name: self._forwarder(name) for name in WRITE_METHODS}

    def _forwarder(self, method: str) -> Handler:
        async def forward(params: Any) -> Mapping[str, Any]:
            p = validation.params_map(params)
            if "_trace" in p and trace.get_current_span().get_span_context().is_valid:
                # The writer's span then descends from this reader's, in the caller's trace.
                p = {key: value for key, value in p.items() if key != "_trace"}
            result: Mapping[str, Any] = await self.call(method, p)
            return result

        return forward

    async def call(self, method: str, params: Mapping[str, Any] | None = None) -> Any:
        """``method`` answered by the writer worker.

        Raises:
            RpcError: the writer's error answer (``bad_request`` …), passed on as it is.
            Unavailable: the writer could not be reached or did not answer.
        """
        try:
            result: Any = await self.writer.call(method, params)
        except OSError as exc:  # ConnectionLost, TimeoutError, refused: it is restarting
            raise Unavailable(f"the writer worker is not reachable ({exc}); try again") from None
        return result
