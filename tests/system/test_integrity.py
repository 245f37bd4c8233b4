"""Damaged stored state against the real server: never served silently, named in one line.

A bit flipped in an item's snapshot, bytes flipped in a legacy feed entry and
in an event, and state files an operator got wrong, each met by the real
``matchlight serve`` (and ``verify`` and ``train``) as subprocesses. Stored
values are damaged with py-lmdb while no server runs on them, keeping each
record's framing, as a disk error inside the value would.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import lmdb
import pytest

from actors import InteractionRecorded, ItemUpserted, LmdbEventStore
from actors.lmdb_layout import entity_key
from matchlight.errors import RpcError
from tests.system.conftest import run_cli

if TYPE_CHECKING:
    from matchlight.client import Client
    from tests.system.conftest import StartServer

pytestmark = pytest.mark.system

LIKES = 38  # 0x26; one flipped bit (0x08) makes it 46, the example


def rewrite(path: Path, table: bytes | None, key: bytes, old: bytes, new: bytes) -> None:
    """Replace the one occurrence of ``old`` in the value under ``key`` by ``new``
    (same length: the record's framing and checksum stay as they were)."""
    assert len(old) == len(new)
    env = lmdb.open(str(path), max_dbs=8)
    try:
        db = None if table is None else env.open_db(table)
        with env.begin(write=True, db=db) as txn:
            value = txn.get(key)
            assert value is not None, key
            assert value.count(old) == 1, (old, value)
            txn.put(key, value.replace(old, new))
    finally:
        env.close()


def catalogue() -> list[dict[str, Any]]:
    return [
        {"id": f"pro-{n}", "kind": "pro", "terms": {"city": "austin", "topic": f"t{n % 3}"}}
        for n in range(8)
    ]


def likes(item: str, count: int, first: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": f"{item}-like-{n}", "type": "like", "user": f"u{n}", "item": item, "ts": 1e9 + n}
        for n in range(first, first + count)
    ]


def search_ids(client: Client, query: dict[str, Any]) -> list[str]:
    result: dict[str, Any] = client.call("search", {"filter": query, "limit": 20})
    ids: list[str] = result["items"]
    return ids


# -- (a) a flipped bit in an item's snapshot ------------------------------------------------


# A reader finds the damage; the writer must let its new snapshot replace the damaged one.
@pytest.mark.parametrize("workers", ["1", "3"])
def test_a_flipped_bit_in_an_item_snapshot_is_caught_and_the_item_rebuilt_from_its_events(
    start_server: StartServer, workers: str
) -> None:
    server = start_server("--snapshot-every", "1", "--workers", workers)
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    client.call("ingest", {"events": likes("pro-1", LIKES) + likes("pro-2", 3)})
    assert client.call("get_item", {"id": "pro-1"})["counters"]["like"] == LIKES
    assert server.terminate() == 0  # every snapshot flushed

    # The like counter inside pro-1's snapshot: 38 -> 46, the msgpack still valid.
    rewrite(
        server.data / "events",
        b"snapshots",
        entity_key("item", "pro-1"),
        b"\xa4like" + bytes([LIKES]),
        b"\xa4like" + bytes([LIKES ^ 0x08]),
    )
    server.start()
    client = server.client()

    item = client.call("get_item", {"id": "pro-1"})
    assert item["counters"]["like"] == LIKES
    assert search_ids(client, {"range": ["like", LIKES, LIKES]}) == ["pro-1"]
    assert search_ids(client, {"range": ["like", LIKES ^ 0x08, None]}) == []
    assert client.call("stats")["corrupt_snapshots"] == 1
    stderr = server.stderr_text()
    assert "the snapshot of item 'pro-1' (seq" in stderr
    assert "is corrupt: checksum mismatch" in stderr
    assert "Traceback" not in stderr

    # verify beside the running server names it ...
    damaged = run_cli("verify", "--data", str(server.data), "--quiet")
    assert damaged.returncode == 1, damaged.stdout + damaged.stderr
    assert "snapshot of item 'pro-1': checksum mismatch" in damaged.stdout
    # ... and the snapshot the server writes on the way out replaces it.
    assert server.terminate() == 0
    mended = run_cli("verify", "--data", str(server.data), "--quiet")
    assert mended.returncode == 0, mended.stdout + mended.stderr


# In one process, and as a writer and two readers (the writer's catalogue and each
# reader's projections meet the corrupt event apart).
@pytest.mark.parametrize("workers", ["1", "3"])
def test_a_corrupt_event_fails_its_entities_clearly_and_the_server_serves_the_rest(
    start_server: StartServer, workers: str
) -> None:
    server = start_server("--workers", workers)
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})  # seq 1..8
    client.call("ingest", {"events": likes("pro-1", 3) + likes("pro-2", 3)})  # seq 9..14
    server.kill9()  # no snapshot on the way out: the items' states come from their events
    # seq 10 is pro-1's second like, by user u1: "pro-1" -> "pro-0" (one bit).
    seq_10 = (10).to_bytes(8, "big")
    rewrite(server.data / "events", b"events", seq_10, b"\xa5pro-1", b"\xa5pro-0")
    server.start()  # the index rebuild leaves pro-1 out instead of dying
    client = server.client()

    assert search_ids(client, {"range": ["like", 3, 3]}) == ["pro-2"]
    assert client.call("get_item", {"id": "pro-2"})["counters"] == {"like": 3}
    for _ in range(3):
        with pytest.raises(RpcError) as caught:
            client.call("get_item", {"id": "pro-1"})
        assert caught.value.code == "unavailable"
        assert "event seq 10" in caught.value.message
        assert "matchlight verify" in caught.value.message
    assert client.call("stats")["corrupt_events"] == 1
    assert server.terminate() == 0
    stderr = server.stderr_text()
    assert "item index: item 'pro-1' left out: event seq 10" in stderr
    assert stderr.count("item actor 'pro-1' failed") == 1  # rate-limited, not one per request
    assert "Traceback" not in stderr


