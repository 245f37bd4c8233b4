"""The RankerActor's responses: the decision log, explanations, surfaces and request errors.

As in ``test_actor.py``: a real :class:`ActorSystem` over an in-memory
store, models fitted in-process with one thread and fixed seeds.
"""

from __future__ import annotations

import collections
from pathlib import Path

import pytest

from actors import (
    MemoryEventStore,
    RemoveItem,
    open_actor_system,
)
from index import parse
from ranker import (
    DecisionLog,
    Recommendation,
    RecommendRequest,
    RequestError,
    open_ranker,
    parse_surfaces,
)
from ranker.policy import DEFAULT_BLEND, HEURISTIC_BLEND
from tests.ranker.actor_world import (
    NO_POLL,
    category_of,
    event,
    fitted,
    small_catalogue,
)

# -- the decision log -----------------------------------------------------------------


async def test_every_response_is_logged_once_with_its_decision(tmp_path: Path) -> None:
    decisions = DecisionLog(tmp_path / "d")
    surfaces = parse_surfaces({"surfaces": {"explore": {"exploration": {"share": 0.5, "seed": 1}}}})
    results: list[Recommendation] = []
    requested: list[str] = []
    try:
        async with open_actor_system(MemoryEventStore()) as system:
            await small_catalogue(system)
            async with open_ranker(system, surfaces, decisions=decisions, poll_s=NO_POLL) as actor:
                for n, surface in enumerate(["default", "explore", "unknown", "explore"]):
                    requested.append(surface)
                    results.append(
                        await actor.recommend(RecommendRequest(user=f"u{n}", k=4, surface=surface))
                    )
                await actor.use_model(await fitted(system, "logged"))
                requested.append("default")
                results.append(await actor.recommend(RecommendRequest(user="u9", k=6)))
            # Leaving open_ranker wrote every queued decision.
            records = decisions.read()
            statistics = decisions.statistics()
    finally:
        decisions.close()

    assert statistics.written == statistics.kept == len(results) == 5
    assert [r["request_id"] for r in records] == [r.request_id for r in results]
    for record, result, surface in zip(records, results, requested, strict=True):
        assert record["surface"] == result.surface
        assert record["requested_surface"] == surface
        assert record["items"] == [e["id"] for e in result.items]
        assert record["scores"] == [e["score"] for e in result.items]
        assert len(record["propensities"]) == len(result.items)
        assert all(0 < p <= 1 for p in record["propensities"])
        assert record["model"] == result.model
        assert record["latency_ms"] >= 0
        assert record["source"] == "realtime"
    assert [r["user"] for r in records] == ["u0", "u1", "u2", "u3", "u9"]
    assert records[2]["surface"] == "default"
    assert records[-1]["model"] == "logged"
    assert any(p < 1 for r in records if r["surface"] == "explore" for p in r["propensities"])


STOCHASTIC = {
    "surfaces": {
        "feed": {
            "diversity": {"field": "category", "max_per_value": 2},
            "stochastic": {"temperature": 2.0, "pool": 8, "seed": 4},
        },
        "fixed": {"diversity": {"field": "category", "max_per_value": 2}},
    }
}


