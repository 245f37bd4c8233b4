"""The catalogue's distinct numeric fields are bounded: memory follows what is stored.

Every item ``numbers`` name and every event type is a numeric field of the index;
``SystemConfig.max_numeric_fields`` bounds how many distinct ones exist at once,
counting writes still in flight, so no request can add an unbounded number of them.
"""

from __future__ import annotations

import itertools

import pytest
import trio

from actors import (
    FieldLimitError,
    MemoryEventStore,
    RecordInteraction,
    RemoveItem,
    SystemConfig,
    UpsertItem,
    open_actor_system,
)
from actors.item_index import COUNTER_FIELDS

STANDARD = len(COUNTER_FIELDS)
_ids = itertools.count()


def upsert(item_id: str, **numbers: float) -> UpsertItem:
    return UpsertItem(event_id=f"up-{next(_ids)}", item=item_id, ts=1.0, numbers=numbers)


def event(type_: str, item_id: str = "a") -> RecordInteraction:
    return RecordInteraction(id=f"ev-{next(_ids)}", type=type_, user="u", item=item_id, ts=2.0)


def config(extra: int) -> SystemConfig:
    return SystemConfig(max_numeric_fields=STANDARD + extra)


async def test_new_fields_fit_up_to_the_limit_and_the_next_is_refused_by_path() -> None:
    async with open_actor_system(MemoryEventStore(), config(3)) as system:
        await system.upsert_items([upsert("a", price=1.0, rating=4.0)])
        await system.ingest([event("share")])  # a new event type is a counter field

        with pytest.raises(FieldLimitError) as caught:
            await system.upsert_items([upsert("b", price=2.0), upsert("c", price=3.0, size=9)])

        message = str(caught.value)
        assert message.startswith("items[1].numbers.size: 'size' would be a new numeric field")
        assert f"has {STANDARD + 3} of the {STANDARD + 3} allowed" in message
        assert (await system.get_item("b")).exists is False  # nothing of the batch was written
        assert sorted(system.index.numeric_field_names() - set(COUNTER_FIELDS)) == [
            "price",
            "rating",
            "share",
        ]
        # Known names are always fine.
        await system.upsert_items([upsert("b", price=2.0, rating=1.0)])
        await system.ingest([event("share", "b")])


async def test_a_new_event_type_beyond_the_limit_is_refused_at_its_path() -> None:
    async with open_actor_system(MemoryEventStore(), config(1)) as system:
        await system.upsert_items([upsert("a")])
        await system.ingest([event("like"), event("share")])

        with pytest.raises(FieldLimitError, match=r"^events\[2\]\.type: 'tip'"):
            await system.ingest([event("like"), event("share"), event("tip")])


async def test_a_field_no_item_has_any_more_frees_its_place() -> None:
    async with open_actor_system(MemoryEventStore(), config(1)) as system:
        await system.upsert_items([upsert("a", price=1.0)])
        with pytest.raises(FieldLimitError):
            await system.upsert_items([upsert("a", weight=1.0)])

        await system.remove_items([RemoveItem(event_id="rm", item="a", ts=3.0)])
        await system.upsert_items([upsert("a", weight=1.0)])

        assert "weight" in system.index.numeric_field_names()


async def test_concurrent_writes_cannot_overshoot_the_limit() -> None:
    async with open_actor_system(MemoryEventStore(), config(2)) as system:
        await system.upsert_items([upsert("a")])
        outcomes: list[str] = []

        async def write(item_id: str, first: str, second: str) -> None:
            try:
                await system.upsert_items([upsert(item_id, **{first: 1.0, second: 2.0})])
                outcomes.append("ok")
            except FieldLimitError:
                outcomes.append("refused")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(write, "b", "x1", "x2")
            nursery.start_soon(write, "c", "y1", "y2")

        assert sorted(outcomes) == ["ok", "refused"]
        assert len(system.index.numeric_field_names()) == STANDARD + 2
