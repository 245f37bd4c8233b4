"""A node's writer (actors.write_path) decides exactly what the single process's actors decide.

The writer keeps only each item's terms and existence (its catalogue), not the
actors; the events it appends must nevertheless be the events the item actors
would have made, since readers fold them into the same state either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from actors import (
    LmdbEventStore,
    MemoryEventStore,
    RecordInteraction,
    RemoveItem,
    UpsertItem,
    open_actor_system,
)
from actors.store import EventStore
from actors.system import ActorSystem
from actors.write_path import WritePath, load_catalogue, open_write_path


def upsert(n: int, item_id: str, **fields: Any) -> UpsertItem:
    return UpsertItem(event_id=f"up-{n}", item=item_id, ts=float(n), **fields)


def like(n: int, item_id: str, user: str = "u1", type_: str = "like") -> RecordInteraction:
    return RecordInteraction(id=f"ev-{n}", type=type_, user=user, item=item_id, ts=float(n))


def remove(n: int, item_id: str) -> RemoveItem:
    return RemoveItem(event_id=f"rm-{n}", item=item_id, ts=float(n))


#: Writes in order: terms that change, removals of items that exist and do not, interactions
#: on known, removed, unknown and inactive items, a custom event type.
Batch = list[UpsertItem] | list[RecordInteraction] | list[RemoveItem]
SCRIPT: list[Batch] = [
    [upsert(1, "a", kind="pro", terms={"city": ("austin",), "topic": ("garden",)})],
    [like(2, "a"), like(3, "b")],
    [upsert(4, "a", terms={"city": ("boston",), "topic": None}, numbers={"price": 3.0})],
    [like(5, "a", "u2"), like(6, "a", "u1", "share")],
    [remove(7, "a"), remove(8, "never-there")],
    [like(9, "a")],
    [upsert(10, "c", terms={"city": ("austin",)}, active=False), upsert(11, "a")],
    [like(12, "c"), like(13, "a", "u3")],
]


async def write(system: ActorSystem | WritePath, batch: Batch) -> None:
    first = batch[0]
    if isinstance(first, UpsertItem):
        await system.upsert_items(cast(list[UpsertItem], batch))
    elif isinstance(first, RemoveItem):
        await system.remove_items(cast(list[RemoveItem], batch))
    else:
        await system.ingest(cast(list[RecordInteraction], batch))


def logged(store: EventStore) -> list[object]:
    return [stored.event for stored in store.read_all(limit=1000)]


async def test_the_writer_appends_the_events_the_item_actors_would_have() -> None:
    actors_store, writer_store = MemoryEventStore(), MemoryEventStore()
    async with open_actor_system(actors_store) as system:
        for batch in SCRIPT:
            await write(system, batch)
    async with open_write_path(writer_store) as path:
        for batch in SCRIPT:
            await write(path, batch)
        assert set(path.catalogue.items) == {"a", "c"}  # "a" upserted again after removal
    assert logged(writer_store) == logged(actors_store)
    # The removal of an item that never existed made no event; the rest did.
    assert len(logged(writer_store)) == sum(len(b) for b in SCRIPT) - 1


async def test_a_restarted_writer_loads_the_catalogue_it_had(tmp_path: Path) -> None:
    with LmdbEventStore(tmp_path / "events") as store:
        async with open_write_path(store) as path:
            for batch in SCRIPT:
                await write(path, batch)
            live = path.catalogue
        # Snapshots as the readers make them (a single process's actors, every 2 events).
        async with open_actor_system(store) as system:
            await system.ingest([like(20, "a"), like(21, "a"), like(22, "c")])
        loaded = load_catalogue(store)
    assert {k: (v.terms, v.exists, v.active) for k, v in loaded.items.items()} == {
        k: (v.terms, v.exists, v.active) for k, v in live.items.items()
    }
    assert loaded.fields == live.fields
    assert loaded.types == live.types