async def test_a_stochastic_surface_logs_each_slots_exact_probabilities(tmp_path: Path) -> None:
    decisions = DecisionLog(tmp_path / "d")
    users = [f"u{n}" for n in range(12)]
    try:
        async with open_actor_system(MemoryEventStore()) as system:
            await small_catalogue(system)
            async with open_ranker(
                system, parse_surfaces(STOCHASTIC), decisions=decisions, poll_s=NO_POLL
            ) as actor:
                drawn = [
                    await actor.recommend(RecommendRequest(user=u, k=4, surface="feed"))
                    for u in users
                ]
                # The same request on the same state draws the same slate.
                again = [
                    await actor.recommend(RecommendRequest(user=u, k=4, surface="feed"))
                    for u in users
                ]
                fixed = await actor.recommend(RecommendRequest(user="u0", k=4, surface="fixed"))
                explained = await actor.recommend(
                    RecommendRequest(user="u0", k=4, surface="feed", explain=True)
                )
            records = decisions.read()
    finally:
        decisions.close()

    assert [r.items for r in again] == [r.items for r in drawn]
    assert explained.items[0]["id"] == drawn[0].items[0]["id"]
    # Drawn, not sorted: at a temperature of 2 some slate is out of score order.
    assert any(
        [e["score"] for e in r.items] != sorted((e["score"] for e in r.items), reverse=True)
        for r in drawn
    )
    for result, record in zip(drawn, records, strict=False):
        assert len(result.items) == 4
        # Diversity's cap holds in every draw.
        assert max(collections.Counter(category_of(e["id"]) for e in result.items).values()) <= 2
        marginal, conditional = record["position_propensities"], record["conditional_propensities"]
        assert len(marginal) == len(conditional) == len(record["items"]) == 4
        assert all(0 < p < 1 for p in marginal + conditional)
        # Served at all is at least as likely as served at this slot.
        assert all(s >= p for s, p in zip(record["propensities"], marginal, strict=True))
    fixed_record = records[2 * len(users)]
    assert fixed_record["request_id"] == fixed.request_id
    assert "position_propensities" not in fixed_record
    assert "conditional_propensities" not in fixed_record
    for slot, entry in enumerate(explained.items):
        exploration = entry["reasons"]["exploration"]
        assert exploration["slot"] == "stochastic"
        assert exploration["position_propensity"] == records[-1]["position_propensities"][slot]
        assert (
            exploration["conditional_propensity"] == records[-1]["conditional_propensities"][slot]
        )
        assert exploration["propensity"] == records[-1]["propensities"][slot]


# -- explain --------------------------------------------------------------------------

EXPLAINED = {
    "surfaces": {
        "home": {
            "rules": [
                {
                    "action": "boost",
                    "name": "promote-roofing",
                    "query": {"term": ["category", "roofing"]},
                    "weight": 3.0,
                }
            ],
            "exploration": {"share": 0.3, "seed": 3},
        }
    }
}


@pytest.mark.parametrize("with_model", [False, True], ids=["heuristic", "model"])
async def test_explained_items_name_their_parts_terms_rules_and_slot(with_model: bool) -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await small_catalogue(system)
        await system.ingest(
            [event(5000 + n, "like", "me", f"plumbing-{n:03d}", ts=9000.0) for n in (0, 4)]
        )
        async with open_ranker(system, parse_surfaces(EXPLAINED), poll_s=NO_POLL) as actor:
            if with_model:
                await actor.use_model(await fitted(system, "x"))
            result = await actor.recommend(
                RecommendRequest(user="me", k=10, surface="home", explain=True)
            )

    assert len(result.items) == 10
    # Without a [blend] table: the default mixes (no learned blend with this model).
    weights = (HEURISTIC_BLEND if not with_model else DEFAULT_BLEND).weights()
    parts = {name for name, weight in weights.items() if weight}
    slots: collections.Counter[str] = collections.Counter()
    for entry in result.items:
        reasons = entry["reasons"]
        category = category_of(entry["id"])
        assert set(reasons["parts"]) == parts
        assert reasons["matched"] == (["category=plumbing"] if category == "plumbing" else [])
        assert reasons["rules"] == (["boost promote-roofing +3"] if category == "roofing" else [])
        assert "reciprocal" not in reasons
        exploration = reasons["exploration"]
        slots[exploration["slot"]] += 1
        if exploration["slot"] == "explore":
            assert 0 <= exploration["draw"] <= 1
            assert 0 < exploration["propensity"] <= 1
        else:
            assert exploration == {"slot": "exploit", "propensity": 1.0}
    assert slots == {"exploit": 7, "explore": 3}
    assert any(e["reasons"]["rules"] for e in result.items)
    assert any(e["reasons"]["matched"] for e in result.items)


async def test_items_are_unexplained_unless_asked() -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await small_catalogue(system)
        async with open_ranker(system, poll_s=NO_POLL) as actor:
            result = await actor.recommend(RecommendRequest(user="u1", k=3))

    assert [set(entry) for entry in result.items] == [{"id", "score"}] * 3
    assert result.ranker == "heuristic"
    assert result.model is None


# -- surfaces and errors --------------------------------------------------------------


