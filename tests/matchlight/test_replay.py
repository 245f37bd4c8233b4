"""The synthetic marketplace and the prequential replay: real time vs nightly batch."""

from __future__ import annotations

from collections import Counter

import trio

from matchlight.replay import ReplayConfig, bucket_of, format_table, replay
from matchlight.synthetic import MarketplaceConfig, generate
from ranker import TrainingConfig

SMALL = MarketplaceConfig(consumers=1500, pros=500, seed=11)


def test_the_marketplace_is_the_same_for_a_seed_and_differs_across_seeds() -> None:
    assert generate(SMALL).records == generate(SMALL).records
    other = generate(MarketplaceConfig(consumers=1500, pros=500, seed=12))
    assert other.records != generate(SMALL).records


def test_the_marketplace_is_in_time_order_with_items_before_their_events() -> None:
    market = generate(SMALL)
    times = [body["ts"] for kind, body in market.records if kind == "event"]
    assert times == sorted(times)
    described: set[str] = set()
    for kind, body in market.records:
        if kind == "item":
            described.add(body["id"])
        else:
            assert body["item"] in described


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
