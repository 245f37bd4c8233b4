"""``matchlight health``: ask a running server whether it is healthy.

    matchlight health --connect 127.0.0.1:7420 [--timeout 3] [--token TOKEN]

Calls the ``health`` RPC (which needs no token) and exits 0 if the server
answers ``status: ok``, 1 otherwise, printing one line either way: ``ok VERSION``
on stdout, or what went wrong on stderr. Made for container HEALTHCHECKs and
Kubernetes exec probes, so it never prints a traceback for an unreachable or
misbehaving server. With ``--token`` it calls ``auth`` first, which also checks
that the token is accepted.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from matchlight.cli.argtypes import positive_float
from matchlight.client import Client
from matchlight.errors import RpcError

DEFAULT_CONNECT = "127.0.0.1:7420"
DEFAULT_TIMEOUT_S = 3.0

_PROG = "matchlight health"


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``health`` subcommand to the ``matchlight`` command line."""
    health = sub.add_parser(
        "health",
        help="check that a running server answers health",
        description="Call the health RPC of a running server; exit 0 and print 'ok VERSION' "
        "if it answers status ok, else exit 1 and say why. For container HEALTHCHECKs and "
        "Kubernetes exec probes.",
    )
    health.add_argument(
        "--connect",
        default=DEFAULT_CONNECT,
        metavar="HOST:PORT|unix:PATH",
        help=f"the server's address (default {DEFAULT_CONNECT})",
    )
    health.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="give up on connecting, or on an answer, after this long (default 3)",
    )
    health.add_argument(
        "--token",
        metavar="TOKEN",
        help="authenticate with this token first (the check then fails if it is refused)",
    )
    health.set_defaults(func=main)


def main(args: argparse.Namespace) -> int:
    """Run the check described by ``args``; return the exit code (0 healthy, 1 not)."""
    try:
        host, port, unix = parse_connect(args.connect)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        # One attempt: a probe that retries would take several timeouts to say "no".
        with Client(host, port, unix=unix, timeout=args.timeout, retries=0) as client:
            if args.token is not None:
                client.call("auth", {"token": args.token})
            result: Any = client.call("health")
    except RpcError as exc:
        return _fail(f"{args.connect} answered {exc.code}: {exc.message}")
    except TimeoutError:
        return _fail(f"{args.connect} did not answer within {args.timeout:g} s")
    except OSError as exc:  # refused, unreachable, no such socket, connection closed
        return _fail(f"cannot reach {args.connect}: {exc.strerror or exc}")
    except (ValueError, TypeError) as exc:
        # Whatever listens there does not speak msgpack-RPC (undecodable or misshapen reply).
        return _fail(f"{args.connect} gave an answer that is not msgpack-RPC: {exc}")
    if not isinstance(result, dict) or result.get("status") != "ok":
        return _fail(f"{args.connect} is not healthy: {result!r}")
    print(f"ok {result.get('version', '?')}", flush=True)
    return 0


def parse_connect(address: str) -> tuple[str, int, str | None]:
    """``HOST:PORT`` → ``(host, port, None)``; ``unix:PATH`` → ``("", 0, path)``.

    Raises:
        ValueError: the address is in neither form.
    """
    if address.startswith("unix:"):
        path = address[len("unix:") :]
        if not path:
            raise ValueError("--connect unix: needs a socket path, e.g. unix:/run/matchlight.sock")
        return "", 0, path
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"--connect must be HOST:PORT or unix:PATH, got {address!r}")
    return host.strip("[]"), int(port), None


def _fail(message: str) -> int:
    print(f"{_PROG}: {message}", file=sys.stderr, flush=True)
    return 1
