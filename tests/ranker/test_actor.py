"""The RankerActor over a live actor system: invariants, fold-in and hot swap.

Every test drives a real :class:`ActorSystem` over an in-memory store and an
:func:`open_ranker` over it; models are fitted in-process on the log with one
thread and fixed seeds, so rankings are deterministic. Two-sided surfaces are
in ``test_actor_two_sided.py``; the decision log, explanations, surfaces and
errors in ``test_actor_responses.py``.
"""

from __future__ import annotations

import collections
import gc
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    ActorSystem,
    MemoryEventStore,
    RecordInteraction,
    RemoveItem,
    UpsertItem,
    open_actor_system,
)
from ranker import (
    RankerActor,
    RecommendRequest,
    TrainingConfig,
    fit,
    open_ranker,
    parse_surfaces,
    read_log,
    save_model,
)
from tests.ranker.actor_world import (
    CATEGORIES,
    NO_POLL,
    catalogue_id,
    category_of,
    event,
    fitted,
    small_catalogue,
    upsert,
)

# -- invariants over random catalogues, histories and requests ------------------------

PROPERTY_SURFACES: dict[str, Any] = {
    "surfaces": {
        # Few candidates: retrieval picks the newest, personal and popular ones.
        "diverse": {
            "candidates": 6,
            "diversity": {"field": "category", "max_per_value": 2, "mmr": 0.3},
        },
        "explore": {"exploration": {"share": 0.3, "seed": 7}},
        "repeats": {"allow_repeats": True},
    }
}
SURFACE_NAMES = ("default", "diverse", "explore", "repeats", "no-such-surface")
TYPES = ("view", "click", "like", "save", "hire", "dismiss")
USERS = ("u0", "u1", "u2", "u3")


@attrs.frozen(kw_only=True)
class CatalogueItem:
    kind: str
    categories: tuple[str, ...]
    #: What happens to it after the first half of the history.
    fate: str  # "active" | "inactive" | "removed" | "inactive-from-start"


@attrs.frozen(kw_only=True)
class Scenario:
    items: list[CatalogueItem]
    #: (user, item position, type, ts)
    history: list[tuple[str, int, str, float]]
    requests: list[tuple[str, int, str]]
    #: None: no model; "early": trained before the catalogue changes; "late": on the whole log.
    model: str | None


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    items = draw(
        st.lists(
            st.builds(
                CatalogueItem,
                kind=st.sampled_from(["pro", "job", "service"]),
                categories=st.lists(
                    st.sampled_from(CATEGORIES), min_size=1, max_size=2, unique=True
                ).map(tuple),
                fate=st.sampled_from(
                    ["active", "active", "inactive", "removed", "inactive-from-start"]
                ),
            ),
            min_size=3,
            max_size=25,
        )
    )
    history = draw(
        st.lists(
            st.tuples(
                st.sampled_from(USERS),
                st.integers(0, len(items) - 1),
                st.sampled_from(TYPES),
                st.sampled_from([1000.0, 2000.0, 50_000.0, 900_000.0]),
            ),
            min_size=4,
            max_size=50,
        )
    )
    requests = draw(
        st.lists(
            st.tuples(
                st.sampled_from([*USERS, "fresh"]),
                st.integers(1, 20),
                st.sampled_from(SURFACE_NAMES),
            ),
            min_size=1,
            max_size=8,
        )
    )
    return Scenario(
        items=items,
        history=history,
        requests=requests,
        model=draw(st.sampled_from([None, "early", "late"])),
    )


