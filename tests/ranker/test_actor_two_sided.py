"""The RankerActor on two-sided surfaces: suppliers' willingness, and the job's own terms.

As in ``test_actor.py``: a real :class:`ActorSystem` over an in-memory
store, models fitted in-process with one thread and fixed seeds.
"""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from actors import (
    ActorSystem,
    MemoryEventStore,
    RecordInteraction,
    UpsertItem,
    open_actor_system,
)
from ranker import (
    Recommendation,
    RecommendRequest,
    RequestError,
    open_ranker,
    parse_surfaces,
)
from tests.ranker.actor_world import (
    NO_POLL,
    event,
    fitted,
    upsert,
)

# -- two-sided matching ---------------------------------------------------------------

MARKETPLACE = {
    "surfaces": {
        "pro_match": {
            "k": 5,
            "retrieval": {"term": ["kind", "pro"]},
            "reciprocal": {"job": "job", "prior": 0.5},
        }
    }
}
KEEN = ("pro-keen-1", "pro-keen-2")  # accepted every roofing job
PICKY = ("pro-picky-1", "pro-picky-2")  # declined every roofing job, accepted painting ones
NEW = "pro-new"  # no history at all
AWAY = "pro-away"  # keen, but unavailable
FILLERS = ("pro-f1", "pro-f2", "pro-f3")


async def marketplace(system: ActorSystem) -> None:
    jobs = [upsert(f"job-roof-{n}", "roofing", kind="job") for n in range(1, 5)]
    jobs += [upsert(f"job-paint-{n}", "painting", kind="job") for n in range(1, 5)]
    pros = [upsert(p, "roofing", kind="pro") for p in (*KEEN, *PICKY, NEW, AWAY, *FILLERS)]
    await system.upsert_items(jobs + pros)
    events: list[RecordInteraction] = []

    def add(type_: str, user_id: str, item_id: str) -> None:
        events.append(event(len(events), type_, user_id, item_id))

    for n in range(1, 4):
        for pro in (*KEEN, AWAY):
            add("accept", pro, f"job-roof-{n}")
        for pro in PICKY:
            add("decline", pro, f"job-roof-{n}")
            add("accept", pro, f"job-paint-{n}")
    # Consumers like the picky pros most: willingness, not popularity, must push them down.
    likes = {PICKY[0]: 6, PICKY[1]: 5, AWAY: 6, KEEN[0]: 3, KEEN[1]: 2, NEW: 3}
    likes |= dict.fromkeys(FILLERS, 1)
    for pro, count in likes.items():
        for c in range(count):
            add("like", f"consumer-{c}", pro)
    await system.ingest(events)
    await system.upsert_items([upsert(AWAY, "roofing", kind="pro", active=False)])


@pytest.mark.parametrize("with_model", [False, True], ids=["heuristic", "model"])
async def test_pro_match_ranks_willing_pros_first_and_unwilling_ones_last(
    with_model: bool,
) -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await marketplace(system)
        async with open_ranker(system, parse_surfaces(MARKETPLACE), poll_s=NO_POLL) as actor:
            if with_model:
                await actor.use_model(await fitted(system, "m"))
            request = RecommendRequest(
                user="consumer-new",
                surface="pro_match",
                context={"job": "job-roof-1"},
                explain=True,
            )
            top = await actor.recommend(request)
            everyone = await actor.recommend(attrs.evolve(request, k=20))

    assert top.surface == "pro_match"
    top_ids = [e["id"] for e in top.items]
    ranked = [e["id"] for e in everyone.items]
    assert len(top_ids) == 5
    assert set(top_ids[:2]) == set(KEEN)
    assert not set(top_ids) & set(PICKY)
    assert set(ranked) == {*KEEN, *PICKY, NEW, *FILLERS}  # never the unavailable pro
    assert set(ranked[-2:]) == set(PICKY)
    assert (
        max(ranked.index(p) for p in KEEN) < ranked.index(NEW) < min(ranked.index(p) for p in PICKY)
    )

    reasons = {e["id"]: e["reasons"]["reciprocal"] for e in everyone.items}
    for pro in KEEN:
        assert reasons[pro]["willingness"] > 0.9
    for pro in PICKY:
        assert reasons[pro]["willingness"] < 0.1
    assert reasons[NEW]["willingness"] == 0.5
    assert all(0 < r["interest"] <= 1 for r in reasons.values())
    if not with_model:
        # The heuristic scores by popularity: the most liked (picky) pro interests most.
        assert reasons[PICKY[0]]["interest"] == max(r["interest"] for r in reasons.values())


