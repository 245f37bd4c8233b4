"""Training: the log folded into weighted pairs, LightFM fitted, artifacts written."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from actors import (
    EventStore,
    LmdbEventStore,
    MemoryEventStore,
    RecordInteraction,
    RemoveItem,
    UpsertItem,
    open_actor_system,
)
from ranker import (
    ModelError,
    TrainingConfig,
    TrainingData,
    current_version,
    fit,
    load_model,
    read_log,
    train,
)

FAST = TrainingConfig(components=4, epochs=3, threads=1, seed=1)

CATALOGUE = [
    UpsertItem(event_id="up1", item="i1", ts=1.0, kind="pro", terms={"city": ("austin",)}),
    UpsertItem(event_id="up2", item="i2", ts=1.0, kind="pro", terms={"city": ("boston",)}),
    UpsertItem(event_id="up3", item="i3", ts=1.0, kind="job", terms={"city": ("austin",)}),
]


def interaction(n: int, type_: str, user: str, item: str, weight: float = 1.0) -> RecordInteraction:
    return RecordInteraction(
        id=f"e{n}", type=type_, user=user, item=item, ts=100.0 + n, weight=weight
    )


INTERACTIONS = [
    interaction(1, "like", "u1", "i1"),
    interaction(2, "view", "u1", "i1"),
    interaction(3, "dismiss", "u1", "i2"),
    interaction(4, "like", "u2", "i2", weight=2.0),
    interaction(5, "share", "u2", "i3"),  # not a standard type: weighs like a view
    interaction(6, "view", "u2", "i2"),
    interaction(7, "hire", "u1", "i3"),
]


async def fill(
    store: EventStore,
    items: Sequence[UpsertItem] = CATALOGUE,
    interactions: Sequence[RecordInteraction] = INTERACTIONS,
    removals: Sequence[RemoveItem] = (),
) -> None:
    with trio.fail_after(10):
        async with open_actor_system(store) as system:
            if items:
                await system.upsert_items(list(items))
            if interactions:
                await system.ingest(list(interactions))
            if removals:
                await system.remove_items(list(removals))


# -- read_log -----------------------------------------------------------------------------


async def test_pair_weights_sum_the_type_weights_of_their_events() -> None:
    store = MemoryEventStore()
    await fill(store)

    data = read_log(store)

    assert data.pairs == pytest.approx(
        {
            ("u1", "i1"): 1.0 + 0.1,
            ("u1", "i2"): -1.0,
            ("u2", "i2"): 2.0 * 1.0 + 0.1,
            ("u2", "i3"): 0.1,
            ("u1", "i3"): 2.0,
        }
    )


async def test_read_log_folds_every_user_and_item() -> None:
    store = MemoryEventStore()
    await fill(store)

    data = read_log(store)

    assert data.events == len(CATALOGUE) + len(INTERACTIONS)
    assert data.last_seq == store.last_seq() == data.events
    assert set(data.users) == {"u1", "u2"}
    assert set(data.items) == {"i1", "i2", "i3"}
    assert data.items["i1"].terms == {"city": ("austin",)}
    assert data.items["i3"].kind == "job"
    assert data.items["i2"].counters == {"dismiss": 1, "like": 1, "view": 1}
    assert data.users["u1"].counters == {"like": 1, "view": 1, "dismiss": 1, "hire": 1}
    # The user's affinity follows the item terms at the time of each event.
    assert data.users["u1"].affinity["city=austin"] > 0
    assert data.users["u1"].affinity["city=boston"] < 0


async def test_read_log_stops_at_until_seq() -> None:
    store = MemoryEventStore()
    await fill(store)
    until = len(CATALOGUE) + 2  # the catalogue, then the first two interactions

    data = read_log(store, until_seq=until)

    assert data.last_seq == until
    assert data.events == until
    assert data.pairs == pytest.approx({("u1", "i1"): 1.1})
    assert set(data.users) == {"u1"}


async def test_read_log_past_the_end_reads_everything() -> None:
    store = MemoryEventStore()
    await fill(store)

    data = read_log(store, until_seq=10_000)

    assert data.last_seq == store.last_seq()


def test_read_log_of_an_empty_store_is_empty() -> None:
    data = read_log(MemoryEventStore())

    assert (data.users, data.items, data.pairs, data.last_seq, data.events) == ({}, {}, {}, 0, 0)


async def test_read_log_reports_progress() -> None:
    store = MemoryEventStore()
    await fill(store)
    messages: list[str] = []

    read_log(store, progress=messages.append)

    assert messages
    assert "10 events" in messages[-1]


# -- fit ------------------------------------------------------------------------------------


def test_fit_without_positive_pairs_is_a_model_error() -> None:
    data = TrainingData(
        users={}, items={}, pairs={("u", "i"): -1.0, ("v", "i"): 0.0}, last_seq=2, events=2
    )

    with pytest.raises(ModelError, match="nothing to learn"):
        fit(data, FAST, version="t")


async def test_fit_learns_the_users_with_positive_pairs_and_the_items() -> None:
    store = MemoryEventStore()
    await fill(store, interactions=[*INTERACTIONS, interaction(8, "dismiss", "u3", "i1")])
    messages: list[str] = []

    model = fit(read_log(store), FAST, version="t", progress=messages.append)

    assert model.version == "t"
    assert model.trained_seq == store.last_seq()
    assert model.knows_user("u1")
    assert model.knows_user("u2")
    assert not model.knows_user("u3")  # only a dismissal: nothing positive to learn from
    assert all(model.knows_item(i) for i in ("i1", "i2", "i3"))
    assert model.facts["pairs"] == 4
    assert sum(m.startswith("epoch ") for m in messages) == FAST.epochs
    assert any(m.startswith("features: ") for m in messages)


async def test_fit_learns_items_known_only_from_interactions() -> None:
    store = MemoryEventStore()
    await fill(store, items=(), interactions=[interaction(1, "like", "u1", "ghost")])

    model = fit(read_log(store), FAST, version="t")

    assert model.knows_item("ghost")


async def test_fit_survives_positive_pairs_on_a_removed_item() -> None:
    store = MemoryEventStore()
    await fill(store, removals=[RemoveItem(event_id="gone", item="i2", ts=500.0)])

    model = fit(read_log(store), FAST, version="t")

    assert model.knows_user("u1")
    assert model.knows_item("i1")


# -- train ----------------------------------------------------------------------------------


def test_train_without_an_event_store_is_a_model_error(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="no event store"):
        train(tmp_path, FAST)
    assert current_version(tmp_path) is None


async def test_train_writes_the_current_model(tmp_path: Path) -> None:
    store = LmdbEventStore(tmp_path / "events")
    try:
        await fill(store)
    finally:
        store.close()
    messages: list[str] = []

    model = train(tmp_path, FAST, progress=messages.append)

    assert current_version(tmp_path) == model.version
    assert model.version.endswith(f"-seq{model.trained_seq}")
    assert model.trained_seq == len(CATALOGUE) + len(INTERACTIONS)
    loaded = load_model(tmp_path)
    assert loaded.version == model.version
    assert dict(loaded.item_vocab) == dict(model.item_vocab)
    assert any("positive pairs" in m for m in messages)
