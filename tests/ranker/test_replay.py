"""Replaying the log ranks a past decision again exactly (:mod:`ranker.replay`).

A real :class:`ActorSystem` and :class:`RankerActor` over an in-memory store
serve requests (heuristic, then a model, then another model, on surfaces with
diversity and seeded exploration, and a two-sided one); every decision they
record is ranked again by one :class:`Replay` moving forward through the log.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from actors import EventStore, MemoryEventStore, open_actor_system
from index import parse
from ranker import (
    DecisionLog,
    RecommendRequest,
    ReplayError,
    Surfaces,
    keep_config,
    load_surfaces,
    open_ranker,
    save_model,
)
from ranker.replay import Replay, caveats, compare, rebuild, request_of
from tests.ranker.actor_world import CATEGORIES, NO_POLL, event, fitted, small_catalogue, upsert

CONFIG = """
[surfaces.home]
k = 6
[surfaces.home.diversity]
field = "category"
max_per_value = 2
[surfaces.home.exploration]
share = 0.5
seed = 7

[surfaces.match]
k = 4
retrieval = { term = ["kind", "service"] }
[surfaces.match.reciprocal]
job = "job"
"""


async def serve_decisions(data: Path, store: EventStore) -> list[dict[str, Any]]:
    """Requests served before, between and after two model swaps, with events between."""
    config = data / "surfaces.toml"
    config.write_text(CONFIG)
    surfaces = load_surfaces(config)
    keep_config(data, surfaces, config)
    requests = [
        RecommendRequest(user="u1", surface="home"),
        RecommendRequest(user="u2", surface="home", k=3, context={"city": "x"}),
        RecommendRequest(user="u3", filter=parse({"not": {"term": ["category", "roofing"]}}), k=5),
        RecommendRequest(user="u4", surface="match", context={"job": "job-1"}),
    ]
    with DecisionLog(data / "decisions") as log:
        async with open_actor_system(store) as system:
            await small_catalogue(system)
            await system.upsert_items([upsert("job-1", "roofing", kind="job")])
            await system.ingest(
                [event(900 + n, "accept", f"roofing-{n:03d}", "job-1") for n in (1, 5)]
            )
            async with open_ranker(
                system, surfaces, data_dir=data, decisions=log, poll_s=NO_POLL
            ) as ranker:
                for request in requests:
                    await ranker.recommend(request)
                for n, version in enumerate(("20260101T000000Z-seq1", "20260101T000000Z-seq2")):
                    save_model(data, await fitted(system, version, seed=n))
                    assert await ranker.reload_model()
                    for request in requests:
                        await ranker.recommend(request)
                    await system.ingest([event(950 + n, "like", "u1", "painting-002")])
        return log.read(limit=100)


async def test_every_decision_replays_identically_in_one_pass(tmp_path: Path) -> None:
    store = MemoryEventStore()
    records = await serve_decisions(tmp_path, store)
    assert len(records) == 12
    assert {r["model"] for r in records} == {None, "20260101T000000Z-seq1", "20260101T000000Z-seq2"}
    assert any(p < 1.0 for r in records for p in r["propensities"])  # exploration drew
    # Requests between acknowledged writes find every commit applied: nothing to caveat.
    assert not any(caveats(r) for r in records)

    replay = Replay(store)
    for record in sorted(records, key=lambda r: r["log_seq"]):
        result = rebuild(tmp_path, record, replay)
        assert compare(record, result).identical, record
        assert all("reasons" in item for item in result.items)


async def test_a_changed_record_is_reported_position_by_position(tmp_path: Path) -> None:
    store = MemoryEventStore()
    record = (await serve_decisions(tmp_path, store))[0]
    result = rebuild(tmp_path, record, Replay(store))
    swapped = {**record, "items": [record["items"][1], record["items"][0], *record["items"][2:]]}

    difference = compare(swapped, result)

    assert [p[0] for p in difference.positions] == [1, 2]
    assert difference.positions[0][1] == record["items"][1]
    assert difference.positions[0][3] == record["items"][0]


async def test_a_replay_does_not_go_back_or_past_the_log(tmp_path: Path) -> None:
    store = MemoryEventStore()
    await serve_decisions(tmp_path, store)
    replay = Replay(store)
    replay.advance_to(10)
    with pytest.raises(ReplayError, match="past 5"):
        replay.advance_to(5)
    with pytest.raises(ReplayError, match="the log ends"):
        replay.advance_to(store.last_seq() + 1)


def test_a_record_from_before_replay_fields_is_refused(tmp_path: Path) -> None:
    record = {"request_id": "r1", "user": "u", "requested_surface": "default", "items": []}
    with pytest.raises(ReplayError, match="without log_seq, now, config"):
        rebuild(tmp_path, record, Replay(MemoryEventStore()))


def test_the_request_is_rebuilt_from_the_record() -> None:
    record = {
        "user": "u",
        "requested_surface": "home",
        "k": 3,
        "context": {"city": "austin"},
        "filter": {"all": [{"term": ["city", "austin"]}, {"range": ["rate", None, 50.0]}]},
    }
    request = request_of(record)
    assert (request.user, request.surface, request.k, request.explain) == ("u", "home", 3, True)
    assert request.context == {"city": "austin"}
    assert request.filter is not None


async def test_popular_tiers_are_rebuilt_at_the_position_they_were_computed(
    tmp_path: Path,
) -> None:
    """Past 4,096 items a broad request looks among the popular tiers first; the ranker
    keeps them a few seconds, so a decision may use tiers older than its own position."""
    store = MemoryEventStore()
    keep_config(tmp_path, Surfaces(), None)
    items = [upsert(f"item-{n}", CATEGORIES[n % 4]) for n in range(4500)]
    with DecisionLog(tmp_path / "decisions") as log:
        async with open_actor_system(store) as system:
            await system.upsert_items(items)
            await system.ingest(
                [event(n, "like", f"u{n % 7}", f"item-{(n * 37) % 4500}") for n in range(300)]
            )
            async with open_ranker(system, decisions=log, poll_s=NO_POLL) as ranker:
                ranker._popular.max_age_s = 1e9  # the tiers stay as first computed
                await ranker.recommend(RecommendRequest(user="u1", k=20))
                await system.ingest(
                    [event(1000 + n, "click", f"u{n % 5}", f"item-{n % 90}") for n in range(200)]
                )
                await ranker.recommend(RecommendRequest(user="u2", k=20))
        records = log.read()
    assert [r.get("tiers_seq") for r in records] == [records[0]["log_seq"]] * 2
    assert records[1]["log_seq"] > records[0]["log_seq"]
    # Tiers of the second decision's position would not do.
    late = Replay(store)
    late.advance_to(records[1]["log_seq"])
    assert late.popular_tiers(late.seq) != Replay(store).popular_tiers(records[0]["log_seq"])

    # One pass: the second decision's tiers lie behind the first one's position.
    replay = Replay(store, tiers_at=[r["tiers_seq"] for r in records])
    for record in reversed(records):
        assert compare(record, rebuild(tmp_path, record, Replay(store))).identical
    for record in records:
        assert compare(record, rebuild(tmp_path, record, replay)).identical


def test_a_record_taken_while_a_commit_was_applied_says_its_replay_may_differ() -> None:
    assert caveats({"log_seq": 7}) == []
    notes = caveats({"log_seq": 7, "applying": True, "moved": True})
    assert "lagged log position 7" in notes[0]
    assert "two-sided" in notes[1]
