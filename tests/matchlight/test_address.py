"""``HOST:PORT|unix:PATH`` addresses (matchlight.address), as --listen and --connect read them."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from matchlight.address import Address, parse_connect, parse_listen


@pytest.mark.parametrize("parse", [parse_listen, parse_connect])
@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("127.0.0.1:7420", Address(host="127.0.0.1", port=7420)),
        ("example.org:1", Address(host="example.org", port=1)),
        ("[::1]:65535", Address(host="::1", port=65535)),
        ("unix:/run/matchlight.sock", Address(unix="/run/matchlight.sock")),
    ],
)
def test_both_forms_are_read(parse: Callable[[str], Address], text: str, address: Address) -> None:
    assert parse(text) == address


def test_port_zero_is_a_listeners_any_free_port_and_no_clients() -> None:
    assert parse_listen("127.0.0.1:0") == Address(host="127.0.0.1", port=0)
    with pytest.raises(ValueError, match="--connect must be HOST:PORT or unix:PATH"):
        parse_connect("127.0.0.1:0")


@pytest.mark.parametrize(
    "text", ["7420", "127.0.0.1:", ":7420", "host:port", "h:65536", "h:-1", "nowhere", ""]
)
def test_malformed_addresses_name_the_option(text: str) -> None:
    with pytest.raises(ValueError, match="HOST:PORT") as listen:
        parse_listen(text)
    assert str(listen.value) == f"--listen must be HOST:PORT or unix:PATH, got {text!r}"
    with pytest.raises(ValueError, match="HOST:PORT") as connect:
        parse_connect(text)
    assert str(connect.value) == f"--connect must be HOST:PORT or unix:PATH, got {text!r}"


def test_a_unix_address_needs_a_path() -> None:
    with pytest.raises(ValueError, match=r"^--connect unix: needs a socket path"):
        parse_connect("unix:")
    with pytest.raises(ValueError, match=r"^--listen unix: needs a socket path"):
        parse_listen("unix:")


@pytest.mark.parametrize(
    "text", ["127.0.0.1:7420", "unix:/run/matchlight.sock", "[::1]:1", "localhost:1"]
)
def test_str_writes_the_address_back(text: str) -> None:
    assert str(parse_listen(text)) == text.replace("[::1]", "::1")


@pytest.mark.parametrize(
    ("text", "loopback"),
    [
        ("127.0.0.1:7420", True),
        ("127.8.9.10:1", True),
        ("[::1]:7420", True),
        ("localhost:7420", True),
        ("unix:/run/matchlight.sock", True),
        ("0.0.0.0:7420", False),
        ("10.0.0.1:7420", False),
        ("example.org:7420", False),
    ],
)
def test_loopback_means_reachable_from_this_machine_only(text: str, loopback: bool) -> None:
    assert parse_listen(text).is_loopback is loopback
