"""The synthetic marketplace and the prequential replay: real time vs nightly batch.

The protocol tests check that no system can see the event it is asked about
(nor anything after it) and that the batch baseline is served from a legacy feed.
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from actors import ActorSystem
from legacy_adapter import FeedStore
from matchlight.cli import build_parser
from matchlight.evaluation.batch import write_feed
from matchlight.evaluation.replay import ReplayConfig, replay
from matchlight.evaluation.report import BUCKETS, SYSTEMS, bucket_of, format_table
from matchlight.evaluation.synthetic import MarketplaceConfig, generate
from ranker import TrainingConfig
from tests.matchlight.dataset_checks import assert_items_precede_their_events

SMALL = MarketplaceConfig(consumers=1500, pros=500, seed=11)


def test_the_marketplace_is_the_same_for_a_seed_and_differs_across_seeds() -> None:
    assert generate(SMALL).records == generate(SMALL).records
    other = generate(MarketplaceConfig(consumers=1500, pros=500, seed=12))
    assert other.records != generate(SMALL).records


def test_the_marketplace_is_in_time_order_with_items_before_their_events() -> None:
    market = generate(SMALL)
    times = [body["ts"] for kind, body in market.records if kind == "event"]
    assert times == sorted(times)
    assert_items_precede_their_events(market.records)


def test_the_marketplace_has_a_long_tail_of_consumers() -> None:
    per_user = Counter(e["user"] for e in generate(SMALL).events())
    counts = sorted(per_user.values())
    light = sum(1 for c in counts if c < 10)
    heavy = sum(1 for c in counts if c > 50)
    assert light > 0.6 * len(counts)
    assert heavy > 0
    assert counts[-1] > 20 * counts[len(counts) // 2]


def test_activity_buckets() -> None:
    assert [bucket_of(n) for n in (0, 9, 10, 50, 51)] == ["<10", "<10", "10-50", "10-50", ">50"]


def test_the_real_time_ranker_beats_the_nightly_batch_and_popularity() -> None:
    config = ReplayConfig(training=TrainingConfig(epochs=10, threads=1, seed=3))
    results = trio.run(replay, generate(SMALL).records, config)

    realtime, batch, popular = (
        results[s]["hit_rate@10"] for s in ("realtime", "batch", "popularity")
    )
    assert results["realtime"]["requests"] == results["batch"]["requests"] > 100
    assert realtime > 1.3 * batch
    assert batch > popular
    light = {s: results[s]["by_activity"]["<10"]["hit_rate@10"] for s in ("realtime", "batch")}
    assert light["realtime"] > 1.3 * light["batch"]
    # Users who arrived after the nightly run gain the most: the batch has no list for them.
    new = {s: results[s]["by_cohort"]["new"]["hit_rate@10"] for s in ("realtime", "batch")}
    known = {s: results[s]["by_cohort"]["known"]["hit_rate@10"] for s in ("realtime", "batch")}
    assert known["realtime"] > known["batch"]
    assert new["realtime"] - new["batch"] > known["realtime"] - known["batch"]
    table = format_table(results, 10)
    assert "realtime" in table
    assert "<10" in table


# -- the protocol: the event is told only after every system has answered ----------------

FAST = TrainingConfig(epochs=5, threads=1, seed=3)


def _cut_before(records: list[tuple[str, dict[str, Any]]], first_evaluated: int) -> float:
    """The cut share that puts exactly the first ``first_evaluated`` events before the cut."""
    n_events = sum(1 for kind, _ in records if kind == "event")
    return (first_evaluated + 0.5) / n_events


def _tiny_catalogue(
    *, users: int, items: int, future_items: bool
) -> tuple[list[tuple[str, dict[str, Any]]], int]:
    """A few items; each user likes two and views one before the cut, and likes one after.

    After the cut each user likes either a catalogue item they have not seen
    (``future_items=False``) or an item the catalogue describes only after
    that event (``future_items=True``). Returns the records and the number of
    events before the cut.
    """
    rng = random.Random(5)
    records: list[tuple[str, dict[str, Any]]] = [
        ("item", {"id": f"a-{i}", "kind": "thing"}) for i in range(items)
    ]
    t, n = 1000.0, 0

    def event(who: str, item: str, kind: str = "like") -> None:
        nonlocal t, n
        t += 60.0
        n += 1
        records.append(
            ("event", {"id": f"e-{n}", "type": kind, "user": who, "item": item, "ts": t})
        )

    touched: dict[str, set[str]] = {}
    for u in range(users):
        who = f"u-{u}"
        liked = rng.sample([f"a-{i}" for i in range(items)], 2)
        viewed = f"a-{rng.randrange(items)}"
        for item in liked:
            event(who, item)
        event(who, viewed, "view")
        touched[who] = {*liked, viewed}
    before = n
    for u in range(users):
        who = f"u-{u}"
        if future_items:
            event(who, f"f-{u}")
            records.append(("item", {"id": f"f-{u}", "kind": "thing"}))
        else:
            event(who, next(f"a-{i}" for i in range(items) if f"a-{i}" not in touched[who]))
    return records, before


async def test_each_request_sees_exactly_the_past_and_never_the_event_it_is_about() -> None:
    """At each request the engine holds every record before the event and none from it on."""
    records = generate(MarketplaceConfig(consumers=500, pros=150, seed=5)).records
    index_of = {body["id"]: i for i, (kind, body) in enumerate(records) if kind == "event"}
    calls = 0

    async def check(event: Mapping[str, Any], system: ActorSystem) -> None:
        nonlocal calls
        calls += 1
        assert not system.store.contains(event["id"])
        # One stored event per record (an upsert or an interaction): the log is the prefix.
        assert system.store.last_seq() == index_of[event["id"]]
        state = await system.get_user_view(event["user"])
        assert event["item"] not in state.seen

    config = ReplayConfig(training=FAST)
    results = await replay(records, config, on_request=check)
    assert calls == results["protocol"]["evaluated"] == results["realtime"]["requests"] > 40
    for name in ("batch", "popularity"):
        assert results[name]["requests"] == calls


async def test_every_system_lists_an_unseen_item_when_the_catalogue_fits_in_k() -> None:
    """With fewer than k items every list holds each unseen one: the target, unless told first.

    A protocol that told the event before asking would have it filtered out as
    seen, in the engine and in the batch feed's client alike: hit rate 0, not 1.
    """
    records, before = _tiny_catalogue(users=40, items=6, future_items=False)
    config = ReplayConfig(cut=_cut_before(records, before), training=FAST)
    results = await replay(records, config)
    assert results["protocol"]["cut_events"] == before
    for name in SYSTEMS:
        assert results[name]["requests"] == 40
        assert results[name]["hit_rate@10"] == 1.0, name
    # The catalogue is scored whole: every revealed item was a candidate.
    assert results["realtime"]["retrieval_recall"] == {"share": 1.0, "reported": 40}


async def test_no_system_is_credited_with_an_item_only_the_future_describes() -> None:
    """Each event after the cut is on an item described only after it: nobody can list it."""
    records, before = _tiny_catalogue(users=40, items=6, future_items=True)
    config = ReplayConfig(cut=_cut_before(records, before), training=FAST)
    results = await replay(records, config)
    for name in SYSTEMS:
        assert results[name]["requests"] == 40
        assert results[name]["hit_rate@10"] == 0.0, name
        assert results[name]["ndcg@10"] == 0.0, name


# -- the batch baseline is a legacy feed; the JSON's shape; MovieLens end to end ---------


def _movielens_file(path: Path, *, users: int, movies: int, seed: int) -> int:
    """A MovieLens-format ``u.data`` with tastes (genres of movies) and a few bad lines."""
    rng = random.Random(seed)
    lines, t = [], 880_000_000
    for u in range(1, users + 1):
        taste = rng.randrange(6)
        t0 = t + rng.randrange(0, 86_400 * 60)
        for _ in range(rng.choice((3, 5, 8, 12, 20, 40))):
            genre = taste if rng.random() < 0.8 else rng.randrange(6)
            movie = 1 + genre + 6 * rng.randrange(movies // 6)
            rating = rng.choice((4, 5, 4.5)) if genre == taste else rng.choice((1, 2, 3, 3.5))
            t0 += rng.randrange(60, 86_400)
            lines.append(f"{u}\t{movie}\t{rating}\t{t0}")
    rng.shuffle(lines)  # MovieLens files are not in time order
    bad = ["1\t2\t5", "x\ty\tz\tw", "\t5\t4\t880000000"]
    for i, line in enumerate(bad):
        lines.insert(10 + 7 * i, line)
    path.write_text("\n".join(lines) + "\n")
    return len(bad)


def test_movielens_replay_end_to_end_serves_the_batch_from_a_legacy_feed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    ratings = tmp_path / "u.data"
    n_bad = _movielens_file(ratings, users=300, movies=120, seed=4)
    out, feed_dir = tmp_path / "replay.json", tmp_path / "feed"
    args = build_parser().parse_args(
        [
            "replay",
            "--dataset",
            f"movielens:{ratings}",
            "--epochs",
            "5",
            "--feed-dir",
            str(feed_dir),
            "--json",
            str(out),
        ]
    )
    assert args.func(args) == 0
    printed = capsys.readouterr().out
    assert f"{n_bad} bad lines skipped" in printed
    assert "bad line 11: expected 4 fields" in printed
    assert "realtime" in printed
    assert "freshness" in printed

    results = json.loads(out.read_text())
    assert set(results) == {*SYSTEMS, "protocol", "cohort_table"}
    for name in SYSTEMS:
        entry = results[name]
        assert {"hit_rate@10", "ndcg@10", "requests", "by_activity", "by_cohort"} <= set(entry)
        assert set(entry["by_activity"]) == set(BUCKETS)
        assert entry["requests"] == results["realtime"]["requests"] > 100
        assert set(entry["latency_ms"]) == {"p50", "p99"}
    assert results["realtime"]["freshness_ms"]["p50"] > 0
    assert results["batch"]["staleness_s"]["p50"] > 0
    assert results["popularity"]["staleness_s"]["p50"] > 0
    assert results["protocol"]["dataset"]["bad"] == n_bad

    feed = results["protocol"]["batch_feed"]
    path = Path(feed["path"])
    assert path.parent == feed_dir
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(lines) == feed["lines"] == feed["entries"] > 100
    assert feed["bad"] == 0
    assert all(line["surface"] == "default" and len(line["items"]) <= 60 for line in lines)
    assert {line["user"] for line in lines} <= {f"user-{u}" for u in range(1, 301)}
    # Known users got their list from the feed store; users it has no line for, popularity.
    assert feed["served"] + feed["fallback"] == results["batch"]["requests"]
    assert feed["served"] >= results["batch"]["by_cohort"]["known"]["requests"] > 0
    store = FeedStore(feed_dir / "store", isolate=False)
    try:
        entry = store.get("default", lines[0]["user"])
        assert entry is not None
        assert list(entry.items) == lines[0]["items"]
    finally:
        store.close()


async def test_the_batch_job_can_rerun_on_schedule_with_the_model_of_the_cut() -> None:
    records, before = _tiny_catalogue(users=40, items=6, future_items=False)
    every = 600.0  # events are a minute apart: a job every ten
    config = ReplayConfig(cut=_cut_before(records, before), training=FAST, batch_every_s=every)
    results = await replay(records, config)
    feed = results["protocol"]["batch_feed"]
    assert feed["jobs"] == 1 + (40 * 60) // 600
    assert feed["path"] is None  # a temporary directory, gone now
    assert results["batch"]["staleness_s"]["p99"] < every
    assert results["popularity"]["staleness_s"]["p99"] > every
    assert results["batch"]["hit_rate@10"] == 1.0


def test_write_feed_writes_the_legacy_format_and_skips_empty_lists(tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    lines = write_feed(path, {"u1": (["a", "b"], [0.5, 0.25]), "u2": ([], []), "u3": (["c"], [])})
    assert lines == 2
    assert [json.loads(line) for line in path.read_text().splitlines()] == [
        {"user": "u1", "surface": "default", "items": ["a", "b"], "scores": [0.5, 0.25]},
        {"user": "u3", "surface": "default", "items": ["c"]},
    ]
