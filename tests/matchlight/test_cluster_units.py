"""Cluster mode's pure parts: partition leases planned from what a node observes, stream
messages, and the cluster flags of ``matchlight serve``."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import nats.errors
import nats.js.errors
import pytest
import trio

from actors import Event, InteractionRecorded, ItemUpserted, MemoryEventStore, open_actor_system
from actors.errors import CodecError
from matchlight.cluster.config import ClusterConfigError, check_node_id, parse_log_url
from matchlight.cluster.follower import (
    StreamFollower,
    by_subject,
    decode_message,
    encode_message,
    message_id,
)
from matchlight.cluster.leases import Observed, desired_owner, plan
from matchlight.cluster.partitions import Layout, partition_of
from matchlight.cluster.stream import (
    NO_PEERS_FOR_PLACEMENT,
    EventStream,
    LogUnavailable,
    retry_later,
)

TTL = 6.0
P = 16


def _node(since: float) -> Observed:
    return Observed(value={"address": "x"}, revision=1, since=since)


def _lease(node: str, since: float, revision: int = 5) -> Observed:
    return Observed(value={"node": node}, revision=revision, since=since)


def test_a_lone_node_claims_every_free_partition() -> None:
    todo = plan("a", P, {}, {}, now=100.0, ttl_s=TTL)
    assert todo.claim == dict.fromkeys(range(P), 0)
    assert not todo.release
    assert not todo.lost


def test_two_live_nodes_split_the_partitions_by_their_desired_owner() -> None:
    observed = {"node.b": _node(since=99.0)}
    mine = plan("a", P, {}, observed, now=100.0, ttl_s=TTL).claim
    theirs = plan("b", P, {}, {"node.a": _node(since=99.0)}, now=100.0, ttl_s=TTL).claim
    assert set(mine) | set(theirs) == set(range(P))
    assert not set(mine) & set(theirs)
    assert 0 < len(mine) < P
    assert all(desired_owner(p, ["a", "b"]) == "a" for p in mine)


def _held_by(node: str, revisions: dict[int, int]) -> dict[str, Observed]:
    return {f"part.{p}": _lease(node, since=50.0, revision=r) for p, r in revisions.items()}


def test_a_holder_releases_what_a_joining_node_should_own_and_writes_nothing_else() -> None:
    held = {p: 10 + p for p in range(P)}
    observed = {"node.b": _node(since=99.0), **_held_by("a", held)}
    todo = plan("a", P, held, observed, now=100.0, ttl_s=TTL)
    assert todo.release == {p: 10 + p for p in range(P) if desired_owner(p, "ab") == "b"}
    assert todo.release  # revision-checked: the revision it wrote
    assert not todo.claim
    assert not todo.lost


def test_leases_need_no_rewriting_while_their_node_beats() -> None:
    # Node b's leases were written long ago; its heartbeat is fresh: they stand.
    observed = {"node.b": _node(since=99.0), **_held_by("b", {p: p + 1 for p in range(P)})}
    early = plan("a", P, {}, observed, now=100.0, ttl_s=TTL)
    assert not set(early.claim) & {p for p in range(P) if desired_owner(p, "ab") == "b"}


def test_a_dead_nodes_leases_are_claimed_once_its_heartbeat_stopped_for_the_ttl() -> None:
    # Node b's heartbeat stopped changing at t = 100.
    observed = {"node.b": _node(since=100.0), **_held_by("b", {p: p + 1 for p in range(P)})}
    b_owns = [p for p in range(P) if desired_owner(p, ["a", "b"]) == "b"]
    early = plan("a", P, {}, observed, now=100.0 + TTL - 0.5, ttl_s=TTL)
    assert b_owns
    assert not set(early.claim) & set(b_owns)
    late = plan("a", P, {}, observed, now=100.0 + TTL, ttl_s=TTL)
    assert late.claim == {p: p + 1 for p in range(P)}


def test_a_restarted_node_takes_back_its_own_leases_at_once() -> None:
    observed = _held_by("a", {p: p + 1 for p in range(P)})
    todo = plan("a", P, {}, observed, now=100.5, ttl_s=TTL)
    assert todo.claim == {p: p + 1 for p in range(P)}


def test_a_lease_another_node_took_is_dropped() -> None:
    held = {3: 7, 4: 8}
    observed = {"part.3": _lease("b", since=100.0, revision=9), **_held_by("a", {4: 8})}
    todo = plan("a", P, held, observed, now=100.0, ttl_s=TTL)
    assert todo.lost == [3]
    assert 4 not in todo.release


def test_a_released_lease_is_claimed_by_create() -> None:
    observed = {"part.3": Observed(value={}, revision=9, since=100.0)}
    assert plan("a", P, {}, observed, now=100.0, ttl_s=TTL).claim[3] == 9


def test_partitions_spread_over_nodes() -> None:
    counts = dict.fromkeys("abc", 0)
    for p in range(64):
        counts[desired_owner(p, counts)] += 1  # type: ignore[index]
    assert all(12 <= c <= 30 for c in counts.values()), counts
    assert sum(1 for u in range(1000) if partition_of(f"u{u}", 64) == 0) < 40


def test_messages_carry_events_and_a_retry_has_the_same_id() -> None:
    events: list[Event] = [
        InteractionRecorded(id="e1", type="view", user="u1", item="i1", ts=1.0),
        ItemUpserted(id="e2", item="i1", ts=2.0, kind="pro", terms={"city": ("x",)}),
    ]
    assert decode_message(encode_message(events)) == events
    assert message_id(events) == message_id(list(events))
    assert message_id(events) != message_id(events[:1])
    for garbage in (b"\x93\x01\x02", b"\xc1", encode_message([])[:0] + b"\x91\x01"):
        with pytest.raises(CodecError):
            decode_message(garbage)


def test_interactions_go_to_their_users_partition_and_item_events_to_the_items_subject() -> None:
    layout = Layout(partitions=8)
    events = [
        InteractionRecorded(id=f"e{n}", type="view", user=f"u{n % 3}", item="i", ts=1.0)
        for n in range(6)
    ] + [ItemUpserted(id="up", item="i", ts=1.0)]
    grouped = dict(by_subject(events, layout))
    assert grouped[layout.items_subject] == events[-1:]
    for n in range(3):
        subject = layout.users_subject(partition_of(f"u{n}", 8))
        mine = [
            e.id
            for e in grouped[subject]
            if isinstance(e, InteractionRecorded) and e.user == f"u{n}"
        ]
        assert mine == [f"e{n}", f"e{n + 3}"]


def test_cluster_flags_are_checked() -> None:
    assert parse_log_url("nats://h1:4222,h2:4223") == ("nats://h1:4222", "nats://h2:4223")
    for bad in ("h1:4222", "nats://h1", "nats://h1:99999", "nats://:4222"):
        with pytest.raises(ClusterConfigError):
            parse_log_url(bad)
    assert check_node_id("node-1") == "node-1"
    for bad in ("", "a b", "a.b", "x" * 65):
        with pytest.raises(ClusterConfigError):
            check_node_id(bad)


class _SlowHead:
    """A stand-in for the stream and its thread: each head request takes 10 ms and answers
    how many requests were sent so far."""

    def __init__(self) -> None:
        self.sent = 0

    async def run(self, function: object, *args: object) -> int:
        self.sent += 1
        answer = self.sent
        await trio.sleep(0.01)
        return answer

    def last_seq(self, deadline_s: float) -> int:  # named, never called: run() stands in
        raise AssertionError


async def test_reads_arriving_together_share_head_requests_sent_after_they_arrived() -> None:
    fake = _SlowHead()
    system = SimpleNamespace(store=SimpleNamespace(position=lambda: 0))
    follower = StreamFollower(fake, fake, system)  # type: ignore[arg-type]
    heads: list[int] = []

    async def read() -> None:
        heads.append(await follower.head())

    async with trio.open_nursery() as nursery:
        follower._nursery = nursery
        nursery.start_soon(read)
        await trio.sleep(0.001)  # request 1 is on its way
        for _ in range(20):
            nursery.start_soon(read)  # all join request 2, sent once request 1 is answered
    assert fake.sent == 2
    assert heads == [1] + [2] * 20


async def test_an_event_in_two_messages_counts_as_accepted_for_the_first_only() -> None:
    store = MemoryEventStore()
    async with open_actor_system(store) as system:
        follower = StreamFollower(None, None, system)  # type: ignore[arg-type]
        first = [
            InteractionRecorded(id=f"e{n}", type="view", user="u", item="i", ts=1.0)
            for n in range(3)
        ]
        retry = [first[2], InteractionRecorded(id="e3", type="view", user="u", item="i", ts=1.0)]
        await follower._apply([(5, encode_message(first)), (6, encode_message(retry))])
        # Delivered again after a new subscription: skipped by sequence.
        await follower._apply([(6, encode_message(retry)), (7, b"\xc1")])
    assert follower.results[5] == (3, 0)
    assert follower.results[6] == (1, 1)
    assert follower.results[7] == (0, 0)  # undecodable: counted, skipped, position moves
    assert follower.undecodable == 1
    assert follower.position == 7
    assert store.position() == 7
    assert [e.event.id for e in store.read_all()] == ["e0", "e1", "e2", "e3"]


async def test_a_message_the_store_refuses_is_skipped_and_the_others_are_stored() -> None:
    store = MemoryEventStore()
    async with open_actor_system(store) as system:
        follower = StreamFollower(None, None, system)  # type: ignore[arg-type]
        good = [InteractionRecorded(id="ok", type="view", user="u", item="i", ts=1.0)]
        bad = [InteractionRecorded(id="x" * 300, type="view", user="u", item="i", ts=1.0)]
        later = [InteractionRecorded(id="ok2", type="view", user="u", item="i", ts=1.0)]
        await follower._apply(
            [
                (1, encode_message(good)),
                (2, encode_message(bad)),
                (3, encode_message(later)),
            ]
        )
    assert [e.event.id for e in store.read_all()] == ["ok", "ok2"]
    assert follower.undecodable == 1
    assert follower.position == store.position() == 3
    assert follower.results[1] == (1, 0)
    assert follower.results[3] == (1, 0)


def test_replicas_that_cannot_be_placed_yet_are_retried_other_api_errors_are_not() -> None:
    offline = nats.js.errors.BadRequestError(
        code=400, err_code=NO_PEERS_FOR_PLACEMENT, description="no suitable peers for placement"
    )
    assert retry_later(offline)
    assert retry_later(nats.errors.TimeoutError())
    assert retry_later(nats.js.errors.ServiceUnavailableError(code=503))
    assert not retry_later(nats.js.errors.BadRequestError(code=400, err_code=10052))
    assert not retry_later(ValueError("bug"))


def test_creating_the_stream_waits_for_a_replica_that_is_offline() -> None:
    # The first node of a cluster whose third NATS server is still starting: JetStream
    # cannot place three replicas yet; the node retries until it can, or its deadline.
    stream = EventStream(["nats://127.0.0.1:1"], Layout(partitions=4), name="a", replicas=3)
    failures = [2]

    async def create() -> str:
        if failures[0]:
            failures[0] -= 1
            raise nats.js.errors.BadRequestError(code=400, err_code=NO_PEERS_FOR_PLACEMENT)
        return "created"

    async def refused() -> None:
        raise nats.js.errors.BadRequestError(code=400, err_code=10052)

    assert asyncio.run(stream._retry(create, 5.0, "create the stream")) == "created"
    assert failures == [0]
    with pytest.raises(nats.js.errors.BadRequestError):
        asyncio.run(stream._retry(refused, 5.0, "create the stream"))
    failures[0] = 10**6
    with pytest.raises(LogUnavailable, match=r"could not create the stream within 0\.3 s"):
        asyncio.run(stream._retry(create, 0.3, "create the stream"))
