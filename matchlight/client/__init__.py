"""msgpack-RPC clients: :class:`Client` (blocking) and :func:`open_client` (Trio).

    with Client("127.0.0.1", 7420, token=TOKEN) as c:
        c.call("ingest", {"events": [...]})
        a, b = c.call_many([("get_item", {"id": "i1"}), ("get_item", {"id": "i2"})])

    async with open_client("127.0.0.1", 7420, token=TOKEN) as c:
        answer = await c.call("recommend", {"user": "u1", "surface": "home", "k": 10})

Both keep one connection and reuse it across calls, reconnecting (and sending
``auth`` again) when it breaks. ``call_many`` pipelines: every request is sent
before any answer is read, and answers are matched by msgid, so they may come
back in any order. The async client lets many tasks share one connection: a
background task reads answers and hands each to the task that asked.

Errors: an error answer raises (from ``call``) or is returned in place of the
result (from ``call_many``) as an :class:`~matchlight.errors.RpcError` subclass
per contract code (:class:`BadRequest`, :class:`NotFound`, :class:`Unauthorized`,
…): the classes the server raises, re-exported here. A connection that breaks
before the answer arrives raises :class:`ConnectionLost`; no answer within
``timeout`` raises :class:`TimeoutError`.

Retries (:class:`RetryPolicy`): a call of an idempotent method
(:data:`IDEMPOTENT_METHODS`) that failed with :class:`ConnectionLost`, a
timeout, :class:`Overloaded` or :class:`Unavailable` is sent again, after 0.05
s, 0.1 s, 0.2 s (three retries by default), on a new connection when the old
one broke. Repeating them is harmless: reads change nothing, and ``ingest``
events carry ids the server uses as idempotency keys (a repeated event counts
in ``duplicates``, never twice). ``upsert_items`` and ``remove_items`` are not
retried once sent: the server mints a new event for every call, so a repeat
after a lost answer could apply the change twice; but any call is retried when
no connection could be made for it (it never left). ``timeout`` bounds each
attempt.

Tracing: when an OpenTelemetry span is current, each request's params carry
``_trace: {traceparent, tracestate?}`` (W3C trace context) unless they already
have a ``_trace``.
"""

from matchlight.client.asynchronous import AsyncClient, open_client
from matchlight.client.blocking import Client
from matchlight.client.common import (
    IDEMPOTENT_METHODS,
    ClientClosed,
    ConnectionLost,
    RetryPolicy,
    inject_trace,
)
from matchlight.errors import (
    BadRequest,
    Forbidden,
    InternalError,
    NotFound,
    Overloaded,
    RpcError,
    Unauthorized,
    Unavailable,
    error_from_wire,
)

__all__ = [
    "IDEMPOTENT_METHODS",
    "AsyncClient",
    "BadRequest",
    "Client",
    "ClientClosed",
    "ConnectionLost",
    "Forbidden",
    "InternalError",
    "NotFound",
    "Overloaded",
    "RetryPolicy",
    "RpcError",
    "Unauthorized",
    "Unavailable",
    "error_from_wire",
    "inject_trace",
    "open_client",
]
