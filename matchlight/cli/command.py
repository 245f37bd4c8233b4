"""What every ``matchlight`` command module shares.

Each command is a module with ``register(subparsers)``, which adds its parser
with :func:`add_command` and sets ``func=run``, and ``run(args) -> int``, which
returns the exit status. :class:`HelpFormatter` prints each option's default,
so help strings do not restate it; :func:`fail` says why a command stopped.
"""

from __future__ import annotations

import argparse
import sys
from typing import TypeAlias

#: The object ``register`` adds a command to (``ArgumentParser.add_subparsers()``).
Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default X)`` to an option's help, a float in ``%g`` form (300, not 300.0).

    Options without a meaningful default print nothing extra: a default of
    ``None`` (the help says what happens then), a flag's ``False``, and help
    that already places ``%(default)`` itself.
    """

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or not action.option_strings
            or default is None
            or default is argparse.SUPPRESS
            or isinstance(default, bool)
        ):
            return text
        spec = "g" if isinstance(default, float) else "s"
        return f"{text} (default %(default){spec})"


def add_command(
    sub: Subparsers, name: str, *, help: str, description: str, epilog: str | None = None
) -> argparse.ArgumentParser:
    """Add the command ``name``: ``help`` is its line in ``matchlight --help``,
    ``description`` (and ``epilog``) head (and end) ``matchlight NAME --help``,
    which prints the defaults (:class:`HelpFormatter`)."""
    return sub.add_parser(
        name, help=help, description=description, epilog=epilog, formatter_class=HelpFormatter
    )


def fail(command: str, message: str, status: int = 1) -> int:
    """Print ``matchlight COMMAND: MESSAGE`` on stderr and return ``status``, the exit status."""
    print(f"matchlight {command}: {message}", file=sys.stderr, flush=True)
    return status