# -- (b) state files an operator got wrong --------------------------------------------------


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


BANANA = json.dumps({"surfaces": {"home": {"mode": "banana", "percent": 500}}})
CANARY_500 = json.dumps({"surfaces": {"home": {"mode": "canary", "percent": 500}}})


@pytest.mark.parametrize(
    ("file", "content", "args", "expected"),
    [
        (
            "migration.json",
            BANANA,
            (),
            "migration.json: surfaces.home.mode: expected one of legacy, shadow, canary, "
            "interleave, live, got 'banana'",
        ),
        (
            "migration.json",
            CANARY_500,
            (),
            "migration.json: surfaces.home.percent: must lie in [0, 100], got 500",
        ),
        ("migration.json", "{truncated", (), "migration.json: not JSON"),
        (
            "migration.json",
            json.dumps({"surfaces": {"home": {"mode": "live", "colour": "red"}}}),
            (),
            "migration.json: surfaces.home.colour: unknown field",
        ),
        (
            "models/CURRENT",
            "../../../etc\n",
            (),
            "models/CURRENT: expected a version name like 20261128T101500Z-seq1234",
        ),
        (
            "models/CURRENT",
            "20261128T101500Z-seq42\n",
            (),
            "models/CURRENT: names a model that cannot be loaded",
        ),
        (
            "legacy/CURRENT",
            json.dumps({"env": "snap-3", "snapshot": "x"}),
            ("--legacy-feed", "FEED"),
            "legacy/CURRENT: env: names snap-3, which does not exist",
        ),
    ],
    ids=["mode", "percent", "json", "unknown-field", "model-name", "model-missing", "feed"],
)
def test_serve_refuses_a_bad_state_file_in_one_line_naming_file_and_field(
    tmp_path: Path, file: str, content: str, args: tuple[str, ...], expected: str
) -> None:
    data = tmp_path / "data"
    write(data / file, content)
    feed = tmp_path / "feed.jsonl"
    feed.write_text(json.dumps({"user": "u1", "surface": "home", "items": ["pro-1"]}) + "\n")
    args = tuple(str(feed) if arg == "FEED" else arg for arg in args)

    result = run_cli("serve", "--data", str(data), "--listen", "127.0.0.1:0", *args, timeout=30)

    assert result.returncode == 2, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"matchlight serve: {data / file}{expected.removeprefix(file)}")
    assert "Traceback" not in result.stderr
    assert not (data / "events").exists()  # refused before anything started