async def run_scenario(scenario: Scenario) -> None:
    ids = [f"{item.kind}-{n}" for n, item in enumerate(scenario.items)]
    fates = dict(zip(ids, (item.fate for item in scenario.items), strict=True))
    events = [
        event(n, type_, user_id, ids[at], ts)
        for n, (user_id, at, type_, ts) in enumerate(scenario.history)
    ]
    half = len(events) // 2
    seen: dict[str, dict[str, str]] = collections.defaultdict(dict)
    for user_id, at, type_, _ in scenario.history:
        seen[user_id].pop(ids[at], None)
        seen[user_id][ids[at]] = type_  # the latest type last, like UserState.seen
    surfaces = parse_surfaces(PROPERTY_SURFACES)

    async with (
        open_actor_system(MemoryEventStore()) as system,
        open_ranker(system, surfaces, poll_s=NO_POLL) as actor,
    ):
        await system.upsert_items(
            [
                upsert(
                    item_id,
                    item.categories,
                    kind=item.kind,
                    active=False if item.fate == "inactive-from-start" else None,
                )
                for item_id, item in zip(ids, scenario.items, strict=True)
            ]
        )
        if events[:half]:
            await system.ingest(events[:half])
        version = None

        async def train() -> str | None:
            data = read_log(system.store)
            if not any(w > 0 for w in data.pairs.values()):
                return None  # nothing to learn from: the heuristic ranker serves
            await actor.use_model(
                fit(data, TrainingConfig(epochs=2, threads=1, seed=0), version="h")
            )
            return "h"

        if scenario.model == "early":  # items change after the model learnt them
            version = await train()
        removed = [i for i, fate in fates.items() if fate == "removed"]
        paused = [i for i, fate in fates.items() if fate == "inactive"]
        if removed:
            await system.remove_items(
                [RemoveItem(event_id=f"rm-{i}", item=i, ts=2.0) for i in removed]
            )
        if paused:
            await system.upsert_items(
                [UpsertItem(event_id=f"pause-{i}", item=i, ts=2.0, active=False) for i in paused]
            )
        # Interactions after the catalogue changes, on removed and paused items too.
        if events[half:]:
            await system.ingest(events[half:])
        if scenario.model == "late":
            version = await train()

        serving = {i for i, fate in fates.items() if fate == "active"}
        for user_id, k, surface in scenario.requests:
            result = await actor.recommend(
                RecommendRequest(user=user_id, k=k, surface=surface, explain=True)
            )
            got = [entry["id"] for entry in result.items]
            assert len(got) == len(set(got)), got
            assert len(got) <= k
            assert set(got) <= serving, set(got) - serving
            interacted = seen.get(user_id, {})
            if surfaces.get(surface).allow_repeats:
                dismissed = {i for i, t in interacted.items() if t == "dismiss"}
                assert not set(got) & dismissed
            else:
                assert not set(got) & set(interacted)
            assert result.model == version
            assert result.surface == (surface if surface in surfaces.policies else "default")


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenario=scenarios())
def test_recommend_never_serves_duplicates_seen_inactive_or_removed_items_nor_more_than_k(
    scenario: Scenario,
) -> None:
    trio.run(run_scenario, scenario)


# -- fold-in: live state moves the very next response ---------------------------------


async def sticky_catalogue(system: ActorSystem) -> None:
    """400 items in 4 categories; 80 users who each like 8 items of their one category."""
    await system.upsert_items([upsert(f"{c}-{n:03d}", c) for c in CATEGORIES for n in range(100)])
    events: list[RecordInteraction] = []
    for u in range(80):
        category = CATEGORIES[u % 4]
        for j in range(8):
            n = (u * 37 + j * 13) % 100  # spread over the category, no repeats per user
            events.append(event(len(events), "like", f"u{u}", f"{category}-{n:03d}"))
    await system.ingest(events)


async def likes_of_a_newcomer(
    system: ActorSystem, actor: RankerActor
) -> tuple[list[str], list[str]]:
    """A user without events, then after liking three plumbing items: their top 10 ids."""
    before = await actor.recommend(RecommendRequest(user="newcomer", k=10))
    await system.ingest(
        [
            event(10_000 + n, "like", "newcomer", f"plumbing-{n * 31:03d}", ts=5000.0 + n)
            for n in range(3)
        ]
    )
    after = await actor.recommend(RecommendRequest(user="newcomer", k=10))
    assert before.model == after.model  # nothing was retrained in between
    liked = {f"plumbing-{n * 31:03d}" for n in range(3)}
    assert not liked & {entry["id"] for entry in after.items}
    return [e["id"] for e in before.items], [e["id"] for e in after.items]


