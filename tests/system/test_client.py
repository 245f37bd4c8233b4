"""``matchlight.client`` against the real server process: the blocking and the Trio client.

Calls, pipelined batches and notifications are answered; error answers are
typed; 20 tasks share one async connection and each gets its own answers; a
stopped server makes calls time out and a late answer reaches nobody; both
clients reconnect across a server restart, and calls wait out a server that is
down. Tokens and TLS are in ``test_client_auth.py``.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

from matchlight.client import (
    BadRequest,
    Client,
    NotFound,
    RetryPolicy,
    RpcError,
    open_client,
)
from tests.system.conftest import CALL_TIMEOUT_S, ServerProcess, StartUnixServer, new_event

pytestmark = pytest.mark.system


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.01)


# -- the blocking client --------------------------------------------------------------------------


def test_blocking_call_call_many_and_notify(shared_server: ServerProcess) -> None:
    item = "cl-notified"
    with Client(shared_server.host, shared_server.port, timeout=CALL_TIMEOUT_S) as c:
        assert c.call("health")["status"] == "ok"
        assert c.call("upsert_items", {"items": [{"id": item}]})["accepted"] == 1
        c.notify("ingest", {"events": [new_event(item, "save") for _ in range(3)]})

        def applied() -> bool:
            counters: dict[str, int] = c.call("get_item", {"id": item})["counters"]
            return counters.get("save") == 3

        wait_for(applied, "the notified ingest was applied")
        health, state, missing, unknown = c.call_many(
            [
                ("health", None),
                ("get_item", {"id": item}),
                ("get_item", {"id": "cl-never-seen"}),
                ("no_such_method", {}),
            ]
        )
    assert health["status"] == "ok"
    assert state["id"] == item
    assert state["counters"] == {"save": 3}
    assert isinstance(missing, NotFound)
    assert isinstance(unknown, BadRequest)


def test_300_pipelined_calls_each_get_their_own_answer(shared_server: ServerProcess) -> None:
    items = [f"cl-pipe-{n}" for n in range(150)]
    with Client(shared_server.host, shared_server.port, timeout=CALL_TIMEOUT_S) as c:
        c.call(
            "upsert_items", {"items": [{"id": i, "numbers": {"n": n}} for n, i in enumerate(items)]}
        )
        calls: list[tuple[str, dict[str, Any] | None]] = []
        for item in items:
            calls.append(("get_item", {"id": item}))
            calls.append(("ingest", {"events": [new_event(item)]}))
        results = c.call_many(calls)
        assert len(results) == 300
        for n, item in enumerate(items):
            state, ingested = results[2 * n], results[2 * n + 1]
            assert (state["id"], state["numbers"]["n"]) == (item, n)
            assert (ingested["accepted"], ingested["duplicates"]) == (1, 0)
        assert c.call("get_item", {"id": items[-1]})["counters"] == {"like": 1}


def test_error_answers_are_typed_and_the_connection_stays(shared_server: ServerProcess) -> None:
    with Client(shared_server.host, shared_server.port, timeout=CALL_TIMEOUT_S) as c:
        with pytest.raises(BadRequest) as bad:
            c.call("get_item", {"id": ["not", "an", "id"]})
        assert bad.value.code == "bad_request"
        with pytest.raises(BadRequest):
            c.call("ingest", {"events": "not a list"})
        with pytest.raises(NotFound) as missing:
            c.call("get_item", {"id": "cl-no-such-item"})
        assert isinstance(missing.value, RpcError)
        assert missing.value.code == "not_found"
        assert c.call("health")["status"] == "ok"


def test_traced_calls_are_accepted_by_every_method(shared_server: ServerProcess) -> None:
    """With a span current every request carries ``_trace``; no method refuses it."""
    from opentelemetry.sdk.trace import TracerProvider

    provider = TracerProvider()
    item = "cl-traced"
    with (
        Client(shared_server.host, shared_server.port, timeout=CALL_TIMEOUT_S) as c,
        provider.get_tracer("test_client").start_as_current_span("caller"),
    ):
        # Pipelined calls run concurrently: the writes first, one at a time.
        results = [
            c.call("upsert_items", {"items": [{"id": item, "terms": {"city": "austin"}}]}),
            c.call("ingest", {"events": [new_event(item)]}),
        ]
        results += c.call_many(
            [
                ("health", None),
                ("get_item", {"id": item}),
                ("get_user", {"id": "cl-user-0"}),
                ("search", {"filter": {"term": ["city", "austin"]}, "limit": 5}),
                ("recommend", {"user": "cl-user-0", "surface": "home", "k": 3}),
                ("stats", None),
            ]
        )
        results.append(c.call("remove_items", {"ids": [item]}))
        c.notify("ingest", {"events": [new_event(item)]})
    provider.shutdown()
    failed = [r for r in results if isinstance(r, RpcError) and not isinstance(r, NotFound)]
    assert failed == []


def test_timeout_raises_and_the_late_answer_reaches_nobody(shared_server: ServerProcess) -> None:
    """The server is SIGSTOPped: the call times out; after SIGCONT the next call gets its own
    answer on the same connection, not the late one."""
    with Client(shared_server.host, shared_server.port, timeout=CALL_TIMEOUT_S, retries=0) as c:
        c.call("upsert_items", {"items": [{"id": "cl-late"}, {"id": "cl-next"}]})
        proc = shared_server.proc
        assert proc is not None
        proc.send_signal(signal.SIGSTOP)
        try:
            start = time.monotonic()
            with pytest.raises(TimeoutError):
                c.call("get_item", {"id": "cl-late"}, timeout=0.3)
            assert time.monotonic() - start >= 0.3
        finally:
            proc.send_signal(signal.SIGCONT)
        assert c.call("get_item", {"id": "cl-next"})["id"] == "cl-next"
        assert c.call_many([("health", None)] * 3)[2]["status"] == "ok"


def test_blocking_client_reconnects_after_a_restart(start_unix_server: StartUnixServer) -> None:
    server = start_unix_server()
    with Client(unix=server.path, timeout=CALL_TIMEOUT_S) as c:
        c.call("upsert_items", {"items": [{"id": "cl-kept"}]})
        server.restart()
        # The server closed the old connection; the client notices before it sends,
        # so even a call that is never retried gets through.
        assert c.call("upsert_items", {"items": [{"id": "cl-new"}]})["accepted"] == 1
        assert c.call("get_item", {"id": "cl-kept"})["id"] == "cl-kept"


def test_calls_wait_out_a_restart(start_unix_server: StartUnixServer) -> None:
    """While the server is down connecting is refused: every call is retried, even one
    that is never sent twice, since it was not sent at all."""
    server = start_unix_server()
    patient = RetryPolicy(retries=200, first_delay=0.05, max_delay=0.2)  # ~40 s
    with Client(unix=server.path, timeout=CALL_TIMEOUT_S, retries=patient) as c:
        c.call("upsert_items", {"items": [{"id": "cl-durable"}]})
        server.kill9()
        outcome: list[Any] = []

        def call() -> None:
            try:
                outcome.append(
                    c.call_many(
                        [
                            ("get_item", {"id": "cl-durable"}),
                            ("upsert_items", {"items": [{"id": "cl-after"}]}),
                        ]
                    )
                )
            except BaseException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=call)
        thread.start()
        try:
            server.start()  # meanwhile the call is refused, and retried
        finally:
            thread.join(timeout=60)
        assert not thread.is_alive()
        assert len(outcome) == 1
        assert isinstance(outcome[0], list), outcome
        state, upserted = outcome[0]
        assert state["id"] == "cl-durable"
        assert upserted["accepted"] == 1


def test_call_fails_when_the_server_stays_down(start_unix_server: StartUnixServer) -> None:
    server = start_unix_server()
    with Client(unix=server.path, timeout=CALL_TIMEOUT_S) as c:
        assert c.call("health")["status"] == "ok"
        server.kill9()
        # The client sees the connection closed, tries to connect again (four
        # times) and is refused.
        with pytest.raises(ConnectionRefusedError):
            c.call("upsert_items", {"items": [{"id": "cl-lost"}]})


# -- the Trio client ------------------------------------------------------------------------------


async def test_async_client_20_tasks_share_one_connection(shared_server: ServerProcess) -> None:
    host, port = shared_server.host, shared_server.port
    ids = [[f"cl-async-{t}-{k}" for k in range(20)] for t in range(20)]
    with Client(host, port, timeout=CALL_TIMEOUT_S) as admin:
        admin.call(
            "upsert_items",
            {
                "items": [
                    {"id": item, "numbers": {"rank": t * 20 + k}}
                    for t, row in enumerate(ids)
                    for k, item in enumerate(row)
                ]
            },
        )
        before = admin.call("stats")["connections_total"]
        answered = 0
        with trio.fail_after(60):
            async with open_client(host, port, timeout=CALL_TIMEOUT_S) as c:

                async def task(t: int) -> None:
                    nonlocal answered
                    for k, item in enumerate(ids[t]):
                        state = await c.call("get_item", {"id": item})
                        assert (state["id"], state["numbers"]["rank"]) == (item, t * 20 + k)
                        answered += 1

                async with trio.open_nursery() as nursery:
                    for t in range(20):
                        nursery.start_soon(task, t)
                batch = await c.call_many([("get_item", {"id": row[0]}) for row in ids])
                assert [state["id"] for state in batch] == [row[0] for row in ids]
        after = admin.call("stats")["connections_total"]
    assert answered == 400
    assert after - before == 1, "the async client opened more than one connection"


async def test_async_errors_are_typed(shared_server: ServerProcess) -> None:
    with trio.fail_after(30):
        async with open_client(shared_server.host, shared_server.port) as c:
            with pytest.raises(NotFound):
                await c.call("get_item", {"id": "cl-async-missing"})
            bad, ok = await c.call_many([("get_item", {"id": 5.5}), ("health", None)])
            assert isinstance(bad, BadRequest)
            assert ok["status"] == "ok"
            await c.notify("ingest", {"events": [new_event("cl-async-notified")]})
            assert (await c.call("health"))["status"] == "ok"


async def test_async_timeout_then_the_connection_serves_on(shared_server: ServerProcess) -> None:
    proc = shared_server.proc
    assert proc is not None
    with trio.fail_after(30):
        async with open_client(shared_server.host, shared_server.port, timeout=0.3, retries=1) as c:
            await c.call("upsert_items", {"items": [{"id": "cl-async-late"}]})
            proc.send_signal(signal.SIGSTOP)
            try:
                start = trio.current_time()
                with pytest.raises(TimeoutError):
                    await c.call("get_item", {"id": "cl-async-late"})
                assert trio.current_time() - start >= 0.6  # two attempts
            finally:
                proc.send_signal(signal.SIGCONT)
            assert (await c.call("get_item", {"id": "cl-async-late"}))["id"] == "cl-async-late"


async def test_async_client_reconnects_after_a_restart(
    start_unix_server: StartUnixServer,
) -> None:
    server = start_unix_server()
    with trio.fail_after(60):
        async with open_client(unix=server.path, timeout=CALL_TIMEOUT_S) as c:
            await c.call("upsert_items", {"items": [{"id": "cl-async-kept"}]})
            await trio.to_thread.run_sync(server.restart)
            assert (await c.call("get_item", {"id": "cl-async-kept"}))["id"] == "cl-async-kept"
            assert (await c.call("upsert_items", {"items": [{"id": "cl-b"}]}))["accepted"] == 1


async def test_open_client_raises_when_nobody_listens(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        async with open_client(unix=str(tmp_path / "nobody.sock")):
            pytest.fail("connected to nothing")
    with pytest.raises(FileNotFoundError):
        Client(unix=str(tmp_path / "nobody.sock"))
