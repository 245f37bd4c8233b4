"""The ``stats`` result (matchlight.server.statistics): its keys, order and values per component."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import attrs
import pytest

from actors.runtime import RuntimeStatistics
from actors.store import StoreStatistics
from actors.system import SystemStatistics
from actors.writer import WriterStatistics
from index.inverted import IndexStatistics
from legacy_adapter.feed import FeedStatistics
from legacy_adapter.router import RouterStatistics
from matchlight.server.methods import Methods
from matchlight.server.rpc import RpcCounters
from ranker.actor import RankerStatistics

SYSTEM = SystemStatistics(
    store=StoreStatistics(
        last_seq=11,
        commits=3,
        events_committed=9,
        map_size=1 << 20,
        resizes=2,
        corrupt_snapshots=1,
        corrupt_events=4,
    ),
    writer=WriterStatistics(commits=3, events=10, batches=7, largest_group_events=5),
    items=RuntimeStatistics(
        kind="item", active=1, activations=2, passivations=3, restarts=4, envelopes=5, messages=6
    ),
    users=RuntimeStatistics(
        kind="user", active=7, activations=8, passivations=9, restarts=10, envelopes=0, messages=0
    ),
    index=IndexStatistics(
        items=21, ids=22, term_fields=23, postings=24, numeric_fields=25, geo_fields=26
    ),
)
RANKER = RankerStatistics(
    requests=31,
    model="m1",
    model_swaps=32,
    model_failures=33,
    decisions_written=34,
    decisions_kept=35,
    decisions_lost=36,
)
ROUTER = RouterStatistics(
    served={"realtime": 41, "legacy": 42, "fallback": 43, "interleaved": 48},
    fallbacks=0,
    shadows=44,
    shadows_skipped=45,
    comparisons_kept=46,
    comparisons_lost=47,
)
FEED = FeedStatistics(snapshot="snap-1", entries=51, loads=0, last_report=None, corrupt_entries=52)
RPC = RpcCounters(
    connections_open=61,
    connections_total=62,
    requests=63,
    notifications=64,
    request_errors=65,
    protocol_errors=66,
    connections_refused=67,
    connections_timed_out=68,
    overloaded=69,
    unauthorized=70,
    forbidden=71,
)

BASE = {
    "version": "9.9",
    "log_seq": 11,
    "store_map_bytes": 1 << 20,
    "store_resizes": 2,
    "corrupt_snapshots": 1,
    "corrupt_events": 4,
    "commits": 3,
    "events_committed": 10,
    "batches_committed": 7,
    "commit_events_mean": 3.33,
    "commit_events_max": 5,
    "commit_batches_mean": 2.33,
    "item_actors_active": 1,
    "item_actors_activations": 2,
    "item_actors_passivations": 3,
    "item_actors_restarts": 4,
    "user_actors_active": 7,
    "user_actors_activations": 8,
    "user_actors_passivations": 9,
    "user_actors_restarts": 10,
    "index_items": 21,
    "index_ids": 22,
    "index_term_fields": 23,
    "index_postings": 24,
    "index_numeric_fields": 25,
    "index_geo_fields": 26,
}
MIGRATION = {
    "migration": {"home": {"mode": "shadow"}},
    "served_realtime": 41,
    "served_legacy": 42,
    "served_fallback": 43,
    "served_interleaved": 48,
    "shadows": 44,
    "shadows_skipped": 45,
    "comparisons_kept": 46,
    "comparisons_lost": 47,
}
FEED_KEYS = {"feed_snapshot": "snap-1", "feed_entries": 51, "feed_corrupt_entries": 52}
TAIL = {
    "recommend_requests": 31,
    "model": "m1",
    "model_swaps": 32,
    "model_failures": 33,
    "decisions_written": 34,
    "decisions_kept": 35,
    "decisions_lost": 36,
    "connections_open": 61,
    "connections_total": 62,
    "requests": 63,
    "notifications": 64,
    "request_errors": 65,
    "protocol_errors": 66,
    "connections_refused": 67,
    "connections_timed_out": 68,
    "overloaded": 69,
    "unauthorized": 70,
    "forbidden": 71,
}


def methods(router: Any) -> Methods:
    system: Any = SimpleNamespace(statistics=lambda: SYSTEM)
    ranker: Any = SimpleNamespace(statistics=lambda: RANKER)
    return Methods(system, ranker, router=router, rpc=RPC, version="9.9", started=0.0)


@pytest.mark.parametrize(
    ("router", "expected"),
    [
        pytest.param(None, {**BASE, **TAIL}, id="no-router"),
        pytest.param(
            SimpleNamespace(
                statistics=lambda: ROUTER, states=lambda: MIGRATION["migration"], feed=None
            ),
            {**BASE, **MIGRATION, **TAIL},
            id="router",
        ),
        pytest.param(
            SimpleNamespace(
                statistics=lambda: ROUTER,
                states=lambda: MIGRATION["migration"],
                feed=SimpleNamespace(statistics=lambda: FEED),
            ),
            {**BASE, **MIGRATION, **FEED_KEYS, **TAIL},
            id="router-and-feed",
        ),
    ],
)
async def test_stats_flattens_every_component_in_the_contracts_order(
    router: Any, expected: dict[str, Any]
) -> None:
    result = await methods(router).stats([])
    assert list(result)[:2] == ["version", "uptime_s"]
    uptime = result.pop("uptime_s")
    assert isinstance(uptime, float)
    assert uptime > 0
    assert list(result.items()) == list(expected.items())


async def test_no_commits_means_zero_means() -> None:
    empty = WriterStatistics(commits=0, events=0, batches=0, largest_group_events=0)
    system: Any = SimpleNamespace(statistics=lambda: attrs.evolve(SYSTEM, writer=empty))
    ranker: Any = SimpleNamespace(statistics=lambda: RANKER)
    result = await Methods(system, ranker, rpc=RpcCounters(), version="v", started=0.0).stats([])
    assert (result["commit_events_mean"], result["commit_batches_mean"]) == (0.0, 0.0)
