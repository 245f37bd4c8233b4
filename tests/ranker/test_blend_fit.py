"""Learning the blend from the log: the parts that predict what users engage with next win.

Two generated logs with known structure: in one, users go through fixed
sequences of items (co-occurrence predicts the next one, popularity does
not); in the other, users pick items by a skewed popularity, independently
(popularity predicts, co-occurrence is noise).
"""

from __future__ import annotations

import math
import random

import pytest

from actors import MemoryEventStore, RecordInteraction, UpsertItem, open_actor_system
from ranker import TrainingConfig, fit, read_log
from ranker.blend_fit import _count_targets, learn_blend
from ranker.model import UNCLIPPED, learned_blend
from ranker.policy import BLEND_PARTS

ITEMS = 60


async def write_log(store: MemoryEventStore, choices: list[list[int]]) -> float:
    """Each user likes their items in order, a minute apart; returns the time 80% in."""
    async with open_actor_system(store) as system:
        await system.upsert_items(
            [
                UpsertItem(event_id=f"up{i}", item=f"i{i}", ts=0.0, terms={"g": (f"g{i % 3}",)})
                for i in range(ITEMS)
            ]
        )
        commands: list[RecordInteraction] = []
        ts = 1_000.0
        for u, items in enumerate(choices):
            for i in items:
                ts += 60.0
                commands.append(
                    RecordInteraction(
                        id=f"e{len(commands)}", type="like", user=f"u{u}", item=f"i{i}", ts=ts
                    )
                )
        await system.ingest(commands)
    return 1_000.0 + 0.8 * (ts - 1_000.0)


async def test_sequences_teach_cooccurrence() -> None:
    rng = random.Random(1)
    chains = [list(range(start, start + 4)) for start in range(0, ITEMS, 4)]
    store = MemoryEventStore()
    cut = await write_log(store, [rng.choice(chains) for _ in range(600)])

    learned = learn_blend(store, cut_ts=cut, model=None, seed=0)

    assert learned is not None
    blend = learned.blend
    assert blend.cooccurrence == 1.0  # the strongest part (weights are scaled to a top of 1)
    assert blend.cooccurrence > 2 * blend.popularity
    checks = learned.facts["validation_hit_at_10"]
    assert checks["learned"] >= checks["popularity alone"]
    # A chain's next item is in the top 10 once the user started it; a chain's first item
    # (a quarter of the samples) only by chance.
    assert checks["learned"] >= 0.75


async def test_a_skewed_catalogue_teaches_popularity() -> None:
    rng = random.Random(2)
    weights = [1.0 / (i + 1) ** 1.5 for i in range(ITEMS)]
    store = MemoryEventStore()
    choices = [list(dict.fromkeys(rng.choices(range(ITEMS), weights, k=3))) for _ in range(600)]
    cut = await write_log(store, choices)

    learned = learn_blend(store, cut_ts=cut, model=None, seed=0)

    assert learned is not None
    blend = learned.blend
    assert max(blend.popularity, blend.trending) == 1.0
    assert blend.cooccurrence < max(blend.popularity, blend.trending)
    assert set(blend.weights()) == set(BLEND_PARTS)
    assert blend.model == 0.0  # no model given: its part is not learned


async def test_too_few_engagements_after_the_cut_learn_nothing() -> None:
    store = MemoryEventStore()
    cut = await write_log(store, [[1, 2, 3]] * 10)

    assert learn_blend(store, cut_ts=cut, model=None) is None


@pytest.mark.parametrize("cut", [float("inf")])
async def test_nothing_after_the_cut_learns_nothing(cut: float) -> None:
    store = MemoryEventStore()
    await write_log(store, [[1, 2, 3]] * 100)

    assert learn_blend(store, cut_ts=cut, model=None) is None


async def test_train_writes_the_learned_blend_and_the_parts_it_was_learned_on() -> None:
    rng = random.Random(4)
    chains = [list(range(start, start + 4)) for start in range(0, ITEMS, 4)]
    store = MemoryEventStore()
    await write_log(store, [rng.choice(chains) for _ in range(600)])

    model = fit(read_log(store), TrainingConfig(epochs=2, holdout=0.2), version="t", store=store)

    served = learned_blend(model)
    assert served is not None
    assert served.weights() == model.facts["blend"]
    assert model.facts["blend_parts"] == UNCLIPPED
    assert served.clip_z == math.inf  # served on plain z-scores, as it was learned


async def test_only_engagements_with_items_new_to_the_user_are_counted_for_sampling() -> None:
    store = MemoryEventStore()
    # Users 1 and 2 come back to their items: every second pass is a repeat.
    cut = await write_log(store, [[5, 6, 7, 8], [0, 1, 2, 0, 1, 2], [3, 4, 3, 4]])

    # 14 likes a minute apart from 1,060 s; the cut falls before the 12th. After it:
    # user 2's first like of 4, then their repeats of 3 and 4.
    assert cut == pytest.approx(1_000.0 + 0.8 * 14 * 60.0)
    assert _count_targets(store, cut) == 1
    assert _count_targets(store, 0.0) == 9  # every first like, none of the 5 repeats