async def test_an_unknown_surface_is_served_by_the_default_policy() -> None:
    surfaces = parse_surfaces({"surfaces": {"jobs": {"retrieval": {"term": ["kind", "job"]}}}})
    async with open_actor_system(MemoryEventStore()) as system:
        await small_catalogue(system)
        async with open_ranker(system, surfaces, poll_s=NO_POLL) as actor:
            unknown = await actor.recommend(RecommendRequest(user="u1", k=5, surface="nope"))
            default = await actor.recommend(RecommendRequest(user="u1", k=5))
            jobs = await actor.recommend(RecommendRequest(user="u1", k=5, surface="jobs"))

    assert unknown.surface == "default"
    assert [e["id"] for e in unknown.items] == [e["id"] for e in default.items]
    assert len(unknown.items) == 5
    assert jobs.surface == "jobs"
    assert jobs.items == []  # no item has kind job


async def test_a_request_filter_naming_an_unknown_field_is_a_request_error() -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await small_catalogue(system)
        async with open_ranker(system, poll_s=NO_POLL) as actor:
            for query in (
                {"term": ["colour", "red"]},
                {"range": ["price", 1, 10]},
                {"all": [{"term": ["category", "roofing"]}, {"term": ["colour", "red"]}]},
            ):
                with pytest.raises(RequestError, match="filter"):
                    await actor.recommend(RecommendRequest(user="u1", filter=parse(query)))
            fine = await actor.recommend(
                RecommendRequest(user="u1", k=20, filter=parse({"term": ["category", "roofing"]}))
            )

    assert fine.items
    assert {category_of(e["id"]) for e in fine.items} == {"roofing"}


async def test_a_surface_template_naming_an_unknown_field_recommends_nothing() -> None:
    surfaces = parse_surfaces(
        {
            "surfaces": {
                "by-colour": {"retrieval": {"term": ["colour", "$context.colour"]}},
                "cheap": {"retrieval": {"range": ["price", None, 10]}},
                "filtered": {"rules": [{"action": "filter", "query": {"term": ["colour", "red"]}}]},
                "boosted": {"rules": [{"action": "boost", "query": {"term": ["colour", "red"]}}]},
            }
        }
    )
    async with open_actor_system(MemoryEventStore()) as system:
        await small_catalogue(system)
        async with open_ranker(system, surfaces, poll_s=NO_POLL) as actor:
            empty = [
                await actor.recommend(
                    RecommendRequest(user="u1", surface=name, context={"colour": "red"})
                )
                for name in ("by-colour", "cheap", "filtered")
            ]
            boosted = await actor.recommend(
                RecommendRequest(user="u1", k=4, surface="boosted", explain=True)
            )

    for result in empty:
        assert result.items == []
        assert result.matched == result.candidates == 0
    # A rule naming an unknown field is skipped, the surface still serves.
    assert len(boosted.items) == 4
    assert all(e["reasons"]["rules"] == [] for e in boosted.items)


# -- found while writing these tests ---------------------------------------------------


async def test_mmr_with_every_slot_explored_still_recommends() -> None:
    surfaces = parse_surfaces(
        {"surfaces": {"mix": {"diversity": {"mmr": 0.5}, "exploration": {"share": 0.5}}}}
    )
    async with open_actor_system(MemoryEventStore()) as system:
        await small_catalogue(system)
        async with open_ranker(system, surfaces, poll_s=NO_POLL) as actor:
            await actor.use_model(await fitted(system, "mmr"))
            result = await actor.recommend(RecommendRequest(user="u1", k=1, surface="mix"))

    assert len(result.items) == 1


async def test_a_log_with_a_liked_then_removed_item_can_be_fitted_and_served() -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await small_catalogue(system)  # u0 likes plumbing-000
        await system.remove_items([RemoveItem(event_id="rm", item="plumbing-000", ts=2.0)])
        async with open_ranker(system, poll_s=NO_POLL) as actor:
            await actor.use_model(await fitted(system, "after-removal"))
            result = await actor.recommend(RecommendRequest(user="u4", k=60))

    assert result.model == "after-removal"
    assert len(result.items) > 0
    assert "plumbing-000" not in {e["id"] for e in result.items}
