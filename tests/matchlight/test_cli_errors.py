"""How ``matchlight serve`` turns a startup failure raised inside Trio's nurseries into one line."""

from __future__ import annotations

from actors import StoreError
from legacy_adapter import MigrationError
from matchlight.cli.serve import operator_error


def test_an_operator_error_is_found_inside_nested_exception_groups() -> None:
    bad_state = MigrationError("/data/migration.json: surfaces.home.mode: expected one of …")
    group = ExceptionGroup("nursery", [ExceptionGroup("inner nursery", [bad_state])])

    assert operator_error(group) is bad_state
    assert operator_error(bad_state) is bad_state
    assert operator_error(OSError(98, "cannot listen on 127.0.0.1:7420")) is not None


def test_a_group_of_only_operator_errors_gives_its_first() -> None:
    first, second = StoreError("disk full"), OSError("address in use")

    assert operator_error(ExceptionGroup("g", [first, ExceptionGroup("h", [second])])) is first


def test_a_bug_anywhere_in_the_group_keeps_its_traceback() -> None:
    group = ExceptionGroup("g", [StoreError("disk full"), KeyError("bug")])

    assert operator_error(group) is None
    assert operator_error(KeyError("bug")) is None
