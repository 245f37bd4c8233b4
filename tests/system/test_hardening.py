"""Inputs the server accepts, and operator mistakes, must not poison, bloat or lose anything.

Through the real server: an event stamped in milliseconds (or a month ahead),
and absurd weights, are refused and leave every ranking as it was; an item
with 99,999 numbers is refused, while the largest accepted items cost memory
in proportion to what they store and restart cleanly; a second ``serve`` on a
data directory (or on a live unix socket) refuses to start; a full disk is
named as such, logged once a minute rather than per request, and recovers.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from matchlight.bench.harness import start_server
from matchlight.client import Client
from matchlight.errors import RpcError
from tests.system.conftest import STOP_TIMEOUT_S, ServerProcess, server_env

if TYPE_CHECKING:
    pass

pytestmark = pytest.mark.system

SERVE = (sys.executable, "-m", "matchlight.cli", "serve")
NOW = time.time()
CATEGORIES = ("garden", "plumbing", "roofing")


def seed(client: Client, users: int = 12) -> None:
    """30 items in three categories; each user likes items of one category, hours ago."""
    items = [
        {"id": f"pro-{n}", "kind": "pro", "terms": {"category": CATEGORIES[n % 3]}}
        for n in range(30)
    ]
    client.call("upsert_items", {"items": items})
    events = [
        {
            "id": f"seed-{u}-{j}",
            "type": "like" if j % 2 else "view",
            "user": f"user-{u}",
            "item": f"pro-{3 * ((u + 2 * j) % 10) + u % 3}",
            "ts": NOW - 3600 * (10 - j) - u,
        }
        for u in range(users)
        for j in range(8)
    ]
    client.call("ingest", {"events": events})


def rankings(client: Client, users: int = 12) -> dict[str, list[str]]:
    return {
        f"user-{u}": [
            entry["id"]
            for entry in client.call("recommend", {"user": f"user-{u}", "k": 15})["items"]
        ]
        for u in range(users)
    }


def refusal(client: Client, method: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as caught:
        client.call(method, params)
    return caught.value


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


# -- time and numbers --------------------------------------------------------------------


def test_millisecond_and_future_timestamps_are_refused_and_rankings_stay(
    server: ServerProcess,
) -> None:
    client = server.client()
    seed(client)
    before = rankings(client)
    counters = client.call("get_item", {"id": "pro-29"})["counters"]

    for ts, says in [
        (NOW * 1000, "looks like milliseconds since the epoch"),
        (1e12, "looks like milliseconds since the epoch"),
        (1e10, "ahead of the server's clock"),
        (NOW + 30 * 86400, "30.0 days ahead of the server's clock"),
        (NOW + 500 * 86400, "1.4 years ahead"),
    ]:
        poison = {"id": f"p-{ts}", "type": "like", "user": "js", "item": "pro-29", "ts": ts}
        error = refusal(client, "ingest", {"events": [poison]})
        assert error.code == "bad_request"
        assert error.message.startswith("events[0].ts: "), error.message
        assert says in error.message, error.message

    assert rankings(client) == before
    assert client.call("get_item", {"id": "pro-29"})["counters"] == counters
    # Events a little ahead (within the allowed skew) and far in the past are fine.
    fine = [
        {"id": "skew", "type": "view", "user": "late", "item": "pro-1", "ts": NOW + 60},
        {"id": "history", "type": "view", "user": "late", "item": "pro-2", "ts": 86400.0},
    ]
    assert client.call("ingest", {"events": fine})["accepted"] == 2


def test_absurd_weights_are_refused_and_popularity_stays_finite(server: ServerProcess) -> None:
    client = server.client()
    seed(client)
    before = rankings(client)

    for n, weight in enumerate([1e308, -1.0, 1e7]):
        huge = {"id": f"w{n}", "type": "like", "user": "w", "item": "pro-4", "ts": NOW}
        error = refusal(client, "ingest", {"events": [huge, {**huge, "weight": weight}]})
        assert error.code == "bad_request"
        assert error.message.startswith("events[1].weight: must lie in [0, 1,000,000], got ")

    assert rankings(client) == before
    explained = client.call("recommend", {"user": "user-1", "k": 5, "explain": True})["items"]
    assert all(item["score"] == item["score"] for item in explained)  # no NaN


def test_an_item_with_99999_numbers_is_refused_and_the_widest_items_cost_what_they_store(
    server: ServerProcess,
) -> None:
    client = server.client()
    # A catalogue large enough that a field sized to it would show (50,000 items).
    for start in range(0, 50_000, 10_000):
        batch = [{"id": f"c-{n}", "terms": {"tier": "a"}} for n in range(start, start + 10_000)]
        client.call("upsert_items", {"items": batch})

    wide = {"id": "wide", "numbers": {f"n{k}": float(k) for k in range(99_999)}}
    error = refusal(client, "upsert_items", {"items": [wide]})
    assert error.code == "bad_request"
    assert error.message == "items[0].numbers: at most 256 fields per item, got 99999"

    # The widest accepted items: 4 x 250 new numeric fields, on the newest items.
    baseline = rss_mib(server.proc.pid)  # type: ignore[union-attr]
    for k in range(4):
        numbers = {f"f{k}-{j}": float(j) for j in range(250)}
        client.call("upsert_items", {"items": [{"id": f"c-{49_996 + k}", "numbers": numbers}]})
    grown = rss_mib(server.proc.pid) - baseline  # type: ignore[union-attr]
    # A dense array per field would take 1,000 x 50,000 x 8 bytes = 400 MB.
    assert grown < 60, f"RSS grew by {grown:.0f} MiB for 1,000 sparse fields"

    # The catalogue now has (nearly) all numeric fields allowed: more are refused by name.
    error = refusal(
        client,
        "upsert_items",
        {"items": [{"id": "c-1", "numbers": {f"x{j}": 1 for j in range(30)}}]},
    )
    assert error.code == "bad_request"
    assert re.match(
        r"items\[0\]\.numbers\.x\d+: 'x\d+' would be a new numeric field", error.message
    )
    assert client.call("search", {"filter": {"range": ["f3-249", 249, 249]}})["items"] == [
        "c-49999"
    ]

    server.restart()
    client = server.client()
    assert len(client.call("get_item", {"id": "c-49999"})["numbers"]) == 250
    assert client.call("search", {"filter": {"range": ["f0-7", 7, 7]}})["items"] == ["c-49996"]


# -- one writer per data directory ---------------------------------------------------------


def run_serve(*args: str, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*SERVE, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=server_env(),
        check=False,
    )


def test_a_second_server_on_the_same_data_directory_refuses_and_nothing_is_lost(
    server: ServerProcess,
) -> None:
    client = server.client()
    first = [
        {"id": f"a-{n}", "type": "view", "user": f"u{n % 50}", "item": "i1", "ts": NOW}
        for n in range(5000)
    ]
    assert client.call("ingest", {"events": first})["accepted"] == 5000

    second = run_serve("--data", str(server.data), "--listen", "127.0.0.1:0")

    assert second.returncode == 1
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1, second.stderr
    assert lines[0].startswith(f"matchlight serve: the data directory {server.data} is in use by")
    assert f"pid {server.proc.pid} (matchlight serve" in lines[0]  # type: ignore[union-attr]

    more = [{**event, "id": f"b-{n}"} for n, event in enumerate(first)]
    assert client.call("ingest", {"events": more})["accepted"] == 5000
    server.kill9()  # the lock dies with its holder: the restart takes it at once
    server.start()
    client = server.client()
    assert client.call("stats")["log_seq"] == 10_000
    assert client.call("ingest", {"events": first + more})["duplicates"] == 10_000
    assert sum(client.call("get_user", {"id": "u7"})["counters"].values()) == 200


@pytest.fixture
def socket_path(tmp_path: Path) -> Iterator[Path]:
    # AF_UNIX paths are at most 107 bytes: pytest's tmp_path can be longer.
    directory = Path(f"/tmp/ml-sock-{os.getpid()}-{time.monotonic_ns()}")
    directory.mkdir()
    try:
        yield directory / "s.sock"
    finally:
        for child in directory.iterdir():
            child.unlink()
        directory.rmdir()


def test_a_unix_socket_a_live_server_listens_on_is_never_taken_over(
    tmp_path: Path, socket_path: Path
) -> None:
    listen = f"unix:{socket_path}"
    first = start_server(
        tmp_path / "one", listen=listen, stderr=tmp_path / "first.err", env=server_env()
    )
    try:
        assert first.address == listen

        second = run_serve("--data", str(tmp_path / "two"), "--listen", listen)

        assert second.returncode == 1
        assert second.stderr.strip() == (
            f"matchlight serve: cannot listen on {listen}: another server is listening there"
        )
        with Client(unix=str(socket_path), timeout=10) as client:
            assert client.call("health")["status"] == "ok"
    finally:
        first.kill(STOP_TIMEOUT_S)
    # Its socket file is left behind by the kill: a new server takes it over.
    third = start_server(
        tmp_path / "two", listen=listen, stderr=tmp_path / "third.err", env=server_env()
    )
    try:
        assert third.address == listen
    finally:
        third.kill(STOP_TIMEOUT_S)


# -- diagnostics -------------------------------------------------------------------------


def test_out_of_range_values_are_shown_in_the_error(server: ServerProcess) -> None:
    client = server.client()
    assert refusal(client, "recommend", {"user": "u", "k": 0}).message.endswith("got 0")
    assert refusal(client, "recommend", {"user": "u", "k": 5000}).message.endswith("got 5000")
    message = refusal(client, "search", {"filter": {"all": []}, "limit": -3}).message
    assert message.endswith("got -3")


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 32 MiB tmpfs (needs root and mount; skipped elsewhere)."""
    mount = tmp_path / "small"
    mount.mkdir()
    made = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=32m", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until the filesystem is full; return it."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o644)
    try:
        for size in (1 << 20, 4096, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    return filler


def test_a_full_disk_is_named_logged_once_and_recovered_from(
    small_disk: Path, tmp_path: Path
) -> None:
    server = ServerProcess(small_disk / "data", tmp_path / "logs")
    try:
        server.start()
        client = server.client()
        seed(client)
        filler = fill(small_disk)

        events = [
            {"id": f"full-{n}", "type": "like", "user": "u", "item": "pro-1", "ts": NOW}
            for n in range(2000)
        ]
        error = refusal(client, "ingest", {"events": events})
        assert error.code == "unavailable"
        assert error.message.startswith("disk full ("), error.message
        assert "nothing written" in error.message
        # Reads keep being served; their decision records cannot be written.
        for n in range(60):
            client.call("recommend", {"user": f"user-{n % 12}", "k": 5})
        deadline = time.monotonic() + 10
        while client.call("stats")["decisions_lost"] == 0:  # the writer runs every few ms
            assert time.monotonic() < deadline, "no decision write failed on a full disk"
            time.sleep(0.05)

        filler.unlink()
        assert client.call("ingest", {"events": events})["accepted"] == 2000
        client.call("recommend", {"user": "user-0", "k": 5})
        server.terminate()
        log = server.stderr_text()

        assert "Traceback" not in log, log
        lost = [line for line in log.splitlines() if "lost" in line and "decision" in line]
        assert 1 <= len(lost) <= 2, log
        assert "disk full (" in lost[0]
        assert "Input/output error" not in log.replace("mdb_txn_commit: Input/output error", "")
    finally:
        server.close()
