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
from typing import Any

from matchlight.address import parse_connect
from matchlight.cli.argtypes import positive_float
from matchlight.cli.command import Subparsers, add_command, fail
from matchlight.client import Client
from matchlight.errors import RpcError

DEFAULT_CONNECT = "127.0.0.1:7420"
DEFAULT_TIMEOUT_S = 3.0


def register(sub: Subparsers) -> None:
    """Add ``health`` to the ``matchlight`` command line."""
    health = add_command(
        sub,
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
        help="the server's address",
    )
    health.add_argument(
        "--timeout",
        type=positive_float,
        default=DEFAULT_TIMEOUT_S,
        metavar="SECONDS",
        help="give up on connecting, or on an answer, after this long",
    )
    health.add_argument(
        "--token",
        metavar="TOKEN",
        help="authenticate with this token first (the check then fails if it is refused)",
    )
    health.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the check described by ``args``; return the exit code (0 healthy, 1 not)."""
    try:
        address = parse_connect(args.connect)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        # One attempt: a probe that retries would take several timeouts to say "no".
        with Client(
            address.host, address.port, unix=address.unix, timeout=args.timeout, retries=0
        ) as client:
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


def _fail(message: str) -> int:
    return fail("health", message)
