"""The item index as a projection: kept current by the item actors, equal to a rebuild.

Writes go through a real :class:`ActorSystem` over LMDB; the index the item
actors maintained is compared with :func:`rebuild_index` over the reopened
store (and over the store while still open), field by field and query by query.
"""

from __future__ import annotations

import gc
import itertools
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    ActorSystem,
    LmdbEventStore,
    MemoryEventStore,
    RecordInteraction,
    RemoveItem,
    RuntimeConfig,
    StoreError,
    SystemConfig,
    UpsertItem,
    open_actor_system,
)
from actors.cooccurrence import load_cooccurrence
from actors.item_index import COUNTER_FIELDS, ItemSignals, rebuild_index
from actors.store import EventStore
from actors.write_path import load_catalogue
from index import Index, QueryError, Sort, parse

ITEMS = [f"i{n}" for n in range(6)]
USERS = ["u1", "u2"]
TYPES = ["like", "view", "share"]  # "share" is not a standard type
CITIES = ["austin", "boston", "chicago"]

QUERIES: list[dict[str, Any]] = [
    {"all": []},
    {"term": ["city", "austin"]},
    {"term": ["kind", "pro"]},
    {"not": {"term": ["kind", "job"]}},
    {"range": ["like", 2, None]},
    {"range": ["like", None, 0]},
    {"range": ["price", 10, 50]},
    {"any": [{"term": ["city", "boston"]}, {"range": ["view", 1, None]}]},
    {"near": ["loc", 30.0, -97.0, 150]},
]
SORTS = [None, Sort("like"), Sort("price", descending=False), Sort("share")]

_ids = itertools.count()


def _event_id() -> str:
    return f"e{next(_ids)}"


@st.composite
def upsert(draw: st.DrawFn) -> UpsertItem:
    numbers: dict[str, float | None] = {}
    if draw(st.booleans()):
        numbers["price"] = draw(st.none() | st.sampled_from([5.0, 10.0, 20.0, 50.0, 99.0]))
    if draw(st.booleans()):
        lat = draw(st.floats(min_value=29.0, max_value=31.0))
        numbers.update({"loc.lat": lat, "loc.lon": draw(st.floats(-98.0, -96.0))})
    return UpsertItem(
        event_id=_event_id(),
        item=draw(st.sampled_from(ITEMS)),
        ts=1.0,
        kind=draw(st.none() | st.sampled_from(["pro", "job"])),
        terms=draw(
            st.none()
            | st.fixed_dictionaries(
                {"city": st.none() | st.lists(st.sampled_from(CITIES), max_size=2).map(tuple)}
            )
        ),
        numbers=numbers or None,
        active=draw(st.none() | st.booleans()),
    )


@st.composite
def interaction(draw: st.DrawFn) -> RecordInteraction:
    return RecordInteraction(
        id=_event_id(),
        type=draw(st.sampled_from(TYPES)),
        user=draw(st.sampled_from(USERS)),
        item=draw(st.sampled_from([*ITEMS, "never-upserted"])),
        ts=draw(st.floats(min_value=1.0, max_value=1e6)),
    )


@st.composite
def removal(draw: st.DrawFn) -> RemoveItem:
    return RemoveItem(event_id=_event_id(), item=draw(st.sampled_from(ITEMS)), ts=1.0)


commands = st.lists(
    st.lists(upsert() | interaction() | removal(), min_size=1, max_size=6), max_size=12
)


async def _write(system: ActorSystem, batch: Sequence[Any]) -> None:
    """Write one batch the way the RPC methods do: one kind of command per call."""
    for kind, group in itertools.groupby(batch, key=type):
        cmds = list(group)
        if kind is UpsertItem:
            await system.upsert_items(cmds)
        elif kind is RemoveItem:
            await system.remove_items(cmds)
        else:
            await system.ingest(cmds)


def outcome(index: Index, query: dict[str, Any], sort: Sort | None) -> object:
    try:
        result = index.search(parse(query), limit=4, sort=sort)
    except QueryError as exc:
        return ("error", str(exc))
    return (result.ids, result.total)