async def test_a_newcomers_likes_fold_into_the_model_on_the_very_next_request() -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await sticky_catalogue(system)
        async with open_ranker(system, poll_s=NO_POLL) as actor:
            await actor.use_model(await fitted(system, "fold", epochs=10))
            before, after = await likes_of_a_newcomer(system, actor)

    # Without features the newcomer is scored by item biases alone, which here favour one
    # category (not plumbing); the likes alone turn the list to plumbing.
    assert sum(category_of(i) == "plumbing" for i in before) <= 3, before
    assert sum(category_of(i) == "plumbing" for i in after) >= 7, after


async def test_a_newcomers_likes_move_the_heuristic_ranking_on_the_very_next_request() -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await sticky_catalogue(system)
        async with open_ranker(system, poll_s=NO_POLL) as actor:
            before, after = await likes_of_a_newcomer(system, actor)
            assert actor.model is None

    assert len({category_of(i) for i in before}) >= 2, before
    assert sum(category_of(i) == "plumbing" for i in before) < 7, before
    assert sum(category_of(i) == "plumbing" for i in after) >= 7, after


#: The default surface scored by the model alone (a pinned blend).
MODEL_ONLY = parse_surfaces({"surfaces": {"default": {"blend": {"model": 1.0}}}})


async def test_an_item_whose_terms_change_under_a_model_is_scored_from_its_new_terms() -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await sticky_catalogue(system)
        async with open_ranker(system, MODEL_ONLY, poll_s=NO_POLL) as actor:
            await actor.use_model(await fitted(system, "terms", epochs=10))
            # Added after training: only its terms represent it. It starts as a painter.
            await system.upsert_items([upsert("newpro", "painting")])
            await system.ingest(
                [event(20_000 + n, "like", "fan", f"plumbing-{n * 7:03d}") for n in range(4)]
            )
            request = RecommendRequest(user="fan", k=20)
            assert "newpro" not in {e["id"] for e in (await actor.recommend(request)).items}

            # It changes trade (a fresh event id: upsert() would repeat the first one's).
            await system.upsert_items(
                [
                    UpsertItem(
                        event_id="retrade", item="newpro", ts=2.0, terms={"category": ("plumbing",)}
                    )
                ]
            )

            assert "newpro" in {e["id"] for e in (await actor.recommend(request)).items}


# -- hot swap -------------------------------------------------------------------------


async def test_a_probe_says_whether_an_item_was_among_the_candidates() -> None:
    # 60 items, 5 candidates: retrieval picks, it does not score the catalogue whole.
    surfaces = parse_surfaces({"surfaces": {"default": {"candidates": 5}}})
    async with open_actor_system(MemoryEventStore()) as system:
        await small_catalogue(system)
        async with open_ranker(system, surfaces, poll_s=NO_POLL) as actor:
            plain = await actor.recommend(RecommendRequest(user="u0", k=3))
            probed = {
                item: await actor.recommend(RecommendRequest(user="u0", k=3, probe=item))
                for item in [catalogue_id(n) for n in range(60)] + ["nowhere"]
            }
            liked = {e.item for e in (await system.get_user("u0")).recent}

    assert "retrieved" not in plain.view()
    retrieved = {item for item, got in probed.items() if got.view()["retrieved"]}
    assert len(retrieved) == plain.candidates == 5
    assert {e["id"] for e in plain.items} <= retrieved
    assert not retrieved & (liked | {"nowhere"})  # seen items are never candidates
    # Probing changes nothing served.
    assert all(got.items == plain.items for got in probed.values())


