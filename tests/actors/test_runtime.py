"""The virtual-actor runtime with a toy behaviour: activation, ordering, deadlines,
passivation, the LRU bound, supervision, backpressure and shutdown.

Time-based tests run on pytest-trio's ``autojump_clock``: no wall-clock sleeps.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import attrs
import pytest
import trio
import trio.testing

import actors
from actors import (
    ActorError,
    ActorRuntime,
    AskTimeoutError,
    MailboxFullError,
    Outcome,
    RuntimeConfig,
    Snapshot,
    SystemClosedError,
)
from actors.messages import GetState

# -- a toy behaviour ---------------------------------------------------------------------


@attrs.frozen
class Add:
    amount: int
    #: The log position of the event that adds it (default: the entity's next).
    at: int | None = None


@attrs.frozen
class Get:
    pass


@attrs.frozen
class Note:
    """Record ``text`` in the entity's history (to check ordering)."""

    text: str


@attrs.frozen
class Boom:
    pass


@attrs.frozen
class Tally:
    id: str
    total: int = 0
    seq: int = 0
    notes: tuple[str, ...] = ()


class Counters:
    """A counter per entity; its 'durable storage' is a dict the test can inspect."""

    kind = "counter"

    def __init__(self) -> None:
        self.durable: dict[str, Tally] = {}
        #: entity -> how many events its recovery replays on top of its snapshot.
        self.tail: dict[str, int] = {}
        self.recovered: Counter[str] = Counter()
        self.received: list[tuple[str, Any]] = []

    def recover(self, entity_id: str, first_message: Any = None) -> tuple[Tally, int]:
        self.recovered[entity_id] += 1
        return self.durable.get(entity_id, Tally(id=entity_id)), self.tail.get(entity_id, 0)

    def receive(self, state: Tally, message: Any) -> Outcome[Tally]:
        self.received.append((state.id, message))
        if isinstance(message, Add):
            seq = state.seq + 1 if message.at is None else message.at
            new = attrs.evolve(state, total=state.total + message.amount, seq=seq)
            return (new, new.total, 1)
        if isinstance(message, Note):
            return (attrs.evolve(state, notes=(*state.notes, message.text)), None, 0)
        if isinstance(message, Get):
            return (state, state, 0)
        if isinstance(message, Boom):
            raise RuntimeError(f"boom in {state.id}")
        raise TypeError(message)

    def snapshot(self, state: Tally) -> Snapshot:
        return Snapshot(
            kind=self.kind, entity_id=state.id, seq=state.seq, data=repr(state).encode()
        )


@attrs.define
class Harness:
    behavior: Counters
    runtime: ActorRuntime[Tally]
    snapshots: list[Snapshot]

    def saved_for(self, entity_id: str) -> list[int]:
        return [s.seq for s in self.snapshots if s.entity_id == entity_id]


def make(**config: Any) -> Harness:
    behavior = Counters()
    snapshots: list[Snapshot] = []
    runtime: ActorRuntime[Tally] = ActorRuntime(
        behavior, save_snapshot=snapshots.append, config=RuntimeConfig(**config)
    )
    return Harness(behavior=behavior, runtime=runtime, snapshots=snapshots)


@asynccontextmanager
async def running(**config: Any) -> AsyncIterator[Harness]:
    harness = make(**config)
    async with trio.open_nursery() as nursery:
        await nursery.start(harness.runtime.run)
        try:
            yield harness
        finally:
            await harness.runtime.aclose()


# -- activation and ordering ---------------------------------------------------------------


async def test_entity_is_recovered_once_on_its_first_message() -> None:
    with trio.fail_after(5):
        async with running(shards=2) as h:
            h.behavior.durable["a"] = Tally(id="a", total=40, seq=3)

            assert await h.runtime.ask("a", Add(2)) == 42
            assert await h.runtime.ask("a", Add(1)) == 43
            assert await h.runtime.ask("b", Add(1)) == 1

            assert h.behavior.recovered == {"a": 1, "b": 1}
            stats = h.runtime.statistics()
            assert stats.activations == 2
            assert stats.active == 2
            assert stats.kind == "counter"


async def test_peek_reads_an_active_entity_without_a_message_and_never_activates() -> None:
    with trio.fail_after(5):
        async with running(shards=2) as h:
            h.behavior.durable["a"] = Tally(id="a", total=40, seq=3)

            assert h.runtime.peek("a") is None  # not active: peek does not recover it
            assert h.behavior.recovered == {}
            await h.runtime.ask("a", Add(2))
            received = len(h.behavior.received)

            peeked = h.runtime.peek("a")

            assert peeked == Tally(id="a", total=42, seq=4)
            assert len(h.behavior.received) == received  # no message was handled for it
            await h.runtime.ask("a", Add(1))
            assert h.runtime.peek("a") == Tally(id="a", total=43, seq=5)


