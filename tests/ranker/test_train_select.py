"""Training chooses its features on the latest slice of the log, and gives identities only
to items with something positive to learn from."""

from __future__ import annotations

import random

import numpy as np
import pytest

from actors import MemoryEventStore, RecordInteraction, UpsertItem
from ranker import TrainingConfig, fit, read_log
from ranker.train_features import common_terms, feature_candidates
from tests.ranker.test_train import fill

CONFIG = TrainingConfig(components=8, epochs=15, threads=1, seed=3)
HOUR = 3600.0


def like(n: int, user: str, item: str, ts: float) -> RecordInteraction:
    return RecordInteraction(id=f"e{n}", type="like", user=user, item=item, ts=ts)


async def test_identities_are_kept_alone_when_the_terms_are_noise() -> None:
    """Users like items of their hidden cluster; a constant kind and random tags say nothing."""
    rng = random.Random(5)
    clusters, per_cluster, users = 4, 30, 60
    items = [
        UpsertItem(
            event_id=f"up{n}",
            item=f"i{n}",
            ts=1.0,
            kind="movie",
            terms={"tag": (rng.choice("abc"),), "colour": (rng.choice("xyz"),)},
        )
        for n in range(clusters * per_cluster)
    ]
    events: list[RecordInteraction] = []
    for _ in range(25):  # every user comes back every step, in random order
        for u in rng.sample(range(users), users):
            cluster = u % clusters
            n = cluster * per_cluster + rng.randrange(per_cluster)
            events.append(like(len(events), f"u{u}", f"i{n}", 1000.0 + len(events) * 60.0))
    store = MemoryEventStore()
    await fill(store, items=items, interactions=events)
    messages: list[str] = []

    model = fit(read_log(store), CONFIG, version="t", progress=messages.append)

    selection = model.facts["selection"]
    scores = {c["name"]: c["hit_at_10"] for c in selection["candidates"]}
    assert set(scores) == {"identity", "identity+terms@0.25", "identity+terms@1"}
    assert model.facts["features"] == "identity", scores
    assert scores["identity"] > scores["identity+terms@1"]
    assert not any(name.startswith(("t:", "kind:")) for name in model.item_vocab)
    assert not any(name.startswith("a:") for name in model.user_vocab)
    assert model.item_term_weight == model.user_term_weight == 1.0
    assert any(m.startswith("features: identity") for m in messages)
    assert any("hit@10" in m and "identity+terms@1" in m for m in messages)


async def test_terms_are_chosen_when_the_held_out_items_are_new_and_terms_carry_the_taste() -> None:
    """New items arrive in waves; each user likes items of one genre from the latest wave."""
    rng = random.Random(9)
    genres, users, waves, per_genre = 4, 40, 10, 4
    items: list[UpsertItem] = []
    events: list[RecordInteraction] = []
    for wave in range(waves):
        start = 1000.0 + wave * 24 * HOUR
        wave_items = {g: [f"w{wave}g{g}n{k}" for k in range(per_genre)] for g in range(genres)}
        for g, ids in wave_items.items():
            items.extend(
                UpsertItem(
                    event_id=f"up-{i}",
                    item=i,
                    ts=start,
                    kind="movie",
                    terms={"genre": (f"g{g}",), "noise": (rng.choice("ab"),)},
                )
                for i in ids
            )
        for u in rng.sample(range(users), users):
            for i in rng.sample(wave_items[u % genres], 3):
                events.append(like(len(events), f"u{u}", i, start + HOUR + len(events)))
    store = MemoryEventStore()
    await fill(store, items=items, interactions=events)

    model = fit(read_log(store), CONFIG, version="t")

    selection = model.facts["selection"]
    scores = {c["name"]: c["hit_at_10"] for c in selection["candidates"]}
    assert model.facts["features"].startswith("identity+terms@"), scores
    assert max(scores.values()) > scores["identity"] + 0.1
    assert "t:genre=g0" in model.item_vocab
    assert "kind:movie" not in model.item_vocab  # on every item: no help in telling them apart
    assert "kind:movie" in model.facts["dropped_terms"]
    # Served as trained: a brand-new item of a user's genre scores above one of another genre.
    user_vector, _ = model.user_representation("u0", {"genre=g0": 1.0})
    mine, _ = model.item_representation("fresh0", "movie", {"genre": ("g0",)})
    other, _ = model.item_representation("fresh1", "movie", {"genre": ("g1",)})
    assert float(user_vector @ mine) > float(user_vector @ other)


