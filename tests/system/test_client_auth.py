"""``matchlight.client`` against a server with tokens and TLS (``serve --tokens`` /
``--tls-cert``): roles gate methods, a token is sent again on every new connection,
certificates are verified.
"""

from __future__ import annotations

import functools
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from matchlight.client import (
    Client,
    ConnectionLost,
    Forbidden,
    NotFound,
    Unauthorized,
    open_client,
)
from tests.system.conftest import CALL_TIMEOUT_S, ServerProcess, StartUnixServer, new_event

pytestmark = pytest.mark.system


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