async def test_pro_match_without_the_job_in_context_is_a_request_error() -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await marketplace(system)
        async with open_ranker(system, parse_surfaces(MARKETPLACE), poll_s=NO_POLL) as actor:
            for context in ({}, {"job": ""}, {"job": 7}, {"city": "austin"}):
                with pytest.raises(RequestError, match=r"context\.job"):
                    await actor.recommend(
                        RecommendRequest(user="c", surface="pro_match", context=context)
                    )
            assert actor.statistics().requests == 0


# -- the job's own terms lead ---------------------------------------------------------

PAINTER = "pro-painter"  # the job's category, no history, no likes
PLUMBERS = tuple(f"pro-plumber-{n}" for n in range(6))  # liked, never answered a job


def described(item_id: str, kind: str, category: str, city: str = "austin") -> UpsertItem:
    return UpsertItem(
        event_id=f"up-{item_id}",
        item=item_id,
        ts=1.0,
        kind=kind,
        terms={"category": (category,), "city": (city,)},
    )


def job_led_surfaces(**reciprocal: float) -> Any:
    return parse_surfaces(
        {
            "surfaces": {
                "pro_match": {
                    "k": 3,
                    "retrieval": {"term": ["kind", "pro"]},
                    "reciprocal": {"job": "job", **reciprocal},
                }
            }
        }
    )


async def painter_and_popular_plumbers(system: ActorSystem) -> None:
    await system.upsert_items(
        [
            described("job-paint", "job", "painting"),
            described("job-roof", "job", "roofing"),
            described(PAINTER, "pro", "painting"),
            *(described(p, "pro", "plumbing") for p in PLUMBERS),
        ]
    )
    likes = [
        event(n * 10 + c, "like", f"consumer-{c}", pro)
        for n, pro in enumerate(PLUMBERS)
        for c in range(10 - n)
    ]
    await system.ingest(likes)


async def pros_for(
    system: ActorSystem, surfaces: Any, job: str, k: int, *, with_model: bool = False
) -> Recommendation:
    async with open_ranker(system, surfaces, poll_s=NO_POLL) as actor:
        if with_model:
            await actor.use_model(await fitted(system, "m"))
        return await actor.recommend(
            RecommendRequest(
                user="consumer-new", surface="pro_match", k=k, context={"job": job}, explain=True
            )
        )


@pytest.mark.parametrize("with_model", [False, True], ids=["heuristic", "model"])
async def test_a_pro_of_the_jobs_category_without_history_outranks_popular_pros_of_another(
    with_model: bool,
) -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await painter_and_popular_plumbers(system)
        result = await pros_for(system, job_led_surfaces(), "job-paint", 3, with_model=with_model)
        unled = await pros_for(
            system, job_led_surfaces(fit=0.0), "job-paint", 3, with_model=with_model
        )

    ranked = [e["id"] for e in result.items]
    assert ranked[0] == PAINTER
    assert result.matched == 1 + len(PLUMBERS)  # one painter is fewer than k: every pro
    reasons = {e["id"]: e["reasons"]["reciprocal"] for e in result.items}
    assert reasons[PAINTER]["fit"] == 1.0
    assert all(reasons[p]["fit"] == 0.0 for p in ranked[1:])
    assert {r["willingness"] for r in reasons.values()} == {0.5}
    # Without the job's terms leading, popularity alone ranks the painter out.
    assert PAINTER not in [e["id"] for e in unled.items]
    assert all("fit" not in e["reasons"]["reciprocal"] for e in unled.items)


async def test_retrieval_keeps_the_pros_carrying_the_jobs_terms_while_k_do() -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await painter_and_popular_plumbers(system)
        one = await pros_for(system, job_led_surfaces(), "job-paint", 1)
        unled = await pros_for(system, job_led_surfaces(fit=0.0), "job-paint", 1)

    assert [e["id"] for e in one.items] == [PAINTER]
    assert one.matched == 1
    assert unled.matched == 1 + len(PLUMBERS)


async def test_retrieval_falls_back_to_every_pro_when_none_carries_the_jobs_terms() -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await painter_and_popular_plumbers(system)
        result = await pros_for(system, job_led_surfaces(), "job-roof", 3)

    assert result.matched == 1 + len(PLUMBERS)
    assert [e["id"] for e in result.items] == list(PLUMBERS[:3])  # the most liked
    # Nothing in the job's terms tells these pros apart: they all fit as well.
    assert {e["reasons"]["reciprocal"]["fit"] for e in result.items} == {1.0}
