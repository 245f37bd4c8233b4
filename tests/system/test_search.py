"""``search`` over RPC against the real server: live counters, removals, restarts, bad queries.

The index is updated before an ``ingest``/``upsert_items``/``remove_items``
reply is sent, so the very next ``search`` sees the change; after a clean
restart or a ``kill -9`` the rebuilt index answers every query identically.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest

from matchlight.client import Client
from matchlight.errors import RpcError

if TYPE_CHECKING:
    from tests.system.conftest import ServerProcess

pytestmark = pytest.mark.system

AT_LEAST_50_LIKES = {"range": ["like", 50, None]}
GARDENERS_IN_AUSTIN_WITH_50_LIKES = {
    "all": [
        {"term": ["topic", "gardening"]},
        {"term": ["city", "austin"]},
        AT_LEAST_50_LIKES,
    ]
}
QUERIES: list[dict[str, Any]] = [
    {"filter": {"all": []}, "limit": 1000},
    {"filter": {"term": ["city", "austin"]}, "limit": 5},
    {"filter": AT_LEAST_50_LIKES, "limit": 100, "sort": "like"},
    {"filter": {"range": ["like", None, 3]}, "limit": 7, "sort": ["price", "asc"]},
    {"filter": {"not": {"term": ["topic", "gardening"]}}, "limit": 50},
    {"filter": {"near": ["loc", 30.27, -97.74, 30]}, "limit": 50, "sort": "price"},
    {"filter": GARDENERS_IN_AUSTIN_WITH_50_LIKES, "limit": 10},
]


def catalogue() -> list[dict[str, Any]]:
    cities = {"austin": (30.27, -97.74), "boston": (42.36, -71.06)}
    items = []
    for n in range(60):
        city = "austin" if n % 3 else "boston"
        lat, lon = cities[city]
        items.append(
            {
                "id": f"pro-{n}",
                "kind": "pro",
                "terms": {"topic": ["gardening"] if n % 2 else ["plumbing"], "city": city},
                "numbers": {"price": 10.0 + n, "loc.lat": lat + n / 1000, "loc.lon": lon},
            }
        )
    return items


def likes(item: str, count: int, start: int = 0) -> list[dict[str, Any]]:
    return [
        {"id": f"like-{item}-{n}", "type": "like", "user": f"u{n}", "item": item, "ts": 1e9 + n}
        for n in range(start, start + count)
    ]


def search(client: Client, params: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = client.call("search", params)
    return result


def answers(client: Client) -> list[dict[str, Any]]:
    return [search(client, q) for q in QUERIES]


def test_the_fiftieth_like_matches_in_the_very_next_search(server: ServerProcess) -> None:
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    client.call("ingest", {"events": likes("pro-1", 49)})

    assert search(client, {"filter": AT_LEAST_50_LIKES, "limit": 10}) == {"items": [], "total": 0}

    client.call("ingest", {"events": likes("pro-1", 1, start=49)})

    found = search(client, {"filter": GARDENERS_IN_AUSTIN_WITH_50_LIKES, "limit": 10})
    assert found == {"items": ["pro-1"], "total": 1}


def test_a_removed_item_never_matches_again_even_after_restarts(server: ServerProcess) -> None:
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    client.call("ingest", {"events": likes("pro-1", 60) + likes("pro-2", 55)})
    assert search(client, {"filter": AT_LEAST_50_LIKES, "limit": 10})["items"] == [
        "pro-1",
        "pro-2",
    ]

    assert client.call("remove_items", {"ids": ["pro-1"]})["removed"] == 1
    assert search(client, {"filter": AT_LEAST_50_LIKES, "limit": 10})["items"] == ["pro-2"]
    # Interactions keep counting on the removed item; it still must not match.
    client.call("ingest", {"events": likes("pro-1", 5, start=60)})
    assert "pro-1" not in search(client, {"filter": {"all": []}, "limit": 1000})["items"]

    server.restart()
    client = server.client()
    assert search(client, {"filter": AT_LEAST_50_LIKES, "limit": 10})["items"] == ["pro-2"]
    server.kill9()
    server.start()
    client = server.client()
    assert "pro-1" not in search(client, {"filter": {"all": []}, "limit": 1000})["items"]


@pytest.mark.parametrize("stop", ["sigterm", "kill9"])
def test_every_query_answers_identically_after_a_restart(server: ServerProcess, stop: str) -> None:
    client = server.client()
    client.call("upsert_items", {"items": catalogue()})
    for n in range(0, 60, 4):
        client.call("ingest", {"events": likes(f"pro-{n}", n)})
    client.call("remove_items", {"ids": ["pro-4", "pro-9"]})
    client.call("upsert_items", {"items": [{"id": "pro-8", "active": False}]})
    client.call("upsert_items", {"items": [{"id": "pro-12", "terms": {"city": "boston"}}]})
    before = answers(client)
    assert before[2]["total"] > 0
    assert before[5]["total"] > 0

    if stop == "sigterm":
        server.restart()
    else:
        server.kill9()
        server.start()

    assert answers(server.client()) == before


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"filter": {"term": ["cty", "austin"]}}, "unknown term field 'cty'"),
        ({"filter": {"range": ["city", 1, 2]}}, "unknown numeric field 'city'"),
        ({"filter": {"near": ["loc", 95, 0, 10]}}, "filter.near[1]"),
        ({"filter": {"all": [{"term": ["city"]}]}}, "filter.all[0].term"),
        ({"filter": {"range": ["like", 9, 2]}}, "min 9 is greater than max 2"),
        ({"filter": {"between": []}}, "unknown operator 'between'"),
        ({"filter": {"all": []}, "limit": 0}, "limit"),
        ({"filter": {"all": []}, "limit": 10_001}, "limit"),
        ({"filter": {"all": []}, "sort": "city"}, "cannot sort by 'city'"),
        ({"filter": {"all": []}, "order": "asc"}, "unknown field 'order'"),
        ({"limit": 5}, "missing field 'filter'"),
    ],
)
def test_bad_queries_get_bad_request_naming_the_fault_and_the_server_keeps_serving(
    shared_server: ServerProcess, params: dict[str, Any], message: str
) -> None:
    client = shared_server.client()
    client.call("upsert_items", {"items": catalogue()[:3]})

    with pytest.raises(RpcError) as caught:
        client.call("search", params)

    assert caught.value.code == "bad_request"
    assert message in caught.value.message
    assert search(client, {"filter": {"term": ["city", "austin"]}})["total"] >= 2


def test_search_reports_the_total_beyond_the_limit(shared_server: ServerProcess) -> None:
    client = shared_server.client()
    client.call("upsert_items", {"items": catalogue()})

    result = search(client, {"filter": {"term": ["kind", "pro"]}, "limit": 3})

    assert result == {"items": ["pro-0", "pro-1", "pro-2"], "total": 60}


def test_an_empty_catalogue_answers_everything_with_nothing(server: ServerProcess) -> None:
    client = server.client()

    assert search(client, {"filter": {"all": []}}) == {"items": [], "total": 0}
    # Counters of the standard event types are fields even before any event.
    assert search(client, {"filter": {"range": ["like", 1, None]}}) == {"items": [], "total": 0}
    assert client.call("stats")["index_items"] == 0


def test_stats_report_the_index(shared_server: ServerProcess) -> None:
    client = shared_server.client()
    client.call("upsert_items", {"items": catalogue()})

    stats = client.call("stats")

    assert stats["index_items"] == 60
    assert stats["index_geo_fields"] == 1
    assert stats["index_term_fields"] == 3  # topic, city, kind
