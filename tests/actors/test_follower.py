"""A reader worker's projections follow a log another process writes (actors.follower).

What a follower builds must be what the writing process's own actors build
(the index, item and user state, co-occurrence), and a read that catches up
must see everything stored when it asked.
"""

from __future__ import annotations

import gc
from collections.abc import Awaitable, Callable, Iterator, Sequence

import pytest
import trio
import trio.testing

from actors import (
    InteractionRecorded,
    ItemUpserted,
    MemoryEventStore,
    RecordInteraction,
    UpsertItem,
    open_actor_system,
)
from actors.events import StoredEvent
from actors.follower import LogFollower
from actors.system import ActorSystem, open_follower_system
from actors.writer import Completion
from index import parse

ITEMS = [f"i{n}" for n in range(12)]
USERS = [f"u{n}" for n in range(7)]


def catalogue() -> list[UpsertItem]:
    return [
        UpsertItem(
            event_id=f"up-{n}",
            item=item_id,
            ts=1.0,
            kind="pro",
            terms={"city": ("austin" if n % 2 else "boston",)},
            numbers={"price": float(n)},
        )
        for n, item_id in enumerate(ITEMS)
    ]


def events(first: int, count: int) -> list[RecordInteraction]:
    return [
        RecordInteraction(
            id=f"ev-{n}",
            type=("view", "click", "like", "save")[n % 4],
            user=USERS[n % len(USERS)],
            item=ITEMS[(n * 7) % len(ITEMS)],
            ts=10.0 + n,
        )
        for n in range(first, first + count)
    ]


def like(n: int) -> InteractionRecorded:
    return InteractionRecorded(id=f"ev-{n}", type="like", user="u1", item="i0", ts=2.0 + n)


async def projections(system: ActorSystem) -> dict[str, object]:
    """Everything a read can see, from one system."""
    users = await system.get_users(USERS)
    items = [await system.get_item(i) for i in ITEMS]
    austin, liked = parse({"term": ["city", "austin"]}), parse({"range": ["like", 1, None]})
    return {
        "users": [(u.counters, [(r.item, r.type) for r in u.recent], u.seq) for u in users],
        "items": [(i.counters, i.exists, i.seq) for i in items],
        "search": system.search(austin, limit=50).ids,
        "liked": system.search(liked, limit=50).ids,
        "cooccurrence": system.cooccurrence.statistics(),
    }


async def test_a_follower_builds_what_the_writing_actors_build() -> None:
    store = MemoryEventStore()
    async with open_actor_system(store) as writer:
        await writer.upsert_items(catalogue()[:6])
        snapshots: list[object] = []
        async with open_follower_system(store, save_snapshot=snapshots.append) as reader:
            # It started from the log as it was (six items) and follows what comes after.
            await writer.upsert_items(catalogue()[6:])
            for first in range(0, 400, 100):
                await writer.ingest(events(first, 100))
            await reader.catch_up()
            assert reader.follower is not None
            assert reader.follower.applied == store.head() == 12 + 400
            assert await projections(reader) == await projections(writer)
        # Its actors snapshot like the writer's (every 100 events, and on exit), to the sink.
        assert snapshots


