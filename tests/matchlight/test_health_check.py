"""``matchlight health`` (:mod:`matchlight.cli.health`) against a real server and
against addresses where no healthy server answers: exit 0 with ``ok VERSION``, else 1
with one line saying why.
"""

from __future__ import annotations

import argparse
import socket
from pathlib import Path

import pytest

from matchlight import __version__
from matchlight.cli import health
from tests.system import conftest as system
from tests.system.conftest import ServerProcess, StartServer

pytestmark = pytest.mark.system

# The whole-process fixtures of tests/system: a real `matchlight serve` on port 0.
server = system.server
start_server = system.start_server


def check(connect: str, *, timeout: float = 5.0, token: str | None = None) -> int:
    return health.run(argparse.Namespace(connect=connect, timeout=timeout, token=token))


def closed_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def test_a_running_server_is_healthy(
    server: ServerProcess, capsys: pytest.CaptureFixture[str]
) -> None:
    code = check(f"127.0.0.1:{server.port}")

    out, err = capsys.readouterr()
    assert code == 0
    assert out == f"ok {__version__}\n"
    assert err == ""


def test_a_closed_port_is_unhealthy_with_a_clear_message(
    capsys: pytest.CaptureFixture[str],
) -> None:
    port = closed_port()

    code = check(f"127.0.0.1:{port}")

    out, err = capsys.readouterr()
    assert code == 1
    assert out == ""
    assert err == f"matchlight health: cannot reach 127.0.0.1:{port}: Connection refused\n"


def test_a_missing_unix_socket_is_unhealthy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "no.sock"

    code = check(f"unix:{path}")

    assert code == 1
    assert capsys.readouterr().err == (
        f"matchlight health: cannot reach unix:{path}: No such file or directory\n"
    )


def test_a_listener_that_never_answers_is_unhealthy_after_the_timeout(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # Connections complete in the backlog but nobody reads or answers them.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as mute:
        mute.bind(("127.0.0.1", 0))
        mute.listen(1)
        port = mute.getsockname()[1]

        code = check(f"127.0.0.1:{port}", timeout=0.2)

    assert code == 1
    assert "did not answer within 0.2 s" in capsys.readouterr().err


def test_health_needs_no_token_and_a_given_token_must_be_valid(
    start_server: StartServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = "probe-test-token-0123456789abcdef"
    tokens = tmp_path / "tokens"
    tokens.write_text(f"read {token}\n")
    secured = start_server("--tokens", str(tokens))
    address = f"127.0.0.1:{secured.port}"

    assert check(address) == 0  # what the Kubernetes and Docker probes rely on
    assert check(address, token=token) == 0
    capsys.readouterr()
    assert check(address, token="not-the-token-0123456789abcdef") == 1
    assert capsys.readouterr().err == (
        f"matchlight health: {address} answered unauthorized: invalid token\n"
    )


@pytest.mark.parametrize("address", ["7420", "127.0.0.1:", ":7420", "host:port", "unix:"])
def test_a_malformed_address_is_unhealthy_without_connecting(
    address: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert check(address) == 1
    assert "--connect" in capsys.readouterr().err


def test_the_health_subcommand_parses_its_options_with_defaults() -> None:
    parser = argparse.ArgumentParser(prog="matchlight")
    health.register(parser.add_subparsers(dest="command"))

    defaults = parser.parse_args(["health"])
    given = parser.parse_args(
        ["health", "--connect", "unix:/run/m.sock", "--timeout", "0.5", "--token", "t"]
    )

    assert (defaults.connect, defaults.timeout, defaults.token) == ("127.0.0.1:7420", 3.0, None)
    assert defaults.func is health.run
    assert (given.connect, given.timeout, given.token) == ("unix:/run/m.sock", 0.5, "t")
    with pytest.raises(SystemExit):
        parser.parse_args(["health", "--timeout", "0"])
