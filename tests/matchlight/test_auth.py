"""Tokens files and role rights (matchlight.server.auth)."""

from __future__ import annotations

from pathlib import Path

import pytest

from matchlight.server.auth import (
    ADMIN,
    INGEST,
    READ,
    ROLE_METHODS,
    TokensError,
    allowed,
    load_tokens,
    parse_tokens,
)

A = "a" * 16
B = "b" * 20


def test_tokens_map_to_their_roles_and_comments_are_ignored() -> None:
    tokens = parse_tokens(f"# ops\n\nread {A}\n  admin {B}  \n")
    assert len(tokens) == 2
    assert tokens.role_of(A) == READ
    assert tokens.role_of(B) == ADMIN
    assert tokens.role_of("a" * 15) is None
    assert tokens.role_of(A + "x") is None
    assert tokens.role_of("") is None


def test_each_role_may_do_what_the_one_below_may() -> None:
    read, ingest = ROLE_METHODS[READ], ROLE_METHODS[INGEST]
    assert read is not None
    assert ingest is not None
    assert read < ingest
    for method in (*read, *ingest, "stats", "set_migration", "anything"):
        assert allowed(ADMIN, method)
    assert ingest - read == {"ingest", "upsert_items", "remove_items"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"writer {A}", "t:1: unknown role 'writer'"),
        (f"read {A} extra", "t:1: expected 'ROLE TOKEN', got 3 fields"),
        ("read", "t:1: expected 'ROLE TOKEN', got 1 fields"),
        ("read short", "t:1: token too short (5 characters"),
        (f"read {A}\ningest {A}", "t:2: this token is already given above"),
        ("", "t: no tokens"),
    ],
)
def test_bad_lines_are_refused_naming_the_line(text: str, message: str) -> None:
    with pytest.raises(TokensError) as excinfo:
        parse_tokens(text, "t")
    assert message in str(excinfo.value)


def test_an_unreadable_file_is_a_tokens_error(tmp_path: Path) -> None:
    with pytest.raises(TokensError, match="cannot read tokens file"):
        load_tokens(tmp_path / "missing")
    path = tmp_path / "tokens"
    path.write_text(f"ingest {A}\n")
    assert load_tokens(path).role_of(A) == INGEST