def assert_same_index(live: Index, rebuilt: Index) -> None:
    assert len(live) == len(rebuilt)
    for item_id in [*ITEMS, "never-upserted"]:
        assert live.doc_of(item_id) == rebuilt.doc_of(item_id), item_id
    assert live.postings() == rebuilt.postings()
    assert live.statistics() == rebuilt.statistics()
    for query in QUERIES:
        for sort in SORTS:
            assert outcome(live, query, sort) == outcome(rebuilt, query, sort), (query, sort)


def assert_same_signals(live: ItemSignals, rebuilt: ItemSignals, index: Index) -> None:
    """Popularity at any time and last interactions agree (landmarks may differ)."""
    docs = np.arange(index.statistics().ids, dtype=np.uint32)
    assert rebuilt.clock == live.clock
    now = live.clock + 3600.0
    np.testing.assert_allclose(rebuilt.popularity(docs, now), live.popularity(docs, now), rtol=1e-9)
    np.testing.assert_array_equal(rebuilt.last_interaction(docs), live.last_interaction(docs))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=commands, snapshot_every=st.sampled_from([1, 3, 1000]))
def test_index_kept_by_the_actors_equals_the_index_rebuilt_from_the_store(
    batches: list[list[Any]], snapshot_every: int
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        config = SystemConfig(runtime=RuntimeConfig(snapshot_every=snapshot_every))
        store = LmdbEventStore(Path(tmp) / "db")

        async def run() -> tuple[Index, ItemSignals]:
            async with open_actor_system(store, config) as system:
                for batch in batches:
                    await _write(system, batch)
                # Rebuilding while the system runs (tails after the snapshots) agrees too.
                signals = ItemSignals()
                assert_same_index(system.index, rebuild_index(store, signals))
                assert_same_signals(system.signals, signals, system.index)
                return system.index, system.signals

        live, live_signals = trio.run(run)
        store.close()
        reopened = LmdbEventStore(Path(tmp) / "db")
        try:
            signals = ItemSignals()
            assert_same_index(live, rebuild_index(reopened, signals))
            assert_same_signals(live_signals, signals, live)
        finally:
            reopened.close()


async def test_an_acknowledged_like_is_searchable_by_the_very_next_query() -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await system.upsert_items(
            [
                UpsertItem(
                    event_id="up", item="pro-1", ts=1.0, kind="pro", terms={"city": ("austin",)}
                )
            ]
        )
        fifty_likes = parse({"all": [{"term": ["city", "austin"]}, {"range": ["like", 50, None]}]})
        for n in range(50):
            assert system.search(fifty_likes, limit=10).total == 0
            await system.ingest(
                [RecordInteraction(id=f"like-{n}", type="like", user=f"u{n}", item="pro-1", ts=n)]
            )
        assert system.search(fifty_likes, limit=10).ids == ["pro-1"]


async def test_removed_and_deactivated_items_leave_the_index_at_once() -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await system.upsert_items(
            [
                UpsertItem(event_id="a", item="gone", ts=1.0, kind="pro"),
                UpsertItem(event_id="b", item="paused", ts=1.0, kind="pro"),
                UpsertItem(event_id="c", item="kept", ts=1.0, kind="pro"),
            ]
        )
        await system.remove_items([RemoveItem(event_id="d", item="gone", ts=2.0)])
        await system.upsert_items([UpsertItem(event_id="e", item="paused", ts=2.0, active=False)])

        result = system.search(parse({"term": ["kind", "pro"]}), limit=10)

        assert result.ids == ["kept"]
        assert result.total == 1


async def test_interactions_on_unknown_items_reserve_ids_but_are_not_searchable() -> None:
    async with open_actor_system(MemoryEventStore()) as system:
        await system.ingest([RecordInteraction(id="x", type="like", user="u", item="ghost", ts=1)])
        await system.upsert_items([UpsertItem(event_id="y", item="real", ts=1.0)])

        assert system.index.doc_of("ghost") == 0
        assert system.index.doc_of("real") == 1
        assert system.search(parse({"all": []}), limit=10).ids == ["real"]


def test_standard_interaction_types_are_counter_fields_of_an_empty_index() -> None:
    result = rebuild_index(MemoryEventStore()).search(parse({"range": ["hire", 0, 0]}), limit=1)

    assert result.total == 0
    assert set(COUNTER_FIELDS) >= {"like", "view", "save", "hire", "dismiss"}


@pytest.mark.parametrize("snapshot_every", [1, 1000])
def test_rebuild_reads_snapshots_and_replays_only_their_tails(
    tmp_path: Path, snapshot_every: int
) -> None:
    """Whether state comes from snapshots or from the log, the rebuilt index is the same."""
    store = LmdbEventStore(tmp_path / "db")
    config = SystemConfig(runtime=RuntimeConfig(snapshot_every=snapshot_every))

    async def run() -> Index:
        async with open_actor_system(store, config) as system:
            await system.upsert_items(
                [
                    UpsertItem(event_id=f"u{n}", item=f"i{n}", ts=1.0, terms={"n": (str(n),)})
                    for n in range(50)
                ]
            )
            await system.ingest(
                [
                    RecordInteraction(id=f"l{n}", type="like", user="u", item=f"i{n % 7}", ts=n)
                    for n in range(200)
                ]
            )
            return system.index

    live = trio.run(run)
    rebuilt = rebuild_index(store)
    store.close()

    assert rebuilt.postings() == live.postings()
    top = parse({"range": ["like", 1, None]})
    assert rebuilt.search(top, limit=10, sort=Sort("like")) == live.search(
        top, limit=10, sort=Sort("like")
    )


#: What a start loads, each pausing the collector while it reads the store.
LOADERS = {
    "item index": rebuild_index,
    "catalogue": load_catalogue,
    "co-occurrence": lambda store: load_cooccurrence(store, Index(), None),
}


@pytest.mark.parametrize("load", LOADERS.values(), ids=LOADERS.keys())
def test_loads_at_start_pause_the_garbage_collector_and_restore_it_even_on_failure(
    load: Callable[[EventStore], object],
) -> None:
    seen: list[bool] = []

    class Failing(MemoryEventStore):
        def iter_streams(self, kind: str, *, snapshots: bool = False) -> Any:
            seen.append(gc.isenabled())
            raise StoreError("disk gone")

        def last_seq(self) -> int:
            seen.append(gc.isenabled())
            raise StoreError("disk gone")

    assert gc.isenabled()
    with pytest.raises(StoreError):
        load(Failing())
    assert seen == [False]
    assert gc.isenabled()

    gc.disable()
    try:
        load(MemoryEventStore())
        assert not gc.isenabled()  # a collector the caller turned off stays off
    finally:
        gc.enable()


def unsaved_item_events(store: LmdbEventStore) -> dict[str, int]:
    """Per item, its events after its stored snapshot: what a rebuild would replay now."""
    return {
        info.entity_id: len(
            store.read_stream("item", info.entity_id, info.snapshot.seq if info.snapshot else 0)
        )
        for info in store.iter_streams("item", snapshots=True)
    }


@pytest.mark.parametrize(("within", "most_unsaved"), [(0, 25), (40, 3)])
def test_item_snapshot_within_bounds_what_a_start_after_a_crash_replays(
    tmp_path: Path, within: int, most_unsaved: int
) -> None:
    """Items with few events each never reach ``snapshot_every``; with ``within`` they are
    saved once their snapshot is that far behind, so little is left unsaved while serving
    (read before any clean stop, which would snapshot every item)."""
    store = LmdbEventStore(tmp_path / "db")
    config = SystemConfig(runtime=RuntimeConfig(snapshot_every=100), item_snapshot_within=within)

    async def run() -> dict[str, int]:
        async with open_actor_system(store, config) as system:
            await system.upsert_items(
                [UpsertItem(event_id=f"u{n}", item=f"i{n}", ts=1.0) for n in range(10)]
            )
            for n in range(235):  # an event every 10 positions for each item
                await system.ingest(
                    [RecordInteraction(id=f"l{n}", type="like", user="u", item=f"i{n % 10}", ts=n)]
                )
            await trio.sleep(0.3)  # the writer flushes queued snapshots while idle
            return unsaved_item_events(store)

    unsaved = trio.run(run)
    store.close()
    assert len(unsaved) == 10
    # Without: no item reached 100 events, so none has a snapshot and all 24 or 25 of its
    # events are unsaved. With: an item's unsaved events are all less than 40 positions
    # past its snapshot, 10 apart: 3 at most.
    assert max(unsaved.values()) == most_unsaved
    if within == 0:
        assert sum(unsaved.values()) == 245
