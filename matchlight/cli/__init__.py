"""The ``matchlight`` command line.

Each command is a module of this package with ``register(subparsers)``,
which adds its parser and sets ``func=run``, and ``run(args) -> int``, which
returns the exit status (:mod:`matchlight.cli.command`). :func:`build_parser`
adds the options every command shares and registers the commands;
:func:`main` parses, configures logging and runs the chosen command.
"""

from __future__ import annotations

import argparse
import sys

from matchlight.cli import (
    bench,
    demo,
    evaluate,
    explain,
    health,
    replay,
    serve,
    shadow_report,
    train,
    verify,
)
from matchlight.cli.command import HelpFormatter

#: In the order ``matchlight --help`` lists them.
COMMANDS = (
    serve,
    train,
    bench,
    health,
    shadow_report,
    evaluate,
    explain,
    verify,
    replay,
    demo,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``matchlight`` parser: the logging options, then one subcommand per command."""
    parser = argparse.ArgumentParser(
        prog="matchlight",
        description="Real-time personalization and recommendation engine (msgpack-RPC server).",
        formatter_class=HelpFormatter,
        # `serve --log nats://…` must not read as an abbreviation of --log-level.
        allow_abbrev=False,
    )
    parser.add_argument("--log-level", default="INFO", help="logging level for stderr")
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="stderr log lines as text, or one JSON object per line",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``matchlight`` with ``argv`` (the process's arguments by default); the exit status."""
    from matchlight.server import logs

    args = build_parser().parse_args(argv)
    #: The command line as given: `serve --workers N` starts its workers with it.
    args.argv = sys.argv[1:] if argv is None else list(argv)
    try:
        logs.configure(args.log_level, args.log_format)
    except ValueError as exc:
        print(f"matchlight: {exc}", file=sys.stderr)
        return 2
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