def test_serve_refuses_a_current_model_whose_files_do_not_load_in_one_line(
    tmp_path: Path,
) -> None:
    """The pointer is fine and its files exist: the ranker's one load finds them damaged."""
    data = tmp_path / "data"
    artifact = data / "models" / "20261128T101500Z-seq42"
    write(artifact / "meta.json", json.dumps({"format": 1}))
    write(artifact / "model.npz", "not an archive")
    write(data / "models" / "CURRENT", "20261128T101500Z-seq42\n")

    result = run_cli("serve", "--data", str(data), "--listen", "127.0.0.1:0", timeout=60)

    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        f"matchlight serve: cannot read model '20261128T101500Z-seq42' in {artifact}"
    )


# -- (c) a corrupt legacy feed entry ---------------------------------------------------------


def test_a_corrupt_feed_entry_is_served_from_real_time_and_others_from_the_feed(
    start_server: StartServer, tmp_path: Path
) -> None:
    feed = tmp_path / "feed.jsonl"
    legacy = [f"pro-{n}" for n in range(8)]
    feed.write_text(
        "".join(
            json.dumps({"user": f"u{n}", "surface": "home", "items": legacy}) + "\n"
            for n in range(10)
        )
    )
    server = start_server("--legacy-feed", str(feed))
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    client.call("ingest", {"events": likes("pro-5", 3)})
    assert client.call("recommend", {"user": "u1", "surface": "home", "k": 5})["source"] == (
        "legacy"
    )
    assert server.terminate() == 0

    current = json.loads((server.data / "legacy" / "CURRENT").read_text())
    # One bit in an item id of u1's list: "pro-3" would read as "pro-2".
    rewrite(server.data / "legacy" / current["env"], None, b"home\0u1", b"pro-3", b"pro-2")
    server.start()
    client = server.client()

    damaged = client.call("recommend", {"user": "u1", "surface": "home", "k": 5})
    assert damaged["source"] == "realtime"
    assert damaged["feed_missing"] is True
    other = client.call("recommend", {"user": "u2", "surface": "home", "k": 5})
    assert other["source"] == "legacy"
    assert [item["id"] for item in other["items"]] == legacy[:5]
    assert client.call("stats")["feed_corrupt_entries"] == 1
    stderr = server.stderr_text()
    assert "the entry of user 'u1' on surface 'home' is corrupt: checksum mismatch" in stderr
    assert "Traceback" not in stderr

    verify = run_cli("verify", "--data", str(server.data), "--quiet")
    assert verify.returncode == 1
    assert "surface 'home', user 'u1': checksum mismatch" in verify.stdout


# -- (d) a clean data directory ----------------------------------------------------------------


def test_verify_passes_a_clean_data_dir_written_by_a_real_server(
    start_server: StartServer, tmp_path: Path
) -> None:
    feed = tmp_path / "feed.jsonl"
    feed.write_text(
        "".join(
            json.dumps({"user": f"u{n}", "surface": "home", "items": ["pro-1", "pro-2"]}) + "\n"
            for n in range(20)
        )
    )
    server = start_server("--legacy-feed", str(feed), "--snapshot-every", "3")
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    for n in range(8):
        client.call("ingest", {"events": likes(f"pro-{n}", 10 + n, first=100 * n)})
    client.call("remove_items", {"ids": ["pro-7"]})
    client.call("set_migration", {"surface": "home", "mode": "shadow"})
    for n in range(20):
        client.call("recommend", {"user": f"u{n}", "surface": "home", "k": 3})
    trained = run_cli("train", "--data", str(server.data), "--epochs", "2", timeout=120)
    assert trained.returncode == 0, trained.stderr

    beside = run_cli("verify", "--data", str(server.data), "--quiet")
    assert beside.returncode == 0, beside.stdout + beside.stderr
    assert server.terminate() == 0
    report = tmp_path / "verify.json"
    after = run_cli("verify", "--data", str(server.data), "--json", str(report))

    assert after.returncode == 0, after.stdout + after.stderr
    assert "no problems found" in after.stdout
    result = json.loads(report.read_text())
    assert result["ok"] is True
    parts = result["parts"]
    events = sum(10 + n for n in range(8)) + len(catalogue()) + 1
    assert parts["events"]["checked"]["events"] == events
    assert parts["events"]["checked"]["ids"] == events
    assert parts["events"]["checked"]["snapshots"] > 0
    assert parts["events"]["checked"]["events_unsealed"] == 0
    assert parts["legacy feed"]["checked"] == {"entries": 20, "sealed": 20, "unsealed": 0}
    assert parts["state files"]["checked"] == {"migration": 1, "model": 1, "feed": 1}
    assert parts["decisions"]["checked"]["records"] >= 20
    assert parts["comparisons"]["checked"]["records"] >= 20
    # Written as the server stopped, as of the log's last event.
    assert parts["co-occurrence snapshot"]["checked"]["seq"] == events
    assert set(parts["co-occurrence snapshot"]["checked"]) == {"seq", "items", "pairs"}
    assert "matchlight verify: checking events" in after.stderr  # progress on stderr


