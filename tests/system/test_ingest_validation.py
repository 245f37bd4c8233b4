"""Validation over RPC: a malformed entry is ``bad_request`` naming its field path, and
nothing of its batch is applied (the batch's valid entries neither)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pytest

from matchlight.client import Client
from matchlight.errors import RpcError

if TYPE_CHECKING:
    from tests.system.conftest import ServerProcess

pytestmark = pytest.mark.system

ITEM = "validation-item"
BAD_AT = 3
_ids = itertools.count()


@pytest.fixture(scope="module")
def client(shared_server: ServerProcess) -> Client:
    client = shared_server.client()
    client.call("upsert_items", {"items": [{"id": ITEM, "kind": "pro"}]})
    return client


def event(**changes: Any) -> dict[str, Any]:
    n = next(_ids)
    e = {
        "id": f"val-{n}",
        "type": "like",
        "user": f"val-user-{n % 5}",
        "item": ITEM,
        "ts": 1.7e9 + n,
    }
    e.update(changes)
    return e


def observe(client: Client) -> tuple[dict[str, int], int]:
    """What a rejected batch must not change: the item's counters and the log's seq."""
    return client.call("get_item", {"id": ITEM})["counters"], client.call("stats")["log_seq"]


def rejected(client: Client, method: str, params: dict[str, Any]) -> RpcError:
    with pytest.raises(RpcError) as info:
        client.call(method, params)
    assert info.value.code == "bad_request", info.value
    return info.value


def without(field: str) -> Callable[[dict[str, Any]], Any]:
    def mutate(e: dict[str, Any]) -> Any:
        del e[field]
        return e

    return mutate


def setting(field: str, value: Any) -> Callable[[dict[str, Any]], Any]:
    def mutate(e: dict[str, Any]) -> Any:
        e[field] = value
        return e

    return mutate


def replaced_by(value: Any) -> Callable[[dict[str, Any]], Any]:
    return lambda _: value


P = f"events[{BAD_AT}]"
MALFORMED_EVENTS = [
    pytest.param(without("id"), [f"{P}.id"], id="missing-id"),
    pytest.param(without("type"), [f"{P}.type"], id="missing-type"),
    pytest.param(without("user"), [f"{P}.user"], id="missing-user"),
    pytest.param(without("item"), [f"{P}.item"], id="missing-item"),
    pytest.param(without("ts"), [f"{P}.ts"], id="missing-ts"),
    pytest.param(setting("ts", "2024-01-01T00:00:00Z"), [f"{P}.ts"], id="ts-string"),
    pytest.param(setting("ts", float("nan")), [f"{P}.ts"], id="ts-nan"),
    pytest.param(setting("ts", float("inf")), [f"{P}.ts"], id="ts-inf"),
    pytest.param(setting("ts", float("-inf")), [f"{P}.ts"], id="ts-minus-inf"),
    pytest.param(setting("ts", None), [f"{P}.ts"], id="ts-null"),
    pytest.param(setting("ts", True), [f"{P}.ts"], id="ts-bool"),
    pytest.param(setting("type", 5), [f"{P}.type"], id="type-int"),
    pytest.param(setting("type", ""), [f"{P}.type"], id="type-empty"),
    pytest.param(setting("type", "t" * 65), [f"{P}.type"], id="type-65-chars"),
    pytest.param(setting("user", ["u1"]), [f"{P}.user"], id="user-list"),
    pytest.param(setting("user", ""), [f"{P}.user"], id="user-empty"),
    pytest.param(setting("item", None), [f"{P}.item"], id="item-null"),
    pytest.param(setting("item", 1.5), [f"{P}.item"], id="item-float"),
    pytest.param(setting("id", True), [f"{P}.id"], id="id-bool"),
    pytest.param(setting("id", "x" * 257), [f"{P}.id"], id="id-257-bytes"),
    pytest.param(setting("id", "é" * 129), [f"{P}.id"], id="id-258-utf8-bytes-129-chars"),
    pytest.param(setting("foo", 1), [P, "foo"], id="unknown-field"),
    pytest.param(setting("props", ["a"]), [f"{P}.props"], id="props-list"),
    pytest.param(setting("props", "a=b"), [f"{P}.props"], id="props-string"),
    pytest.param(setting("props", {1: "a"}), [f"{P}.props"], id="props-int-key"),
    pytest.param(setting("weight", "2"), [f"{P}.weight"], id="weight-string"),
    pytest.param(setting("weight", float("nan")), [f"{P}.weight"], id="weight-nan"),
    pytest.param(setting("weight", None), [f"{P}.weight"], id="weight-null"),
    pytest.param(replaced_by("an event"), [P], id="event-string"),
    pytest.param(replaced_by([1, 2]), [P], id="event-array"),
]


@pytest.mark.parametrize(("mutate", "names"), MALFORMED_EVENTS)
def test_ingest_with_one_malformed_event_names_it_and_applies_nothing(
    client: Client, mutate: Callable[[dict[str, Any]], Any], names: list[str]
) -> None:
    before = observe(client)
    batch = [event() for _ in range(5)]
    valid = [e for i, e in enumerate(batch) if i != BAD_AT]
    batch[BAD_AT] = mutate(batch[BAD_AT])

    error = rejected(client, "ingest", {"events": batch})
    for name in names:
        assert name in error.message
    assert observe(client) == before
    # Not even the valid events' ids were recorded: they are new now.
    result = client.call("ingest", {"events": valid})
    assert (result["accepted"], result["duplicates"]) == (len(valid), 0)


@pytest.mark.parametrize(
    "params",
    [
        pytest.param({}, id="missing"),
        pytest.param({"events": None}, id="null"),
        pytest.param({"events": {"id": "e"}}, id="map"),
        pytest.param({"events": "e1,e2"}, id="string"),
    ],
)
def test_ingest_without_an_events_array_is_bad_request(
    client: Client, params: dict[str, Any]
) -> None:
    before = observe(client)
    assert "events" in rejected(client, "ingest", params).message
    assert observe(client) == before


def test_ids_and_types_at_their_size_limits_are_accepted(client: Client) -> None:
    long_ascii = "a" * 65  # longer than the fast path takes
    batch = [
        event(id="é" * 128),  # exactly 256 utf-8 bytes
        event(id=long_ascii, user="ü" * 128),
        event(type="t" * 64, weight=2, ts=1_700_000_000, props={"nested": {"k": [1, "v"]}}),
    ]
    before = client.call("get_item", {"id": ITEM})["counters"]
    result = client.call("ingest", {"events": batch})
    assert (result["accepted"], result["duplicates"]) == (3, 0)
    after = client.call("get_item", {"id": ITEM})["counters"]
    assert after["like"] == before.get("like", 0) + 2
    assert after["t" * 64] == before.get("t" * 64, 0) + 1
    assert client.call("get_user", {"id": "ü" * 128})["counters"] == {"like": 1}


def test_integer_ids_are_taken_as_their_decimal_string(client: Client) -> None:
    result = client.call(
        "ingest", {"events": [{"id": 912_345, "type": "like", "user": 42, "item": 7, "ts": 1.7e9}]}
    )
    assert result["accepted"] == 1
    assert client.call("get_item", {"id": 7})["id"] == "7"
    assert client.call("get_item", {"id": "7"})["counters"] == {"like": 1}
    assert client.call("get_user", {"id": "42"})["counters"] == {"like": 1}
    again = {"id": "912345", "type": "like", "user": "42", "item": "7", "ts": 1.7e9}
    result = client.call("ingest", {"events": [again]})
    assert (result["accepted"], result["duplicates"]) == (0, 1)


# -- upsert_items and remove_items ------------------------------------------------------------


def item(**fields: Any) -> dict[str, Any]:
    return {"id": f"val-new-item-{next(_ids)}", **fields}


Q = "items[1]"
MALFORMED_ITEMS = [
    pytest.param({"terms": {"city": 5}}, [f"{Q}.terms.city"], id="terms-value-int"),
    pytest.param({"terms": {"tags": ["a", 5]}}, [f"{Q}.terms.tags[1]"], id="terms-list-with-int"),
    pytest.param({"terms": ["city"]}, [f"{Q}.terms"], id="terms-not-a-map"),
    pytest.param({"numbers": {"rating": "high"}}, [f"{Q}.numbers.rating"], id="numbers-string"),
    pytest.param({"numbers": {"rating": float("nan")}}, [f"{Q}.numbers.rating"], id="numbers-nan"),
    pytest.param({"numbers": 4.5}, [f"{Q}.numbers"], id="numbers-not-a-map"),
    pytest.param({"active": "yes"}, [f"{Q}.active"], id="active-string"),
    pytest.param({"active": 1}, [f"{Q}.active"], id="active-int"),
    pytest.param({"kind": 3}, [f"{Q}.kind"], id="kind-int"),
    pytest.param({"color": "red"}, [Q, "color"], id="unknown-field"),
    pytest.param({"id": None}, [f"{Q}.id"], id="id-null"),
    pytest.param({"id": "x" * 257}, [f"{Q}.id"], id="id-257-bytes"),
]


@pytest.mark.parametrize(("fields", "names"), MALFORMED_ITEMS)
def test_upsert_with_one_malformed_item_names_it_and_applies_nothing(
    client: Client, fields: dict[str, Any], names: list[str]
) -> None:
    items = [item(kind="pro"), item(**fields), item(terms={"city": "austin"})]
    log_seq = client.call("stats")["log_seq"]
    error = rejected(client, "upsert_items", {"items": items})
    for name in names:
        assert name in error.message
    assert client.call("stats")["log_seq"] == log_seq
    for valid in (items[0], items[2]):
        with pytest.raises(RpcError) as info:
            client.call("get_item", {"id": valid["id"]})
        assert info.value.code == "not_found"


def test_upsert_item_missing_its_id_is_bad_request(client: Client) -> None:
    log_seq = client.call("stats")["log_seq"]
    error = rejected(client, "upsert_items", {"items": [item(), {"kind": "pro"}]})
    assert "items[1].id" in error.message
    assert client.call("stats")["log_seq"] == log_seq


@pytest.mark.parametrize(
    ("params", "name"),
    [
        pytest.param({}, "ids", id="missing"),
        pytest.param({"ids": ITEM}, "ids", id="string"),
        pytest.param({"ids": {"id": ITEM}}, "ids", id="map"),
        pytest.param({"ids": [ITEM, ["nested"]]}, "ids[1]", id="element-list"),
        pytest.param({"ids": [ITEM, ""]}, "ids[1]", id="element-empty"),
        pytest.param({"ids": [ITEM, None]}, "ids[1]", id="element-null"),
    ],
)
def test_remove_items_with_malformed_ids_names_them_and_removes_nothing(
    client: Client, params: dict[str, Any], name: str
) -> None:
    log_seq = client.call("stats")["log_seq"]
    assert name in rejected(client, "remove_items", params).message
    assert client.call("stats")["log_seq"] == log_seq
    assert client.call("get_item", {"id": ITEM})["exists"]


# -- reads ------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["get_item", "get_user"])
def test_unknown_ids_are_not_found(client: Client, method: str) -> None:
    with pytest.raises(RpcError) as info:
        client.call(method, {"id": "never-seen-anywhere"})
    assert info.value.code == "not_found"


@pytest.mark.parametrize("method", ["get_item", "get_user"])
@pytest.mark.parametrize(
    "params", [pytest.param({}, id="missing"), pytest.param({"id": ["x"]}, id="list")]
)
def test_reads_without_a_valid_id_are_bad_request(
    client: Client, method: str, params: dict[str, Any]
) -> None:
    assert "id" in rejected(client, method, params).message
