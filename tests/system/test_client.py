"""``matchlight.client`` against the real server process: the blocking and the Trio client.

Calls, pipelined batches and notifications are answered; error answers are
typed; 20 tasks share one async connection and each gets its own answers; a
stopped server makes calls time out and a late answer reaches nobody; both
clients reconnect across a server restart, and calls wait out a server that is
down. Tokens and TLS, where the server supports them: roles gate
methods, a token is sent again on every new connection, certificates are
verified.
"""

from __future__ import annotations

import functools
import itertools
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from matchlight.client import (
    BadRequest,
    Client,
    ConnectionLost,
    Forbidden,
    NotFound,
    RetryPolicy,
    RpcError,
    Unauthorized,
    open_client,
)
from tests.system.conftest import (
    CALL_TIMEOUT_S,
    START_TIMEOUT_S,
    ServerProcess,
    server_env,
)

pytestmark = pytest.mark.system

_ids = itertools.count()


def new_event(item: str, type_: str = "like") -> dict[str, Any]:
    n = next(_ids)
    return {
        "id": f"cl-{n}",
        "type": type_,
        "user": f"cl-user-{n % 5}",
        "item": item,
        "ts": 1.7e9 + n,
    }


def wait_for(predicate: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} within {timeout} s"
        time.sleep(0.01)


# -- a server on a Unix socket (the same address across restarts) ------------------------------


class UnixServer(ServerProcess):
    """A ``ServerProcess`` listening on ``unix:PATH``, so a restart keeps its address."""

    def __init__(self, data: Path, logs: Path, path: str, args: tuple[str, ...] = ()) -> None:
        super().__init__(data, logs, args)
        self.path = path

    def start(self) -> None:
        assert self.proc is None, "a server process is already running"
        self.runs += 1
        self._logs.mkdir(parents=True, exist_ok=True)
        command = [
            sys.executable,
            "-m",
            "matchlight.cli",
            "serve",
            "--data",
            str(self.data),
            "--listen",
            f"unix:{self.path}",
            *self._args,
        ]
        with self.stderr_path.open("wb") as stderr:
            self.proc = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=stderr,
                env=server_env(),
                cwd=self._logs,
            )
        line = self._read_ready_line(time.monotonic() + START_TIMEOUT_S)
        if line != f"matchlight listening on unix:{self.path}".encode():
            self._abort(f"unexpected first stdout line {line!r}")


StartUnixServer = Callable[..., UnixServer]


@pytest.fixture
def start_unix_server(tmp_path: Path) -> Iterator[StartUnixServer]:
    """A factory of servers on Unix sockets; all of them are killed at teardown."""
    # Socket paths are limited to ~100 bytes: tmp_path can be longer.
    sockets = Path(tempfile.mkdtemp(prefix="ml-client-", dir="/tmp"))
    started: list[UnixServer] = []

    def start(*args: str) -> UnixServer:
        n = len(started)
        server = UnixServer(
            tmp_path / f"data-{n}", tmp_path / f"logs-{n}", str(sockets / f"{n}.sock"), args
        )
        started.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in started:
            server.close()
        shutil.rmtree(sockets, ignore_errors=True)


# -- the blocking client --------------------------------------------------------------------------


def test_blocking_call_call_many_and_notify(shared_server: ServerProcess) -> None:
    item = "cl-notified"
    with Client(shared_server.host, shared_server.port, timeout=CALL_TIMEOUT_S) as c:
        assert c.call("health")["status"] == "ok"
        assert c.call("upsert_items", {"items": [{"id": item}]})["accepted"] == 1
        c.notify("ingest", {"events": [new_event(item, "save") for _ in range(3)]})

        def applied() -> bool:
            return c.call("get_item", {"id": item})["counters"].get("save") == 3

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


# -- tokens and TLS (need `serve --tokens` / `--tls-cert`) -----------------------------------------

TOKENS = {
    "read": "read-token-0123456789abcdef",
    "ingest": "ingest-token-0123456789abcdef",
    "admin": "admin-token-0123456789abcdef",
}


@functools.cache
def write_tokens(directory: Path) -> Path:
    path = directory / "tokens"
    path.write_text("".join(f"{role} {token}\n" for role, token in TOKENS.items()))
    return path


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1 and localhost, and its key (PEM files)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = shutil.which("openssl")
    if openssl is not None:
        command = (
            f"{openssl} req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes"
            " -days 2 -subj /CN=localhost -addext subjectAltName=IP:127.0.0.1,DNS:localhost"
        ).split()
        subprocess.run(
            [*command, "-keyout", str(key), "-out", str(cert)],
            check=True,
            capture_output=True,
            timeout=60,
        )
        return cert, key
    try:
        return _certificate_with_cryptography(cert, key)
    except ImportError:
        pytest.skip("neither openssl nor the cryptography package to make a certificate")


def _certificate_with_cryptography(cert: Path, key: Path) -> tuple[Path, Path]:
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    private = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(private.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(private, hashes.SHA256())
    )
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert, key


