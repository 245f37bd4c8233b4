"""Tokens, roles and TLS against the real server.

Every method of the contract is called under every role (none, read, ingest,
admin) and must be answered, ``unauthorized`` or ``forbidden`` exactly as
:mod:`matchlight.server.auth` says; the server refuses to listen beyond loopback
without tokens; repeated bad tokens close the connection; TLS serves the same
protocol.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import msgpack
import pytest

from matchlight.bench.harness import start_server
from matchlight.server import auth
from tests.system.conftest import REPO_ROOT, server_env
from tests.system.test_rpc_isolation import TIMEOUT_S, Raw

if TYPE_CHECKING:
    from tests.system.conftest import ServerProcess, StartServer

pytestmark = pytest.mark.system

SERVE = (sys.executable, "-m", "matchlight.cli", "serve")
TOKENS = {
    "read": "read-token-0123456789abcdef",
    "ingest": "ingest-token-0123456789abcdef",
    "admin": "admin-token-0123456789abcdef",
}
#: A call per method that succeeds when allowed (the item and user exist: see seed()).
CALLS: dict[str, dict[str, Any]] = {
    "health": {},
    "search": {"filter": {"all": []}, "limit": 5},
    "recommend": {"user": "u1", "k": 3},
    "get_item": {"id": "i1"},
    "get_user": {"id": "u1"},
    "ingest": {"events": [{"id": "e-x", "type": "view", "user": "u1", "item": "i1", "ts": 2.0}]},
    "upsert_items": {"items": [{"id": "i2", "kind": "pro"}]},
    "remove_items": {"ids": ["i-never"]},
    "stats": {},
    "set_migration": {"surface": "home", "mode": "shadow"},
}


def tokens_file(tmp_path: Path) -> Path:
    path = tmp_path / "tokens"
    lines = ["# role token", *(f"{role} {token}" for role, token in TOKENS.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


class Conn(Raw):
    """A raw connection that makes one call at a time."""

    def __init__(self, server: ServerProcess) -> None:
        super().__init__(server)
        self.msgid = 0

    def call(self, method: str, params: dict[str, Any] | None = None) -> tuple[Any, Any]:
        self.msgid += 1
        self.send([0, self.msgid, method, [] if params is None else [params]])
        _, msgid, error, result = self.receive()
        assert msgid == self.msgid
        return error, result


@pytest.fixture
def secured(start_server: StartServer, tmp_path: Path) -> ServerProcess:
    # One process: tests read its counters of refused calls.
    server = start_server("--tokens", str(tokens_file(tmp_path)), "--workers", "1")
    conn = Conn(server)
    try:
        assert conn.call("auth", {"token": TOKENS["admin"]}) == (None, {"role": "admin"})
        seed = [{"id": "e-1", "type": "like", "user": "u1", "item": "i1", "ts": 1.0}]
        assert conn.call("upsert_items", {"items": [{"id": "i1", "kind": "pro"}]})[0] is None
        assert conn.call("ingest", {"events": seed})[0] is None
    finally:
        conn.close()
    return server


@pytest.mark.parametrize("role", [None, "read", "ingest", "admin"])
def test_every_method_is_allowed_or_refused_as_the_role_says(
    secured: ServerProcess, role: str | None
) -> None:
    conn = Conn(secured)
    try:
        if role is not None:
            assert conn.call("auth", {"token": TOKENS[role]}) == (None, {"role": role})
        for method, params in CALLS.items():
            error, result = conn.call(method, params)
            if auth.allowed(role, method):
                assert error is None, (role, method, error)
                assert isinstance(result, dict)
            elif role is None:
                assert error["code"] == "unauthorized", (method, error)
            else:
                assert error["code"] == "forbidden", (role, method, error)
                assert role in error["message"]
    finally:
        conn.close()


def test_the_roles_nest_as_documented() -> None:
    assert auth.allowed(None, "health")
    assert auth.allowed(None, "auth")
    assert not auth.allowed(None, "search")
    assert auth.allowed("read", "recommend")
    assert not auth.allowed("read", "ingest")
    assert auth.allowed("ingest", "ingest")
    assert not auth.allowed("ingest", "stats")
    assert not auth.allowed("ingest", "set_migration")
    assert auth.allowed("admin", "set_migration")


def test_unauthenticated_notifications_are_not_applied(secured: ServerProcess) -> None:
    conn = Conn(secured)
    admin = Conn(secured)
    try:
        event = {"id": "e-notify", "type": "like", "user": "u9", "item": "i1", "ts": 3.0}
        conn.send([2, "ingest", [{"events": [event]}]])
        assert admin.call("auth", {"token": TOKENS["admin"]})[0] is None
        error, _ = admin.call("get_user", {"id": "u9"})  # no event reached u9
        assert error["code"] == "not_found"
        assert admin.call("stats")[1]["unauthorized"] >= 1
    finally:
        conn.close()
        admin.close()


def test_repeated_bad_tokens_close_the_connection(secured: ServerProcess) -> None:
    conn = Conn(secured)
    try:
        for _ in range(4):
            error, _ = conn.call("auth", {"token": "wrong-token-0123456789"})
            assert error == {"code": "unauthorized", "message": "invalid token"}
        conn.send([0, 99, "auth", [{"token": "still-wrong-0123456789"}]])
        assert conn.receive()[2]["code"] == "unauthorized"
        assert conn.wait_closed() == []
    finally:
        conn.close()
    other = Conn(secured)  # others are unaffected
    try:
        assert other.call("auth", {"token": TOKENS["read"]}) == (None, {"role": "read"})
    finally:
        other.close()


def test_without_tokens_auth_answers_admin(shared_server: ServerProcess) -> None:
    conn = Conn(shared_server)
    try:
        assert conn.call("auth", {"token": "anything"}) == (None, {"role": "admin"})
        assert conn.call("stats")[0] is None
    finally:
        conn.close()


def serve(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVE, *args],
        cwd=REPO_ROOT,
        env=server_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_serving_beyond_loopback_without_tokens_is_refused(tmp_path: Path) -> None:
    refused = serve("--data", str(tmp_path / "d"), "--listen", "0.0.0.0:0")
    assert refused.returncode == 2
    assert "refusing to listen on 0.0.0.0:0 without --tokens" in refused.stderr
    assert "--allow-unauthenticated" in refused.stderr
    assert not (tmp_path / "d").exists()  # refused before touching the data dir


def test_serving_beyond_loopback_is_allowed_with_tokens_or_when_told(tmp_path: Path) -> None:
    for extra in (["--tokens", str(tokens_file(tmp_path))], ["--allow-unauthenticated"]):
        server = start_server(
            tmp_path / "d",
            *extra,
            listen="0.0.0.0:0",
            stderr=tmp_path / "stderr",
            env=server_env(),
            cwd=REPO_ROOT,
        )
        try:
            assert server.address.startswith("0.0.0.0:"), server.address
        finally:
            code = server.stop(timeout=30)
        assert code == 0


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("reader tok-0123456789abcdef\n", "tokens:1: unknown role 'reader'"),
        ("read short\n", "tokens:1: token too short"),
        ("# only comments\n", "no tokens"),
        ("read a-token-0123456789 extra\n", "tokens:1: expected 'ROLE TOKEN'"),
        ("read tok-0123456789abcdef\nadmin tok-0123456789abcdef\n", "tokens:2: this token"),
    ],
)
def test_a_bad_tokens_file_is_refused_naming_the_line(
    tmp_path: Path, content: str, message: str
) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    refused = serve("--data", str(tmp_path / "d"), "--listen", "127.0.0.1:0", "--tokens", str(path))
    assert refused.returncode == 2
    assert message in refused.stderr.replace(str(path), "tokens")


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate with")
    made = subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"),
            *("-keyout", str(key), "-out", str(cert)),
        ],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"openssl cannot make a certificate here: {made.stderr[-300:]!r}")
    return cert, key


def tls_answer(sock: ssl.SSLSocket, unpacker: msgpack.Unpacker) -> Any:
    """The next message on ``sock``."""
    while True:
        for message in unpacker:
            return message
        unpacker.feed(sock.recv(1 << 16))


# In one process, and as a writer and two readers (TLS is the readers'; writes forwarded to
# the writer over its unix socket go without it).
@pytest.mark.parametrize("workers", ["1", "3"])
def test_tls_serves_the_same_protocol(
    start_server: StartServer, tmp_path: Path, workers: str
) -> None:
    cert, key = self_signed(tmp_path)
    server = start_server("--tls-cert", str(cert), "--tls-key", str(key), "--workers", workers)
    context = ssl.create_default_context(cafile=str(cert))
    with (
        socket.create_connection((server.host, server.port), timeout=TIMEOUT_S) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock,
    ):
        unpacker = msgpack.Unpacker(raw=False)
        sock.sendall(msgpack.packb([0, 7, "health", []]))
        message = tls_answer(sock, unpacker)
        assert message[:3] == [1, 7, None]
        assert message[3]["status"] == "ok"
        sock.sendall(msgpack.packb([0, 8, "upsert_items", [{"items": [{"id": "tls-1"}]}]]))
        assert tls_answer(sock, unpacker) == [1, 8, None, {"accepted": 1, "seq": 1}]
    # Plain msgpack on the TLS port is not understood: that connection fails, the server lives.
    with socket.create_connection((server.host, server.port), timeout=TIMEOUT_S) as plain:
        plain.sendall(msgpack.packb([0, 1, "health", []]))
        plain.shutdown(socket.SHUT_WR)
        try:
            leftover = plain.recv(1 << 16)
        except ConnectionResetError:
            leftover = b""
        assert b"status" not in leftover
    assert server.running


def test_tls_needs_both_files(tmp_path: Path) -> None:
    cert, _ = self_signed(tmp_path)
    refused = serve("--data", str(tmp_path / "d"), "--tls-cert", str(cert))
    assert refused.returncode == 2
    assert "--tls-cert and --tls-key go together" in refused.stderr