def test_verify_names_a_co_occurrence_snapshot_that_is_damaged_or_of_another_log(
    start_server: StartServer,
) -> None:
    server = start_server()
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    client.call("ingest", {"events": likes("pro-1", 10) + likes("pro-2", 10, first=100)})
    assert server.terminate() == 0
    path = server.data / "cooccurrence.snapshot"
    good = path.read_bytes()

    path.write_bytes(good[: len(good) // 2])
    damaged = run_cli("verify", "--data", str(server.data), "--quiet")
    assert damaged.returncode == 1, damaged.stdout
    assert f"{path}: not a co-occurrence snapshot" in damaged.stdout
    assert "a server ignores it and replays the whole log" in damaged.stdout

    other = start_server()  # a snapshot of another log, copied in by mistake
    other_client = other.client()
    other_client.call("upsert_items", {"items": catalogue()})
    other_client.call("ingest", {"events": likes("pro-3", 30, first=500)})
    assert other.terminate() == 0
    path.write_bytes((other.data / "cooccurrence.snapshot").read_bytes())
    foreign = run_cli("verify", "--data", str(server.data), "--quiet")
    assert foreign.returncode == 1, foreign.stdout
    assert "past the log's" in foreign.stdout  # 30 events there, 20 here

    path.write_bytes(good)
    assert run_cli("verify", "--data", str(server.data), "--quiet").returncode == 0


def test_verify_refuses_a_missing_directory_with_usage_status(tmp_path: Path) -> None:
    result = run_cli("verify", "--data", str(tmp_path / "nowhere"))

    assert result.returncode == 2
    assert result.stderr.strip() == f"matchlight verify: no data directory {tmp_path / 'nowhere'}"


# -- train on a log with a corrupt event --------------------------------------------------------


def test_train_on_a_corrupt_event_fails_in_one_line_naming_the_seq(tmp_path: Path) -> None:
    store = LmdbEventStore(tmp_path / "events")
    try:
        store.append(
            [
                ItemUpserted(id=f"up{n}", item=f"pro-{n}", ts=1.0, kind="pro", terms={})
                for n in range(3)
            ]
            + [
                InteractionRecorded(
                    id=f"x{n}", type="like", user=f"user-{n}", item=f"pro-{n % 3}", ts=2.0
                )
                for n in range(10)
            ]
        )
    finally:
        store.close()
    # seq 7 is x3: "user-3" -> "user-2" (one bit), a record that still decodes.
    rewrite(tmp_path / "events", b"events", (7).to_bytes(8, "big"), b"user-3", b"user-2")

    result = run_cli("train", "--data", str(tmp_path), "--epochs", "1")

    assert result.returncode == 1
    (line,) = result.stderr.splitlines()
    assert line.startswith(f"matchlight train: event seq 7 in {tmp_path / 'events'} is corrupt")
    assert f"run `matchlight verify --data {tmp_path}`" in line
    assert "Traceback" not in result.stderr