async def test_messages_to_one_entity_are_handled_in_order() -> None:
    with trio.fail_after(5):
        async with running(shards=3) as h:
            for n in range(100):
                h.runtime.tell_nowait("a", Note(f"n{n}"))
                await h.runtime.tell("b", Note(f"m{n}"))
            await trio.testing.wait_all_tasks_blocked()

            a = await h.runtime.ask("a", Get())
            b = await h.runtime.ask("b", Get())

    assert a.notes == tuple(f"n{n}" for n in range(100))
    assert b.notes == tuple(f"m{n}" for n in range(100))


async def test_handle_now_applies_on_the_callers_task_before_it_returns() -> None:
    with trio.fail_after(5):
        async with running(shards=3, snapshot_every=2) as h:
            pairs = [(f"e{n % 5}", Add(n)) for n in range(20)]
            envelopes = h.runtime.statistics().envelopes

            h.runtime.handle_now(h.runtime.split(pairs))  # no checkpoint in between

            for n in range(5):
                assert h.runtime.peek(f"e{n}") == Tally(
                    id=f"e{n}", total=sum(range(n, 20, 5)), seq=4
                )
            # Handled as the shards would have: one envelope per shard, supervised,
            # recovered on first sight and snapshotted every ``snapshot_every`` events.
            assert h.runtime.statistics().envelopes - envelopes == len(h.runtime.split(pairs))
            assert h.behavior.recovered == {f"e{n}": 1 for n in range(5)}
            assert h.saved_for("e0") == [2, 4]


async def test_a_message_still_in_the_mailbox_is_handled_after_handle_now() -> None:
    with trio.fail_after(5):
        async with running(shards=1) as h:
            await h.runtime.ask("a", Add(1))
            h.runtime.tell_nowait("a", Note("queued"))  # in the mailbox, not handled yet

            h.runtime.handle_now({0: [("a", Add(10))]})
            state = await h.runtime.ask("a", Get())

    # The queued message is overtaken (a read then sees the newer state): hence a
    # follower must be the only sender of state changes.
    assert [type(m).__name__ for _, m in h.behavior.received] == ["Add", "Add", "Note", "Get"]
    assert state == Tally(id="a", total=11, seq=2, notes=("queued",))


async def test_handle_now_supervises_a_failing_entity_and_refuses_once_closed() -> None:
    h = make(shards=1)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.runtime.run)
            h.runtime.handle_now({0: [("bad", Add(1)), ("bad", Boom()), ("good", Add(2))]})
            assert h.runtime.peek("bad") is None  # restarted from durable state next time
            assert h.runtime.peek("good") == Tally(id="good", total=2, seq=1)
            assert h.runtime.statistics().restarts == 1
            await h.runtime.aclose()

    with pytest.raises(SystemClosedError):
        h.runtime.handle_now({0: [("a", Add(1))]})


async def test_ask_many_answers_in_request_order_across_shards() -> None:
    with trio.fail_after(5):
        async with running(shards=4) as h:
            items = [(f"e{n % 7}", Add(n)) for n in range(30)]

            replies = await h.runtime.ask_many(items)

    expected: dict[str, int] = {}
    want = []
    for entity_id, message in items:
        expected[entity_id] = expected.get(entity_id, 0) + message.amount
        want.append(expected[entity_id])
    assert replies == want


async def test_ask_many_of_nothing_answers_nothing() -> None:
    h = make()

    assert await h.runtime.ask_many([]) == []


# -- deadlines and backpressure ----------------------------------------------------------