def _module_server(base: Path, *args: str) -> Iterator[ServerProcess]:
    server = ServerProcess(base / "data", base / "logs", args)
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with a tokens file of one token per role."""
    base = tmp_path_factory.mktemp("token-server")
    yield from _module_server(base, "--tokens", str(write_tokens(base)))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return make_certificate(tmp_path_factory.mktemp("certificate"))


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, certificate: tuple[Path, Path]
) -> Iterator[ServerProcess]:
    """A server with TLS (a self-signed certificate) and tokens."""
    base = tmp_path_factory.mktemp("tls-server")
    cert, key = certificate
    yield from _module_server(
        base,
        "--tokens",
        str(write_tokens(base)),
        "--tls-cert",
        str(cert),
        "--tls-key",
        str(key),
    )


@pytest.fixture
def trusting(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    """A client TLS context that trusts the test certificate."""
    return ssl.create_default_context(cafile=str(certificate[0]))


@pytest.mark.parametrize("role", sorted(TOKENS))
def test_auth_token_gives_the_client_its_role(token_server: ServerProcess, role: str) -> None:
    with Client(token_server.host, token_server.port, token=TOKENS[role]) as c:
        assert c.role == role
        with pytest.raises(NotFound):  # past the role check: the item does not exist
            c.call("get_item", {"id": "cl-auth-missing"})


def test_auth_without_a_token_only_health_and_auth(token_server: ServerProcess) -> None:
    with Client(token_server.host, token_server.port) as c:
        assert c.role is None
        assert c.call("health")["status"] == "ok"
        with pytest.raises(Unauthorized):
            c.call("get_item", {"id": "x"})
        with pytest.raises(Unauthorized):
            c.call("ingest", {"events": [new_event("cl-auth-item")]})


def test_auth_roles_gate_methods(token_server: ServerProcess) -> None:
    host, port = token_server.host, token_server.port
    with Client(host, port, token=TOKENS["read"]) as reader:
        with pytest.raises(Forbidden):
            reader.call("ingest", {"events": [new_event("cl-auth-item")]})
        with pytest.raises(Forbidden):
            reader.call("stats")
    with Client(host, port, token=TOKENS["ingest"]) as writer:
        assert writer.call("upsert_items", {"items": [{"id": "cl-auth-item"}]})["accepted"] == 1
        assert writer.call("ingest", {"events": [new_event("cl-auth-item")]})["accepted"] == 1
        with pytest.raises(Forbidden):
            writer.call("stats")
    with Client(host, port, token=TOKENS["admin"]) as admin:
        assert admin.call("stats")["unauthorized"] >= 0


def test_auth_refused_token_raises_unauthorized(token_server: ServerProcess) -> None:
    with pytest.raises(Unauthorized):
        Client(token_server.host, token_server.port, token="not-a-token-0123456789")


async def test_auth_async_client(token_server: ServerProcess) -> None:
    host, port = token_server.host, token_server.port
    with trio.fail_after(30):
        async with open_client(host, port, token=TOKENS["read"]) as c:
            assert c.role == "read"
            with pytest.raises(Forbidden):
                await c.call("stats")
        with pytest.raises(Unauthorized):
            async with open_client(host, port, token="not-a-token-0123456789"):
                pytest.fail("connected with a refused token")


def test_auth_token_is_sent_again_after_a_restart(
    start_unix_server: StartUnixServer, tmp_path: Path
) -> None:
    server = start_unix_server("--tokens", str(write_tokens(tmp_path)))
    with Client(unix=server.path, token=TOKENS["ingest"], timeout=CALL_TIMEOUT_S) as c:
        c.call("upsert_items", {"items": [{"id": "cl-auth-restart"}]})
        server.restart()
        assert c.call("get_item", {"id": "cl-auth-restart"})["id"] == "cl-auth-restart"
        assert c.role == "ingest"


def test_tls_client_verifies_the_certificate_and_calls(
    tls_server: ServerProcess, trusting: ssl.SSLContext
) -> None:
    host, port = tls_server.host, tls_server.port
    with Client(host, port, tls=trusting, token=TOKENS["admin"]) as c:
        assert c.role == "admin"
        assert c.call("health")["status"] == "ok"
        assert len(c.call_many([("health", None)] * 100)) == 100
    with Client(host, port, tls=trusting, server_hostname="localhost") as c:
        assert c.call("health")["status"] == "ok"


async def test_tls_async_client(tls_server: ServerProcess, trusting: ssl.SSLContext) -> None:
    with trio.fail_after(30):
        async with open_client(
            tls_server.host, tls_server.port, tls=trusting, token=TOKENS["read"]
        ) as c:
            assert c.role == "read"
            results = await c.call_many([("health", None)] * 50)
            assert all(r["status"] == "ok" for r in results)


def test_tls_unknown_certificate_is_refused_without_retries(tls_server: ServerProcess) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        Client(tls_server.host, tls_server.port, tls=True)


async def test_tls_async_unknown_certificate_is_refused(tls_server: ServerProcess) -> None:
    with trio.fail_after(30), pytest.raises(ssl.SSLCertVerificationError):
        async with open_client(tls_server.host, tls_server.port, tls=True):
            pytest.fail("connected despite an unknown certificate")


def test_tls_plain_client_gets_no_answer(tls_server: ServerProcess) -> None:
    with (
        Client(tls_server.host, tls_server.port, retries=0, timeout=10) as c,
        pytest.raises((ConnectionLost, TimeoutError)),
    ):
        c.call("health")
