"""A small world the RankerActor tests share: items, interactions, fitted models, a catalogue."""

from __future__ import annotations

from collections.abc import Sequence

import trio

from actors import ActorSystem, RecordInteraction, UpsertItem
from ranker import Model, TrainingConfig, fit, read_log

#: The background model watcher never wakes up during a test: reloads are explicit.
NO_POLL = 1e9
CATEGORIES = ("plumbing", "roofing", "painting", "electrical")


def upsert(
    item_id: str,
    category: str | Sequence[str],
    *,
    kind: str = "service",
    active: bool | None = None,
) -> UpsertItem:
    categories = (category,) if isinstance(category, str) else tuple(category)
    return UpsertItem(
        event_id=f"up-{item_id}-{active}",
        item=item_id,
        ts=1.0,
        kind=kind,
        terms={"category": categories},
        active=active,
    )


def event(
    n: int, type_: str, user_id: str, item_id: str, ts: float | None = None
) -> RecordInteraction:
    return RecordInteraction(
        id=f"ev-{n}", type=type_, user=user_id, item=item_id, ts=1000.0 + n if ts is None else ts
    )


def category_of(item_id: str) -> str:
    return item_id.split("-")[0]


async def fitted(system: ActorSystem, version: str, *, epochs: int = 2, seed: int = 0) -> Model:
    """A model fitted on everything in the system's log (on a worker thread)."""
    config = TrainingConfig(epochs=epochs, threads=1, seed=seed)
    return await trio.to_thread.run_sync(
        lambda: fit(read_log(system.store), config, version=version)
    )


def catalogue_id(n: int) -> str:
    """Item ``n`` of the small catalogue: its category is ``CATEGORIES[n % 4]``."""
    return f"{CATEGORIES[n % 4]}-{n:03d}"


async def small_catalogue(system: ActorSystem) -> None:
    """60 items in 4 categories; 12 users who each like items of their one category."""
    await system.upsert_items([upsert(catalogue_id(n), CATEGORIES[n % 4]) for n in range(60)])
    events: list[RecordInteraction] = []
    for u in range(12):
        for j in range(2 + u % 5):
            n = 4 * ((u + 3 * j) % 15) + u % 4
            events.append(event(len(events), "like", f"u{u}", catalogue_id(n)))
    await system.ingest(events)