async def test_a_new_model_swaps_in_while_requests_run_and_none_fails(tmp_path: Path) -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await small_catalogue(system)
        save_model(tmp_path, await fitted(system, "v1"))
        model2 = await fitted(system, "v2", seed=1)
        async with open_ranker(system, data_dir=tmp_path, poll_s=NO_POLL) as actor:
            assert actor.model is not None
            assert actor.model.version == "v1"
            answered = 0
            halfway, swapped = trio.Event(), trio.Event()
            seen: list[list[tuple[bool, str | None]]] = [[] for _ in range(4)]

            async def client(n: int) -> None:
                nonlocal answered
                for i in range(200):
                    if i == 150:
                        await swapped.wait()  # at least 50 requests per client after the swap
                    after_swap = swapped.is_set()
                    result = await actor.recommend(RecommendRequest(user=f"u{(n + i) % 14}", k=5))
                    assert result.items
                    seen[n].append((after_swap, result.model))
                    answered += 1
                    if answered == 200:
                        halfway.set()

            async def swapper() -> None:
                await halfway.wait()
                await trio.to_thread.run_sync(save_model, tmp_path, model2)
                assert await actor.reload_model()
                swapped.set()

            async with trio.open_nursery() as nursery:
                for n in range(4):
                    nursery.start_soon(client, n)
                nursery.start_soon(swapper)

            statistics = actor.statistics()

    assert answered == 800
    versions = [model for responses in seen for _, model in responses]
    assert versions.count("v1") >= 200
    assert versions.count("v2") >= 200
    assert set(versions) == {"v1", "v2"}
    for responses in seen:
        models = [model for _, model in responses]
        # Once a client saw the new model it never sees the old one again.
        assert "v2" in models
        assert set(models[models.index("v2") :]) == {"v2"}, models
        assert all(model == "v2" for after_swap, model in responses if after_swap)
    assert statistics.model == "v2"
    assert statistics.model_swaps == 2
    assert statistics.model_failures == 0
    assert statistics.requests == 800


def write_corrupt(tmp_path: Path, version: str, files: dict[str, bytes]) -> None:
    where = tmp_path / "models" / version
    where.mkdir(parents=True)
    for name, content in files.items():
        (where / name).write_bytes(content)
    (tmp_path / "models" / "CURRENT").write_text(version + "\n")


def corrupted(how: str, meta: bytes, arrays: bytes) -> dict[str, bytes]:
    """An artifact's files spoiled ``how``, from a good artifact's ``meta.json`` and arrays."""
    if how == "garbage":
        return {"meta.json": b"\x00garbage\xff", "model.npz": b"not an npz"}
    if how == "empty":
        return {}
    if how == "truncated-npz":  # a partial copy
        return {"meta.json": meta, "model.npz": arrays[: len(arrays) // 2]}
    assert how == "meta-not-an-object"
    return {"meta.json": b"[1, 2, 3]", "model.npz": arrays}


async def reload_outcome(actor: RankerActor) -> bool | str:
    """What reload_model returned, or the exception it let escape (it should never)."""
    try:
        return await actor.reload_model()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        gc.collect()  # a file left open by a failed load warns in this test, not a later one


@pytest.mark.parametrize("how", ["garbage", "empty", "truncated-npz", "meta-not-an-object"])
async def test_a_corrupt_artifact_is_skipped_and_the_old_model_keeps_serving(
    tmp_path: Path, how: str
) -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await small_catalogue(system)
        good = save_model(tmp_path, await fitted(system, "v1"))
        async with open_ranker(system, data_dir=tmp_path, poll_s=NO_POLL) as actor:
            files = corrupted(
                how, (good / "meta.json").read_bytes(), (good / "model.npz").read_bytes()
            )
            write_corrupt(tmp_path, "v2-broken", files)

            assert await reload_outcome(actor) is False
            assert await reload_outcome(actor) is False  # a failed version is not tried again
            result = await actor.recommend(RecommendRequest(user="u1", k=5))
            statistics = actor.statistics()
            assert result.model == "v1"
            assert result.items
            assert statistics.model == "v1"
            assert statistics.model_failures == 1

            # A newer version is picked up again.
            save_model(tmp_path, await fitted(system, "v3"))
            assert await actor.reload_model()
            assert (await actor.recommend(RecommendRequest(user="u1", k=5))).model == "v3"
            assert actor.statistics().model_failures == 1
