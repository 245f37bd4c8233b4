"""Seen items stay excluded whatever the length of a user's history, across a restart.

A user interacts with up to 5,000 distinct items (more than any bounded
"recent" list keeps); every surface that excludes seen items then serves
none of them, and a surface that allows repeats none they dismissed last,
live, after a snapshot round trip and after the system is rebuilt from the log.
"""

from __future__ import annotations

import random
from typing import Any

import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from actors import (
    MemoryEventStore,
    RecordInteraction,
    UpsertItem,
    UserState,
    open_actor_system,
)
from actors.codec import decode_state
from ranker import RecommendRequest, open_ranker, parse_surfaces

NO_POLL = 1e9
#: Items nobody has seen: what a strict surface must serve, all of them (k is larger).
UNSEEN = 200
BATCH = 2000
SURFACES: dict[str, Any] = {
    "surfaces": {
        # Every active item is a candidate, so any excluded item that leaked would show.
        "strict": {"k": 1000, "candidates": 100_000},
        "repeats": {"k": 1000, "candidates": 100_000, "allow_repeats": True},
    }
}
TYPES = ("view", "click", "like", "save", "hire", "dismiss")


def upsert(item_id: str, n: int) -> UpsertItem:
    return UpsertItem(
        event_id=f"up-{item_id}", item=item_id, ts=1.0, kind="pro", terms={"city": (f"c{n % 7}",)}
    )


def history(n_items: int, seed: int) -> tuple[list[RecordInteraction], dict[str, str]]:
    """Interactions of user ``u`` with ``n_items`` distinct items (some more than once) in a
    random order, and each item's latest type."""
    rng = random.Random(seed)
    order = [f"i{k}" for k in range(n_items)]
    rng.shuffle(order)
    # Revisit a tenth of the items later, some to dismiss them, some to take a dismissal back.
    order += rng.sample(order, n_items // 10)
    events, latest = [], {}
    for n, item_id in enumerate(order):
        type_ = rng.choice(TYPES)
        latest[item_id] = type_
        events.append(
            RecordInteraction(id=f"ev-{n}", type=type_, user="u", item=item_id, ts=1000.0 + n)
        )
    return events, latest


async def served(actor: Any, surface: str) -> set[str]:
    result = await actor.recommend(RecommendRequest(user="u", surface=surface))
    got = [entry["id"] for entry in result.items]
    assert len(got) == len(set(got))
    return set(got)


async def check(actor: Any, catalogue: set[str], latest: dict[str, str]) -> None:
    strict = await served(actor, "strict")
    assert not strict & latest.keys(), sorted(strict & latest.keys())[:10]
    # Nothing else is left out: every unseen item is served (k exceeds their number).
    assert strict == catalogue - latest.keys()

    dismissed = {i for i, t in latest.items() if t == "dismiss"}
    repeats = await served(actor, "repeats")
    assert not repeats & dismissed, sorted(repeats & dismissed)[:10]
    assert len(repeats) == min(1000, len(catalogue) - len(dismissed))


async def run(n_items: int, seed: int) -> None:
    catalogue = {f"i{k}" for k in range(n_items + UNSEEN)}
    events, latest = history(n_items, seed)
    surfaces = parse_surfaces(SURFACES)
    store = MemoryEventStore()
    async with (
        open_actor_system(store) as system,
        open_ranker(system, surfaces, poll_s=NO_POLL) as actor,
    ):
        items = sorted(catalogue, key=lambda i: int(i[1:]))
        for at in range(0, len(items), BATCH):
            await system.upsert_items([upsert(i, int(i[1:])) for i in items[at : at + BATCH]])
        # Ask between batches too: the cached exclusion is brought up to date, not rebuilt.
        for at in range(0, len(events), BATCH):
            await system.ingest(events[at : at + BATCH])
            await served(actor, "strict")
        await check(actor, catalogue, latest)

    # The shutdown snapshotted the user: the snapshot alone holds the whole history.
    snapshot, tail = store.load_entity("user", "u")
    if events:
        assert snapshot is not None
        assert not tail
        state = decode_state(snapshot.data)
        assert isinstance(state, UserState)
        assert state.seen.keys() == latest.keys()
        assert state.dismissed == {i for i, t in latest.items() if t == "dismiss"}

    # Rebuilt from the log (index) and the snapshot (user): the same exclusions.
    async with (
        open_actor_system(store) as system,
        open_ranker(system, surfaces, poll_s=NO_POLL) as actor,
    ):
        await check(actor, catalogue, latest)
        # New items and interactions after the restart are excluded as well.
        fresh = [f"i{n_items + UNSEEN + k}" for k in range(3)]
        await system.upsert_items([upsert(i, 0) for i in fresh])
        await system.ingest(
            [
                RecordInteraction(id=f"late-{i}", type="dismiss", user="u", item=i, ts=1e6)
                for i in fresh[:2]
            ]
        )
        latest.update(dict.fromkeys(fresh[:2], "dismiss"))
        await check(actor, catalogue | set(fresh), latest)


@settings(
    max_examples=6,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    derandomize=True,
)
@given(n_items=st.integers(0, 5000), seed=st.integers(0, 2**32 - 1))
@example(n_items=5000, seed=1)
@example(n_items=1001, seed=2)
def test_no_recommendation_holds_an_item_the_user_interacted_with_however_long_their_history(
    n_items: int, seed: int
) -> None:
    trio.run(run, n_items, seed)