async def test_ask_bounded_by_fail_after_times_out_when_the_mailbox_stays_full(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Not running: nothing drains the one-slot mailbox once it is filled.
    h = make(shards=1, mailbox_size=1)
    h.runtime.tell_nowait("a", Add(1))
    start = trio.current_time()

    with pytest.raises(trio.TooSlowError), trio.fail_after(2.5):
        await h.runtime.ask("a", Get())

    assert trio.current_time() - start == pytest.approx(2.5)
    assert h.behavior.received == []


async def test_ask_with_an_expired_deadline_fails_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(shards=1) as h:
        start = trio.current_time()
        with pytest.raises(trio.TooSlowError), trio.fail_after(0):
            await h.runtime.ask("a", Add(1))
        assert trio.current_time() == start
        # Nothing was delivered, and the runtime still answers.
        assert (await h.runtime.ask("a", Get())).total == 0


async def test_late_reply_to_an_abandoned_ask_is_dropped_quietly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The envelope gets into the mailbox but the shard only starts after the deadline."""
    h = make(shards=1, mailbox_size=4)
    async with trio.open_nursery() as nursery:

        async def start_late() -> None:
            await trio.sleep(10)
            await nursery.start(h.runtime.run)

        nursery.start_soon(start_late)
        with pytest.raises(trio.TooSlowError), trio.fail_after(1):
            await h.runtime.ask("a", Add(5))
        await trio.sleep(20)
        # The message was handled after all.
        assert (await h.runtime.ask("a", Get())).total == 5
        await h.runtime.aclose()


async def test_system_ask_raises_ask_timeout_error_when_actors_do_not_answer(
    autojump_clock: trio.testing.MockClock,
) -> None:
    config = actors.SystemConfig(runtime=RuntimeConfig(shards=1, mailbox_size=1), ask_timeout_s=3.0)
    # Not running, and its one-slot mailboxes filled: no actor can answer.
    system = actors.ActorSystem(actors.MemoryEventStore(), config)
    system.items.tell_nowait("i1", GetState())
    system.users.tell_nowait("u1", GetState())
    start = trio.current_time()

    with pytest.raises(AskTimeoutError):
        await system.get_item("i1")
    with pytest.raises(AskTimeoutError):
        await system.get_user("u1")

    assert trio.current_time() - start == pytest.approx(6.0)


async def test_tell_nowait_raises_when_the_mailbox_is_full() -> None:
    h = make(shards=1, mailbox_size=2)
    h.runtime.tell_nowait("a", Add(1))
    h.runtime.tell_nowait("b", Add(1))

    with pytest.raises(MailboxFullError):
        h.runtime.tell_nowait("c", Add(1))


async def test_tell_waits_for_room_in_the_mailbox(
    autojump_clock: trio.testing.MockClock,
) -> None:
    h = make(shards=1, mailbox_size=1)
    h.runtime.tell_nowait("a", Add(1))

    with trio.move_on_after(1) as scope:
        await h.runtime.tell("a", Add(2))
    assert scope.cancelled_caught

    async with trio.open_nursery() as nursery:
        await nursery.start(h.runtime.run)
        with trio.fail_after(1):
            await h.runtime.tell("a", Add(2))
        assert (await h.runtime.ask("a", Get())).total == 3
        await h.runtime.aclose()


# -- passivation ----------------------------------------------------------------------------


async def test_idle_entity_is_passivated_with_a_snapshot_and_recovered_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(shards=1, passivate_after_s=60, sweep_every_s=1, snapshot_every=100) as h:
        await h.runtime.ask("changed", Add(5))
        await h.runtime.ask("read-only", Get())
        assert h.runtime.statistics().active == 2

        await trio.sleep(30)
        assert h.runtime.statistics().active == 2
        await trio.sleep(32)

        stats = h.runtime.statistics()
        assert stats.active == 0
        assert stats.passivations == 2
        # Only the entity that applied events is snapshotted.
        assert [(s.entity_id, s.seq) for s in h.snapshots] == [("changed", 1)]

        h.behavior.durable["changed"] = Tally(id="changed", total=5, seq=1)
        assert await h.runtime.ask("changed", Add(1)) == 6
        assert h.behavior.recovered["changed"] == 2
        assert h.runtime.statistics().activations == 3


async def test_activity_postpones_passivation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(shards=1, passivate_after_s=60, sweep_every_s=1) as h:
        await h.runtime.ask("idle", Get())
        for _ in range(5):
            await h.runtime.ask("busy", Get())
            await trio.sleep(40)

        # "idle" went after 60 s; "busy" was touched every 40 s and stays.
        stats = h.runtime.statistics()
        assert stats.active == 1
        assert stats.passivations == 1
        assert h.behavior.recovered == {"busy": 1, "idle": 1}


async def test_snapshot_is_saved_every_n_applied_events() -> None:
    with trio.fail_after(5):
        async with running(shards=1, snapshot_every=3) as h:
            for _ in range(7):
                await h.runtime.ask("a", Add(1))
            await h.runtime.ask("a", Get())

            assert h.saved_for("a") == [3, 6]


async def test_events_replayed_at_recovery_count_towards_the_next_snapshot() -> None:
    with trio.fail_after(5):
        async with running(shards=1, snapshot_every=5) as h:
            h.behavior.tail["a"] = 3

            await h.runtime.ask("a", Add(1))
            assert h.saved_for("a") == []
            await h.runtime.ask("a", Add(1))

            assert h.saved_for("a") == [2]


async def test_snapshot_within_saves_an_entity_whose_snapshot_falls_that_far_behind() -> None:
    # An entity with few events of its own, spread over a long log: snapshot_every alone
    # would leave all of them for a recovery to replay.
    with trio.fail_after(5):
        async with running(shards=1, snapshot_every=100, snapshot_within=1_000) as h:
            h.behavior.durable["a"] = Tally(id="a", seq=50)
            for at in (400, 900, 1_049, 1_050, 1_900, 2_049, 2_050):
                await h.runtime.ask("a", Add(1, at=at))

            assert h.saved_for("a") == [1_050, 2_050]


async def test_snapshot_within_saves_an_entity_recovered_with_a_tail_on_its_next_event() -> None:
    with trio.fail_after(5):
        async with running(shards=1, snapshot_every=100, snapshot_within=1_000) as h:
            h.behavior.durable["tail"] = Tally(id="tail", seq=10)
            h.behavior.tail["tail"] = 3  # events after its snapshot: how far back is not known
            h.behavior.durable["saved"] = Tally(id="saved", seq=10)
            await h.runtime.ask("tail", Add(1, at=20))
            await h.runtime.ask("saved", Add(1, at=20))

            assert [(s.entity_id, s.seq) for s in h.snapshots] == [("tail", 20)]


async def test_snapshot_within_saves_a_new_entity_on_its_first_event() -> None:
    # An item upserted once and never touched again would otherwise be read from the
    # log by every start.
    with trio.fail_after(5):
        async with running(shards=1, snapshot_every=100, snapshot_within=1_000) as h:
            await h.runtime.ask("new", Add(1, at=7))
            await h.runtime.ask("new", Add(1, at=900))

            assert h.saved_for("new") == [7]


async def test_snapshot_within_zero_leaves_snapshots_to_snapshot_every() -> None:
    with trio.fail_after(5):
        async with running(shards=1, snapshot_every=2, snapshot_within=0) as h:
            for at in (10_000, 50_000, 90_000):
                await h.runtime.ask("a", Add(1, at=at))

            assert h.saved_for("a") == [50_000]


async def test_read_only_entity_with_a_replayed_tail_is_snapshotted_on_passivation(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(shards=1, passivate_after_s=10, snapshot_every=100) as h:
        h.behavior.durable["long-tail"] = Tally(id="long-tail", total=9, seq=40)
        h.behavior.tail["long-tail"] = 25
        await h.runtime.ask("long-tail", Get())
        await h.runtime.ask("up-to-date", Get())

        await trio.sleep(20)

        assert h.runtime.statistics().active == 0
        # Saving it spares the next activation from replaying the same tail again.
        assert [(s.entity_id, s.seq) for s in h.snapshots] == [("long-tail", 40)]


async def test_passivated_entity_without_new_events_is_not_snapshotted_again(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with running(shards=1, snapshot_every=2, passivate_after_s=10) as h:
        await h.runtime.ask("a", Add(1))
        await h.runtime.ask("a", Add(1))
        assert h.saved_for("a") == [2]

        await trio.sleep(20)

        assert h.runtime.statistics().active == 0
        assert h.saved_for("a") == [2]


async def test_shard_bound_evicts_the_least_recently_used_entity() -> None:
    with trio.fail_after(5):
        async with running(shards=1, max_active_per_shard=3) as h:
            for entity_id in ["a", "b", "c"]:
                await h.runtime.ask(entity_id, Add(1))
            await h.runtime.ask("a", Get())  # b is now the least recently used

            await h.runtime.ask("d", Get())

            assert h.runtime.statistics().active == 3
            assert h.runtime.statistics().passivations == 1
            assert [s.entity_id for s in h.snapshots] == ["b"]

            # a, c and d are still active: no recovery for them.
            for entity_id in ["a", "c", "d"]:
                await h.runtime.ask(entity_id, Get())
            assert h.behavior.recovered == {"a": 1, "b": 1, "c": 1, "d": 1}

            # b comes back from durable storage and evicts a, now least recently used.
            await h.runtime.ask("b", Get())
            assert h.behavior.recovered["b"] == 2
            assert [s.entity_id for s in h.snapshots] == ["b", "a"]


# -- supervision ----------------------------------------------------------------------------


async def test_failing_message_replies_actor_error_and_restarts_only_that_entity(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="actors.runtime")
    with trio.fail_after(5):
        async with running(shards=1) as h:
            h.behavior.durable["bad"] = Tally(id="bad", total=100)
            await h.runtime.ask("bad", Add(1))
            await h.runtime.ask("good", Add(7))

            reply = await h.runtime.ask("bad", Boom())

            assert isinstance(reply, ActorError)
            assert "boom in bad" in str(reply)
            assert h.runtime.statistics().restarts == 1
            assert h.runtime.statistics().active == 1
            # The in-memory state (101) is gone; the entity restarts from durable state.
            assert (await h.runtime.ask("bad", Get())).total == 100
            assert h.behavior.recovered["bad"] == 2
            # The neighbour in the same shard kept its state and answers normally.
            assert await h.runtime.ask("good", Add(1)) == 8
            assert h.behavior.recovered["good"] == 1

    failures = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(failures) == 1
    assert "'bad'" in failures[0].getMessage()
    assert failures[0].exc_info is not None
    assert isinstance(failures[0].exc_info[1], RuntimeError)


async def test_ask_many_puts_the_actor_error_in_the_failed_slot_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="actors.runtime")
    with trio.fail_after(5):
        async with running(shards=1) as h:
            replies = await h.runtime.ask_many(
                [("a", Add(1)), ("bad", Boom()), ("a", Add(1)), ("c", Add(3))]
            )

            assert replies[0] == 1
            assert isinstance(replies[1], ActorError)
            assert replies[2:] == [2, 3]
            assert h.runtime.statistics().restarts == 1
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1


async def test_failure_on_first_message_leaves_no_activation(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="actors.runtime")
    with trio.fail_after(5):
        async with running(shards=1) as h:
            assert isinstance(await h.runtime.ask("x", Boom()), ActorError)
            assert h.runtime.statistics().active == 0
            assert isinstance(await h.runtime.ask("x", Boom()), ActorError)

            assert h.behavior.recovered["x"] == 2
            assert h.runtime.statistics().restarts == 2


async def test_failing_recovery_is_supervised_like_a_failing_message(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR, logger="actors.runtime")
    h = make(shards=1)
    calls = Counter[str]()
    original = h.behavior.recover

    def flaky(entity_id: str, first_message: Any = None) -> tuple[Tally, int]:
        calls[entity_id] += 1
        if calls[entity_id] == 1:
            raise OSError("disk hiccup")
        return original(entity_id, first_message)

    h.behavior.recover = flaky  # type: ignore[method-assign]
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.runtime.run)

            assert isinstance(await h.runtime.ask("a", Add(1)), ActorError)
            assert await h.runtime.ask("a", Add(1)) == 1
            assert h.runtime.statistics().restarts == 1
            await h.runtime.aclose()
    (failure,) = [r for r in caplog.records if r.levelno == logging.ERROR]
    # An operational failure is one line with its reason; only a bug keeps a traceback.
    assert "'a' failed on Add" in failure.getMessage()
    assert "disk hiccup" in failure.getMessage()
    assert failure.exc_info is None


# -- shutdown -------------------------------------------------------------------------------


async def test_aclose_drains_the_mailboxes_snapshots_changed_entities_and_returns() -> None:
    h = make(shards=2, snapshot_every=100)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.runtime.run)
            await h.runtime.ask("changed", Add(1))
            await h.runtime.ask("unchanged", Get())
            h.runtime.tell_nowait("queued", Add(2))
            h.runtime.tell_nowait("queued", Add(3))

            await h.runtime.aclose()
        # run() has returned: the nursery exited.

    assert sorted((s.entity_id, s.seq) for s in h.snapshots) == [("changed", 1), ("queued", 2)]
    stats = h.runtime.statistics()
    assert stats.active == 0
    assert stats.passivations == 3


async def test_closed_runtime_refuses_messages() -> None:
    h = make(shards=1)
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(h.runtime.run)
            await h.runtime.aclose()

    with pytest.raises(SystemClosedError):
        h.runtime.tell_nowait("a", Add(1))
    with pytest.raises(SystemClosedError):
        await h.runtime.tell("a", Add(1))
    with pytest.raises(SystemClosedError):
        await h.runtime.ask("a", Get())


async def test_statistics_count_envelopes_and_messages() -> None:
    with trio.fail_after(5):
        async with running(shards=1) as h:
            await h.runtime.ask_many([("a", Add(1)), ("b", Add(1)), ("a", Get())])
            await h.runtime.ask("a", Get())

            stats = h.runtime.statistics()
            assert (stats.envelopes, stats.messages) == (2, 4)
