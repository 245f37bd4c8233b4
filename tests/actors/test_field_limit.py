"""The catalogue's distinct numeric fields are bounded: memory follows what is stored.

Every item ``numbers`` name and every event type is a numeric field of the index;
``SystemConfig.max_numeric_fields`` bounds how many distinct ones exist at once,
counting writes still in flight, so no request can add an unbounded number of them.
A node's writer worker (:mod:`actors.write_path`) counts them as the single process's
index does: every test runs against both.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable, Set
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import attrs
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
from actors.system import ActorSystem
from actors.write_path import WritePath, open_write_path

STANDARD = len(COUNTER_FIELDS)
_ids = itertools.count()


def upsert(item_id: str, **numbers: float) -> UpsertItem:
    return UpsertItem(event_id=f"up-{next(_ids)}", item=item_id, ts=1.0, numbers=numbers)


def event(type_: str, item_id: str = "a") -> RecordInteraction:
    return RecordInteraction(id=f"ev-{next(_ids)}", type=type_, user="u", item=item_id, ts=2.0)


def config(extra: int) -> SystemConfig:
    return SystemConfig(max_numeric_fields=STANDARD + extra)


@attrs.frozen
class Node:
    """A write path under test, and what it counts as the catalogue's numeric fields."""

    writes: ActorSystem | WritePath

    def fields(self) -> Set[str]:
        if isinstance(self.writes, WritePath):
            return self.writes.catalogue.fields
        return self.writes.index.numeric_field_names()

    async def exists(self, item_id: str) -> bool:
        if isinstance(self.writes, WritePath):
            return item_id in self.writes.catalogue.items
        return (await self.writes.get_item(item_id)).exists


OpenNode = Callable[[SystemConfig], AbstractAsyncContextManager[Node]]


@pytest.fixture(params=["one process", "writer worker"])
def open_node(request: pytest.FixtureRequest) -> OpenNode:
    """The single process's actor system, or a node's writer: both count fields alike."""

    @asynccontextmanager
    async def open_(cfg: SystemConfig) -> AsyncIterator[Node]:
        opener = open_actor_system if request.param == "one process" else open_write_path
        async with opener(MemoryEventStore(), cfg) as writes:
            yield Node(writes)

    return open_


async def test_new_fields_fit_up_to_the_limit_and_the_next_is_refused_by_path(
    open_node: OpenNode,
) -> None:
    async with open_node(config(3)) as node:
        system = node.writes
        await system.upsert_items([upsert("a", price=1.0, rating=4.0)])
        await system.ingest([event("share")])  # a new event type is a counter field

        with pytest.raises(FieldLimitError) as caught:
            await system.upsert_items([upsert("b", price=2.0), upsert("c", price=3.0, size=9)])

        message = str(caught.value)
        assert message.startswith("items[1].numbers.size: 'size' would be a new numeric field")
        assert f"has {STANDARD + 3} of the {STANDARD + 3} allowed" in message
        assert await node.exists("b") is False  # nothing of the batch was written
        assert sorted(node.fields() - set(COUNTER_FIELDS)) == [
            "price",
            "rating",
            "share",
        ]
        # Known names are always fine.
        await system.upsert_items([upsert("b", price=2.0, rating=1.0)])
        await system.ingest([event("share", "b")])


async def test_a_new_event_type_beyond_the_limit_is_refused_at_its_path(
    open_node: OpenNode,
) -> None:
    async with open_node(config(1)) as node:
        system = node.writes
        await system.upsert_items([upsert("a")])
        await system.ingest([event("like"), event("share")])

        with pytest.raises(FieldLimitError, match=r"^events\[2\]\.type: 'tip'"):
            await system.ingest([event("like"), event("share"), event("tip")])


async def test_a_field_no_item_has_any_more_frees_its_place(open_node: OpenNode) -> None:
    async with open_node(config(1)) as node:
        system = node.writes
        await system.upsert_items([upsert("a", price=1.0)])
        with pytest.raises(FieldLimitError):
            await system.upsert_items([upsert("a", weight=1.0)])

        await system.remove_items([RemoveItem(event_id="rm", item="a", ts=3.0)])
        await system.upsert_items([upsert("a", weight=1.0)])

        assert "weight" in node.fields()


async def test_concurrent_writes_cannot_overshoot_the_limit(open_node: OpenNode) -> None:
    async with open_node(config(2)) as node:
        system = node.writes
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
        assert len(node.fields()) == STANDARD + 2