async def test_items_without_a_positive_pair_are_their_terms() -> None:
    items = [
        UpsertItem(event_id="up1", item="liked", ts=1.0, kind="pro", terms={"city": ("a",)}),
        UpsertItem(event_id="up2", item="spurned", ts=1.0, kind="pro", terms={"city": ("b",)}),
        UpsertItem(event_id="up3", item="unseen", ts=1.0, kind="job", terms={"city": ("b",)}),
        # Fillers, so that no term but kind:job is on more than half the items.
        UpsertItem(event_id="up4", item="f1", ts=1.0, kind="job", terms={"city": ("c",)}),
        UpsertItem(event_id="up5", item="f2", ts=1.0, kind="job", terms={"city": ("d",)}),
    ]
    events = [
        like(1, "u1", "liked", 10.0),
        RecordInteraction(id="e2", type="dismiss", user="u1", item="spurned", ts=11.0),
        like(3, "u2", "liked", 12.0),
    ]
    store = MemoryEventStore()
    await fill(store, items=items, interactions=events)
    config = TrainingConfig(
        components=4, epochs=2, threads=1, features="identity+terms", term_weights=(1.0,)
    )

    model = fit(read_log(store), config, version="t")

    assert model.knows_item("liked")
    assert not model.knows_item("spurned")
    assert not model.knows_item("unseen")
    assert model.facts["item_identities"] == 1
    # Represented exactly like an item added after training with the same features.
    for item_id, kind in (("spurned", "pro"), ("unseen", "job")):
        vector, bias = model.item_representation(item_id, kind, {"city": ("b",)})
        new_vector, new_bias = model.item_representation("brand-new", kind, {"city": ("b",)})
        np.testing.assert_array_equal(vector, new_vector)
        assert bias == new_bias
        assert np.any(vector)


async def test_too_little_held_out_data_keeps_the_terms_and_says_so() -> None:
    items = [
        UpsertItem(event_id=f"up{n}", item=f"i{n}", ts=1.0, terms={"city": (f"c{n % 3}",)})
        for n in range(6)
    ]
    events = [like(n, f"u{n % 2}", f"i{n}", 10.0 + n) for n in range(6)]
    store = MemoryEventStore()
    await fill(store, items=items, interactions=events)
    messages: list[str] = []

    model = fit(read_log(store), CONFIG, version="t", progress=messages.append)

    assert model.facts["features"] == "identity+terms@1"
    assert model.facts["selection"]["reason"] == "too little held-out data"
    assert any("too little held-out data" in m for m in messages)
    assert "t:city=c0" in model.item_vocab


async def test_pinned_features_fit_one_candidate() -> None:
    store = MemoryEventStore()
    await fill(store)

    identity = fit(read_log(store), TrainingConfig(features="identity", epochs=1), version="a")
    every = fit(read_log(store), TrainingConfig(features="all", epochs=1), version="b")

    assert not any(name.startswith(("t:", "kind:")) for name in identity.item_vocab)
    assert identity.facts["selection"]["reason"] == "only candidate"
    assert {"kind:pro", "t:city=austin"} <= set(every.item_vocab)  # common ones included
    assert every.facts["features"] == "all"


def test_feature_candidates_go_from_simplest_to_most_term_heavy() -> None:
    names = [c.name for c in feature_candidates(TrainingConfig(term_weights=(0.5, 2.0)))]

    assert names == ["identity", "identity+terms@0.5", "identity+terms@2"]
    with pytest.raises(ValueError, match="features"):
        TrainingConfig(features="everything")
    with pytest.raises(ValueError, match="term weights"):
        TrainingConfig(term_weights=())


def test_common_terms_are_those_on_more_than_the_share_of_items() -> None:
    from actors import item

    states = {}
    for n in range(4):
        state = states[f"i{n}"] = item.initial(f"i{n}")
        state.kind = "pro"
        state.terms = {"city": ("a",) if n < 3 else ("b",), "tag": ("x",) if n < 2 else ()}

    common = common_terms(states, [*states, "ghost"], max_share=0.5)

    # 5 items: kind on 4 and city=a on 3 are common; tag=x on 2 is not.
    assert common == {"kind:pro", "t:city=a"}
