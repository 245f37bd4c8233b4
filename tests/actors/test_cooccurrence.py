"""Item-to-item co-occurrence: what a pair gains, bounds, and live equal to rebuilt.

The live projection is fed by a real :class:`ActorSystem` as events commit
(in batches of any size, with duplicates); the rebuilt one reads the same
log in order at startup. They must hold the same rows, landmark and user
windows (Hypothesis), and a reopened system must serve the same neighbours.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np
import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from actors import (
    LmdbEventStore,
    MemoryEventStore,
    RecordInteraction,
    SystemConfig,
    UpsertItem,
    open_actor_system,
)
from actors.cooccurrence import (
    CoOccurrence,
    decode_snapshot,
    encode_snapshot,
    engagement_weight,
    load_cooccurrence,
    rebuild_cooccurrence,
)
from actors.cooccurrence_saver import CHECK_S, save_in_child
from actors.events import InteractionRecorded
from actors.item_index import rebuild_index
from index import Index

DAY = 86_400.0


def interaction(user: str, item: str, type_: str = "like", weight: float = 1.0) -> Any:
    return InteractionRecorded(id="e", user=user, item=item, type=type_, ts=0.0, weight=weight)


def test_engagements_are_clicks_and_stronger_weighted_by_type() -> None:
    assert engagement_weight(interaction("u", "i", "like")) == 1.0
    assert engagement_weight(interaction("u", "i", "hire", weight=2.0)) == 4.0
    assert engagement_weight(interaction("u", "i", "click")) == pytest.approx(0.3)
    assert engagement_weight(interaction("u", "i", "view")) == 0.0
    assert engagement_weight(interaction("u", "i", "dismiss")) == 0.0


def test_a_pair_gains_both_ways_from_the_same_user_only() -> None:
    c = CoOccurrence()
    c.observe("a", 1, 1.0, 100.0)
    c.observe("b", 2, 1.0, 100.0)  # another user: no pair with 1
    c.observe("a", 3, 2.0, 100.0)

    assert dict(c.rows[1]) == {3: 2.0}
    assert dict(c.rows[3]) == {1: 2.0}
    assert 2 not in c.rows
    docs, values = c.neighbours(3, now=100.0)
    assert docs.tolist() == [1]
    assert values.tolist() == [2.0]


def test_engagements_too_far_apart_or_beyond_the_window_do_not_pair() -> None:
    c = CoOccurrence(window=2, gap_s=DAY)
    c.observe("a", 1, 1.0, 0.0)
    c.observe("a", 2, 1.0, 2 * DAY)  # more than a day after 1
    c.observe("a", 3, 1.0, 2 * DAY)
    c.observe("a", 4, 1.0, 2 * DAY)
    c.observe("a", 5, 1.0, 2 * DAY)  # the window holds only 3 and 4 now

    assert 1 not in c.rows
    assert set(c.rows[5]) == {3, 4}
    assert 2 not in c.rows[5]


def test_pairs_decay_with_the_half_life() -> None:
    c = CoOccurrence(half_life=DAY)
    c.observe("a", 1, 1.0, 0.0)
    c.observe("a", 2, 1.0, 0.0)
    c.observe("b", 1, 1.0, 2 * DAY)
    c.observe("b", 2, 1.0, 2 * DAY)

    _, values = c.neighbours(1, now=2 * DAY)
    assert values.tolist() == pytest.approx([1.25])  # 1 * 2**-2 + 1
    _, later = c.neighbours(1, now=3 * DAY)
    assert later.tolist() == pytest.approx([0.625])


def test_a_row_keeps_its_heaviest_neighbours() -> None:
    c = CoOccurrence(keep=3, window=1, gap_s=math.inf)
    # Item 0 co-occurs with 1..10; with n once per n, so 10 is the heaviest.
    for n in range(1, 11):
        for repeat in range(n):
            c.observe(f"u{n}-{repeat}", 0, 1.0, 0.0)
            c.observe(f"u{n}-{repeat}", n, 1.0, 0.0)

    assert len(c.rows[0]) <= 2 * 3
    assert set(sorted(c.rows[0], key=lambda d: -c.rows[0][d])[:3]) == {10, 9, 8}


def test_the_user_windows_are_bounded() -> None:
    c = CoOccurrence(max_users=3)
    for u in range(10):
        c.observe(f"u{u}", u, 1.0, float(u))

    assert list(c.recent) == ["u7", "u8", "u9"]


def test_scores_sum_weighted_normalised_neighbours() -> None:
    c = CoOccurrence()
    c.observe("a", 1, 1.0, 0.0)
    c.observe("a", 2, 1.0, 0.0)  # 1-2
    c.observe("b", 3, 1.0, 0.0)
    c.observe("b", 2, 1.0, 0.0)  # 3-2
    c.observe("c", 3, 1.0, 0.0)
    c.observe("c", 4, 1.0, 0.0)  # 3-4

    docs, scores = c.scores([(1, 1.0), (3, 0.5)], now=0.0)

    # From 1: {2: 1}; from 3 (row total 2): {2: 0.5, 4: 0.5}, weighted 0.5.
    assert docs.tolist() == [2, 4]
    assert scores.tolist() == pytest.approx([1.25, 0.25])
    assert c.scores([], now=0.0)[0].tolist() == []


def test_rescaling_keeps_the_values() -> None:
    c = CoOccurrence(half_life=1.0)
    c.observe("a", 1, 1.0, 0.0)
    c.observe("a", 2, 1.0, 0.0)
    c.observe("b", 1, 1.0, 100.0)  # past RESCALE_AFTER half-lives: masses re-expressed
    c.observe("b", 3, 1.0, 100.0)

    assert c.landmark == 100.0
    docs, values = c.neighbours(1, now=100.0)
    assert docs.tolist() == [2, 3]
    assert values.tolist() == pytest.approx([2.0**-100, 1.0])


# -- live equals rebuilt ------------------------------------------------------------------

ITEMS = [f"i{n}" for n in range(8)]
_ids = itertools.count()

events = st.lists(
    st.tuples(
        st.sampled_from(["u1", "u2", "u3"]),
        st.sampled_from(ITEMS),
        st.sampled_from(["like", "click", "view", "dismiss", "hire"]),
        st.floats(0.0, 90 * DAY),
    ),
    max_size=60,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events, st.integers(1, 7), st.integers(1, 3))
async def test_live_cooccurrence_equals_a_rebuild_from_the_log(
    stream: list[tuple[str, str, str, float]], batch: int, keep: int
) -> None:
    store = MemoryEventStore()
    async with open_actor_system(store) as system:
        # Small rows and windows so pruning and eviction happen.
        system.cooccurrence = CoOccurrence(keep=keep, window=2, max_users=2, gap_s=30 * DAY)
        live = system.cooccurrence
        await system.upsert_items([UpsertItem(event_id=f"up-{i}", item=i, ts=0.0) for i in ITEMS])
        commands = [
            RecordInteraction(id=f"ev{next(_ids)}", user=u, item=i, type=t, ts=ts)
            for u, i, t, ts in stream
        ]
        for start in range(0, len(commands), batch):
            await system.ingest(commands[start : start + batch])
        if commands:
            await system.ingest(commands[:batch])  # duplicates change nothing
        rebuilt = rebuild_cooccurrence(
            store, system.index, CoOccurrence(keep=keep, window=2, max_users=2, gap_s=30 * DAY)
        )

    assert rebuilt.state() == live.state()


def random_likes(rng: np.random.Generator, n: int) -> list[RecordInteraction]:
    """``n`` likes of :data:`ITEMS` by five users, one second apart."""
    return [
        RecordInteraction(
            id=f"r{k}",
            user=f"u{rng.integers(5)}",
            item=ITEMS[int(rng.integers(len(ITEMS)))],
            type="like",
            ts=float(k),
        )
        for k in range(n)
    ]


async def test_a_restart_serves_the_same_neighbours(tmp_path: Any) -> None:
    rng = np.random.default_rng(3)
    store = LmdbEventStore(tmp_path / "events")
    try:
        async with open_actor_system(store) as system:
            await system.upsert_items(
                [UpsertItem(event_id=f"up-{i}", item=i, ts=0.0) for i in ITEMS]
            )
            await system.ingest(random_likes(rng, 300))
            before = system.cooccurrence.state()
            neighbours = {d: system.cooccurrence.neighbours(d, 300.0) for d in range(8)}
    finally:
        store.close()
    store = LmdbEventStore(tmp_path / "events")
    try:
        async with open_actor_system(store) as system:
            assert system.cooccurrence.state()[:2] == before[:2]
            for doc, (docs, values) in neighbours.items():
                again = system.cooccurrence.neighbours(doc, 300.0)
                assert again[0].tolist() == docs.tolist()
                assert again[1].tolist() == values.tolist()
    finally:
        store.close()


async def test_a_restart_serves_the_same_recommendations(tmp_path: Any) -> None:
    from ranker import RecommendRequest, open_ranker

    rng = np.random.default_rng(5)
    items = [f"i{n}" for n in range(40)]
    requests = [RecommendRequest(user=f"u{u}", k=5, explain=True) for u in range(6)]

    async def answers() -> list[list[tuple[str, float]]]:
        async with open_ranker(system) as ranker:
            return [
                [(e["id"], e["score"]) for e in (await ranker.recommend(r)).items] for r in requests
            ]

    store = LmdbEventStore(tmp_path / "events")
    try:
        async with open_actor_system(store) as system:
            await system.upsert_items(
                [
                    UpsertItem(event_id=f"up-{i}", item=i, ts=0.0, terms={"g": (f"g{n % 3}",)})
                    for n, i in enumerate(items)
                ]
            )
            await system.ingest(
                [
                    RecordInteraction(
                        id=f"r{n}",
                        user=f"u{rng.integers(6)}",
                        item=items[int(rng.integers(len(items)))],
                        type=str(rng.choice(["like", "click", "view", "dismiss"])),
                        ts=float(n),
                    )
                    for n in range(400)
                ]
            )
            before = await answers()
    finally:
        store.close()
    store = LmdbEventStore(tmp_path / "events")
    try:
        async with open_actor_system(store) as system:
            after = await answers()
    finally:
        store.close()

    assert any(before)
    assert after == before


# -- snapshots ----------------------------------------------------------------------------


def small() -> CoOccurrence:
    """Small rows and windows, so that pruning and eviction happen."""
    return CoOccurrence(keep=2, window=2, max_users=2, gap_s=30 * DAY)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(events, st.integers(0, 60))
async def test_a_snapshot_plus_the_log_after_it_equals_a_rebuild_of_the_whole_log(
    stream: list[tuple[str, str, str, float]], cut: int
) -> None:
    store = MemoryEventStore()
    async with open_actor_system(store) as system:
        await system.upsert_items([UpsertItem(event_id=f"up-{i}", item=i, ts=0.0) for i in ITEMS])
        await system.ingest(
            [
                RecordInteraction(id=f"ev{next(_ids)}", user=u, item=i, type=t, ts=ts)
                for u, i, t, ts in stream
            ]
        )
        index = system.index
    seq = min(len(ITEMS) + cut, store.last_seq())
    at_cut = rebuild_cooccurrence(store, index, small(), until=seq)
    (event,) = store.read_all(after=seq - 1, limit=1)
    decoded, decoded_seq, event_id = decode_snapshot(
        encode_snapshot(at_cut, seq, event.event.id), small()
    )
    assert (decoded_seq, event_id) == (seq, event.event.id)
    assert decoded.state() == at_cut.state()

    resumed = rebuild_cooccurrence(store, index, decoded, after=seq)
    assert resumed.state() == rebuild_cooccurrence(store, index, small()).state()


async def ingested(tmp_path: Any, n: int) -> LmdbEventStore:
    """An LMDB store of :data:`ITEMS` and ``n`` likes, written through an actor system
    that snapshots its co-occurrence on exit to ``tmp_path / "co"``."""
    store = LmdbEventStore(tmp_path / "events")
    async with open_actor_system(store, cooccurrence_file=tmp_path / "co") as system:
        await system.upsert_items([UpsertItem(event_id=f"up-{i}", item=i, ts=0.0) for i in ITEMS])
        await system.ingest(random_likes(np.random.default_rng(7), n))
    return store


async def test_a_start_reads_the_snapshot_and_only_the_log_after_it(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store = await ingested(tmp_path, 200)
    try:
        assert (tmp_path / "co").exists()
        whole = rebuild_cooccurrence(store, index_of(store)).state()
        caplog.set_level("INFO", logger="actors.cooccurrence")
        loaded = load_cooccurrence(store, index_of(store), tmp_path / "co")
        assert loaded.state() == whole
        assert "rebuilt from 0 events after seq 208" in caplog.text
    finally:
        store.close()


def index_of(store: LmdbEventStore) -> Index:
    return rebuild_index(store)


@pytest.mark.parametrize("damage", ["corrupt", "other log", "ahead", "other parameters"])
async def test_a_snapshot_that_does_not_fit_the_log_is_ignored_and_the_log_replayed(
    tmp_path: Any, caplog: pytest.LogCaptureFixture, damage: str
) -> None:
    store = await ingested(tmp_path, 200)
    path = tmp_path / "co"
    try:
        index = index_of(store)
        whole = rebuild_cooccurrence(store, index)
        at = store.last_seq()
        (last,) = store.read_all(after=at - 1, limit=1)
        if damage == "corrupt":
            path.write_bytes(path.read_bytes()[:100])
        elif damage == "other log":
            path.write_bytes(encode_snapshot(whole, at, "not-this-log"))
        elif damage == "ahead":
            path.write_bytes(encode_snapshot(whole, at + 5, last.event.id))
        else:
            path.write_bytes(encode_snapshot(CoOccurrence(keep=3), at, last.event.id))
        caplog.set_level("INFO", logger="actors.cooccurrence")
        assert load_cooccurrence(store, index, path).state() == whole.state()
        assert "not used" in caplog.text
        assert f"rebuilt from {at} events after seq 0" in caplog.text
    finally:
        store.close()


# -- snapshots while serving (a forked child writes them) --------------------------------------


async def test_a_child_writes_the_snapshot_a_start_then_uses(tmp_path: Any) -> None:
    store = await ingested(tmp_path, 200)
    try:
        index = index_of(store)
        whole = rebuild_cooccurrence(store, index)
        path = tmp_path / "child"
        assert await save_in_child(whole, store, path, store.last_seq())
        loaded, seq, _ = decode_snapshot(path.read_bytes(), CoOccurrence())
        assert (seq, loaded.state()) == (store.last_seq(), whole.state())
        # A child that fails (here: the directory is gone) is reported, and leaves nothing.
        assert not await save_in_child(whole, store, tmp_path / "gone" / "co", seq)
    finally:
        store.close()


def snapshot_seq(path: Any) -> int:
    """The seq of the co-occurrence snapshot at ``path``, 0 if there is none."""
    return decode_snapshot(path.read_bytes(), CoOccurrence())[1] if path.exists() else 0


async def test_a_serving_system_writes_the_snapshot_every_so_many_events(tmp_path: Any) -> None:
    store = LmdbEventStore(tmp_path / "events")
    path = tmp_path / "co"
    config = SystemConfig(cooccurrence_snapshot_every=100)
    rng = np.random.default_rng(3)
    looks = CHECK_S * 1.5  # long enough for the saver to look once more
    try:
        async with open_actor_system(store, config, cooccurrence_file=path) as system:
            await system.upsert_items(
                [UpsertItem(event_id=f"up-{i}", item=i, ts=0.0) for i in ITEMS]
            )
            await trio.sleep(looks)
            assert snapshot_seq(path) == 0  # a few events since the start: none yet
            await system.ingest(random_likes(rng, 150))
            first = store.last_seq()
            with trio.fail_after(30):
                while snapshot_seq(path) != first:  # noqa: ASYNC110 (another process writes it)
                    await trio.sleep(0.05)
            await system.ingest(random_likes(rng, 50))
            await trio.sleep(looks)
            assert snapshot_seq(path) == first  # 50 more: not yet again
            # As after a kill -9 now: a start finds the periodic snapshot, and the tail.
            at_crash = rebuild_cooccurrence(store, index_of(store)).state()
            assert load_cooccurrence(store, index_of(store), path).state() == at_crash
    finally:
        store.close()