async def test_catch_up_applies_what_was_stored_when_it_was_called_in_pages() -> None:
    store = MemoryEventStore()
    store.commit([[ItemUpserted(id="up", item="i0", ts=1.0)]])
    delivered: list[list[int]] = []

    async def dispatch(page: Sequence[StoredEvent]) -> Completion:
        delivered.append([s.seq for s in page])
        return Completion(remaining=0)

    # A long poll: only catch_up moves it along here.
    follower = LogFollower(store, dispatch, start=1, page=2, poll_s=60.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        await follower.catch_up()  # nothing new: returns at once
        assert delivered == []
        store.commit([[like(n) for n in range(5)]])
        await follower.catch_up()
        assert delivered == [[2, 3], [4, 5], [6]]
        assert follower.applied == 6
        statistics = follower.statistics()
        assert (statistics.events, statistics.catch_ups) == (5, 1)
        nursery.cancel_scope.cancel()


async def test_a_nudge_applies_new_events_without_a_read_or_a_poll() -> None:
    store = MemoryEventStore()
    store.commit([[ItemUpserted(id="up", item="i0", ts=1.0)]])
    delivered: list[int] = []

    async def dispatch(page: Sequence[StoredEvent]) -> Completion:
        delivered.extend(s.seq for s in page)
        return Completion(remaining=0)

    follower = LogFollower(store, dispatch, start=1, poll_s=60.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        store.commit([[like(n) for n in range(3)]])
        await trio.testing.wait_all_tasks_blocked()
        assert delivered == []  # nobody said: it waits for its (long) poll
        follower.nudge()
        await trio.testing.wait_all_tasks_blocked()
        assert delivered == [2, 3, 4]
        assert follower.applied == 4
        assert follower.statistics().catch_ups == 0
        nursery.cancel_scope.cancel()


async def test_the_follower_reports_its_progress_after_each_page_and_each_wake() -> None:
    store = MemoryEventStore()
    store.commit([[ItemUpserted(id="up", item="i0", ts=1.0)]])
    reported: list[int] = []

    async def dispatch(page: Sequence[StoredEvent]) -> Completion:
        return Completion(remaining=0)

    follower = LogFollower(store, dispatch, start=1, page=2, poll_s=60.0)
    follower.on_progress = reported.append
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        follower.nudge()
        await trio.testing.wait_all_tasks_blocked()
        assert reported == [1]  # woken with nothing new: still alive, at 1
        store.commit([[like(n) for n in range(3)]])
        follower.nudge()
        await trio.testing.wait_all_tasks_blocked()
        assert reported == [1, 1, 3, 4]
        nursery.cancel_scope.cancel()


async def test_no_read_sees_a_reader_half_way_through_a_page() -> None:
    # A read runs between two of the follower's pages, never inside one: every state
    # it can see holds exactly the events up to what the follower has applied.
    store = MemoryEventStore()
    async with open_actor_system(store) as writer:
        await writer.upsert_items(catalogue())
        async with open_follower_system(store, save_snapshot=lambda _: None) as reader:
            follower = reader.follower
            assert follower is not None
            seen: list[tuple[int, int]] = []  # (seq of u0's state, applied), at each look
            stop = trio.Event()

            async def look() -> None:
                while not stop.is_set():
                    state = reader.users.peek("u0")
                    seen.append((0 if state is None else state.seq, follower.applied))
                    await trio.lowlevel.checkpoint()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(look)
                for first in range(0, 600, 50):
                    await writer.ingest(events(first, 50))
                    follower.nudge()
                await reader.catch_up()
                stop.set()
            head = store.head()
            u0 = [
                s.seq
                for s in store.read_all(after=0, limit=head)
                if getattr(s.event, "user", None) == "u0"
            ]

    def latest_u0(applied: int) -> int:
        return max((seq for seq in u0 if seq <= applied), default=0)

    assert len(seen) > 100
    assert len({state_seq for state_seq, _ in seen}) > 3  # it watched pages land
    assert [(s, a) for s, a in seen if s != latest_u0(a)] == []


async def test_the_wait_of_reads_that_catch_up_is_counted(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryEventStore()
    store.commit([[ItemUpserted(id="up", item="i0", ts=1.0)]])

    async def dispatch(page: Sequence[StoredEvent]) -> Completion:
        await trio.sleep(0.25)  # applying takes a while
        return Completion(remaining=0)

    follower = LogFollower(store, dispatch, start=1, poll_s=60.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        await follower.catch_up()  # nothing to wait for
        assert follower.statistics().catch_up_wait_s == 0.0
        store.commit([[like(n) for n in range(3)]])
        await follower.catch_up()
        statistics = follower.statistics()
        assert statistics.catch_ups == 1
        assert statistics.catch_up_wait_s == pytest.approx(0.25)
        nursery.cancel_scope.cancel()


def recording(pages: list[list[int]]) -> Callable[[Sequence[StoredEvent]], Awaitable[Completion]]:
    async def dispatch(page: Sequence[StoredEvent]) -> Completion:
        pages.append([s.seq for s in page])
        return Completion(remaining=0)

    return dispatch


async def read_until(follower: LogFollower, ended: trio.Event) -> None:
    """A read being answered until ``ended`` is set."""
    with follower.reading():
        await ended.wait()


async def test_a_page_waits_for_the_reads_in_progress_to_finish() -> None:
    """Reads first: a page blocks the event loop while it is applied, so the follower
    applies the next one once the reads being answered are done."""
    store = MemoryEventStore()
    pages: list[list[int]] = []
    follower = LogFollower(store, recording(pages), start=0, poll_s=60.0, reads_first_s=60.0)
    read_may_end = trio.Event()
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        nursery.start_soon(read_until, follower, read_may_end)
        await trio.testing.wait_all_tasks_blocked()
        store.commit([[like(n) for n in range(3)]])
        follower.nudge()
        await trio.testing.wait_all_tasks_blocked()
        assert pages == []  # a read is being answered
        read_may_end.set()
        await trio.testing.wait_all_tasks_blocked()
        assert pages == [[1, 2, 3]]
        nursery.cancel_scope.cancel()


async def test_a_read_that_never_ends_holds_a_page_only_for_reads_first_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = MemoryEventStore()
    pages: list[list[int]] = []
    follower = LogFollower(store, recording(pages), start=0, poll_s=60.0, reads_first_s=0.5)
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        nursery.start_soon(read_until, follower, trio.Event())  # never set
        await trio.testing.wait_all_tasks_blocked()
        store.commit([[like(n) for n in range(3)]])
        follower.nudge()
        await trio.sleep(0.45)
        assert pages == []
        await trio.sleep(0.1)
        assert pages == [[1, 2, 3]]
        nursery.cancel_scope.cancel()


async def test_a_read_waiting_to_catch_up_is_not_waited_for() -> None:
    """It waits for the follower: were it waited for, neither would move."""
    store = MemoryEventStore()
    pages: list[list[int]] = []
    follower = LogFollower(
        store, recording(pages), start=0, page=2, poll_s=60.0, reads_first_s=60.0
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        store.commit([[like(n) for n in range(5)]])
        with trio.fail_after(5), follower.reading():
            await follower.catch_up()
        assert follower.applied == 5
        nursery.cancel_scope.cancel()


@pytest.fixture
def unfrozen() -> Iterator[None]:
    """Give back to the collector whatever a test froze (``gc.freeze`` is process-wide)."""
    yield
    gc.unfreeze()


def in_generations(objects: Sequence[object]) -> list[bool]:
    """Whether each object is in one of the collector's three generations (not frozen)."""
    tracked = {id(o) for generation in range(3) for o in gc.get_objects(generation)}
    return [id(o) in tracked for o in objects]


@pytest.mark.parametrize("freeze", [True, False])
@pytest.mark.usefixtures("unfrozen")
async def test_with_freeze_applied_what_a_page_leaves_is_out_of_the_collectors_reach(
    freeze: bool,
) -> None:
    """The collector then never walks a reader's projections again (see the module)."""
    store = MemoryEventStore()
    kept: list[dict[str, list[int]]] = []  # what each page left behind, as projections do

    async def dispatch(page: Sequence[StoredEvent]) -> Completion:
        kept.append({"seqs": [s.seq for s in page]})
        return Completion(remaining=0)

    follower = LogFollower(store, dispatch, start=0, page=2, poll_s=60.0, freeze_applied=freeze)
    async with trio.open_nursery() as nursery:
        await nursery.start(follower.run)
        store.commit([[like(n) for n in range(5)]])
        await follower.catch_up()
        nursery.cancel_scope.cancel()
    assert [k["seqs"] for k in kept] == [[1, 2], [3, 4], [5]]
    assert all(gc.is_tracked(k) for k in kept)
    assert in_generations(kept) == [not freeze] * 3


@pytest.mark.usefixtures("unfrozen")
async def test_following_leaves_no_cyclic_garbage_among_what_it_froze() -> None:
    """What a freeze catches and later becomes cyclic garbage is never collected; so a
    reader's following, real actors and all, must leave none."""
    gc.collect()
    store = MemoryEventStore()
    async with open_actor_system(store) as writer:
        await writer.upsert_items(catalogue())
        async with open_follower_system(
            store, save_snapshot=lambda s: None, freeze_applied=True
        ) as reader:
            for first in range(0, 1000, 100):
                await writer.ingest(events(first, 100))
                await reader.catch_up()
                await projections(reader)  # reads, as a reader answers them
            assert reader.follower is not None
            assert reader.follower.applied == store.head()
            assert gc.get_freeze_count() > 0
            gc.set_debug(gc.DEBUG_SAVEALL)  # keep what is collected, to look at it
            try:
                gc.unfreeze()
                gc.collect()
                garbage = [type(o).__name__ for o in gc.garbage]
            finally:
                gc.set_debug(0)
                gc.garbage.clear()
    assert garbage == []
