"""The migration router in-process: canary buckets, state persistence and config precedence,
fallback when the real-time path fails, shadow sampling, and what each mode serves."""

from __future__ import annotations

import json
import re
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from legacy_adapter import (
    FeedEntry,
    MigrationError,
    RealtimeUnavailable,
    Router,
    canary_bucket,
    check_migration,
    load_migration_config,
    open_router,
    read_migration_state,
)
from ranker import DecisionLog, Recommendation, RecommendRequest, RequestError, Surfaces


class FakeFeed:
    """A feed with one list per user on every surface (the FeedStore read API)."""

    snapshot = "snap-test"
    entries = 0

    def __init__(self, users: set[str]) -> None:
        self.users = users

    def get(self, surface: str, user: str) -> FeedEntry | None:
        if user not in self.users:
            return None
        return FeedEntry(items=("f1", "f2", "f3"), scores=None)


@attrs.define
class FakeRanker:
    """Answers like a RankerActor; ``fail`` makes it raise, ``stall`` makes it miss deadlines."""

    surfaces: Surfaces = attrs.field(factory=Surfaces)
    fail: BaseException | None = None
    stall: bool = False
    calls: int = 0
    #: Whether each request asked was for a list shown as ranked.
    shown: list[bool] = attrs.field(factory=list)

    async def recommend(self, request: RecommendRequest) -> Recommendation:
        self.calls += 1
        self.shown.append(request.shown)
        if self.stall:
            await trio.sleep(10)
        if self.fail is not None:
            raise self.fail
        return Recommendation(
            items=[{"id": "r1", "score": 1.0}, {"id": "r2", "score": 0.5}],
            source="realtime",
            model=None,
            ranker="heuristic",
            surface="default",
            request_id="rid",
            matched=2,
            candidates=2,
        )


def running_router(tmp_path: Path, ranker: FakeRanker) -> AbstractAsyncContextManager[Router]:
    """A running router over ``ranker`` and a feed that holds u1 only."""
    return open_router(
        ranker,  # type: ignore[arg-type]
        FakeFeed({"u1"}),  # type: ignore[arg-type]
        data_dir=tmp_path,
        comparisons=None,
    )


def router(tmp_path: Path, ranker: FakeRanker | None = None, users: set[str] | None = None) -> Any:
    return Router(
        ranker or FakeRanker(),  # type: ignore[arg-type]
        FakeFeed(users if users is not None else {"u1", "u2"}),  # type: ignore[arg-type]
        data_dir=tmp_path,
        comparisons=None,
    )


def req(user: str = "u1", surface: str = "home") -> RecommendRequest:
    return RecommendRequest(user=user, surface=surface, k=2)


def test_canary_buckets_are_stable_and_spread() -> None:
    assert canary_bucket("u1", "home") == canary_bucket("u1", "home")
    assert canary_bucket("u1", "home") != canary_bucket("u1", "jobs")
    buckets = [canary_bucket(f"u{n}", "home") for n in range(10_000)]
    assert all(0.0 <= b < 100.0 for b in buckets)
    assert 2700 < sum(b < 30 for b in buckets) < 3300  # about 30% below 30


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"mode": "fast"}, "home.mode: expected one of"),
        ({"mode": "canary"}, "home.percent: canary needs"),
        ({"mode": "canary", "percent": -1}, "home.percent: must lie in [0, 100]"),
        ({"mode": "live", "deadline_ms": 70_000}, "home.deadline_ms: must lie in"),
        ({"mode": "shadow", "shadow_share": 2}, "home.shadow_share: must lie in [0, 1]"),
        ({"mode": "live", "reverse_shadow": "yes"}, "home.reverse_shadow: expected true"),
        ({"mode": "live", "speed": 1}, "home.speed: unknown field"),
    ],
)
def test_bad_changes_name_the_field(raw: dict[str, Any], message: str) -> None:
    with pytest.raises(MigrationError, match=re.escape(message)):
        check_migration("home", raw, "home")


def test_state_persists_and_a_config_entry_applies_only_when_it_changes(tmp_path: Path) -> None:
    first = router(tmp_path)
    first.apply_config({"home": {"mode": "canary", "percent": 20}})
    assert first.migration("home").origin == "config"
    first.set_migration("home", {"mode": "live"})

    again = router(tmp_path)  # a restart: state from migration.json
    again.apply_config({"home": {"mode": "canary", "percent": 20}})
    assert again.migration("home").mode == "live"  # the RPC change stands
    again.apply_config({"home": {"mode": "shadow"}})  # the config entry changed: it applies
    assert again.migration("home").mode == "shadow"
    assert json.loads((tmp_path / "migration.json").read_text())["surfaces"]["home"]["mode"] == (
        "shadow"
    )
    assert again.migration("never-set").mode == "legacy"


def test_a_state_saved_by_set_migration_reads_back_unchanged(tmp_path: Path) -> None:
    first = router(tmp_path)
    first.apply_config({"jobs": {"mode": "shadow", "shadow_share": 0.5}})
    first.set_migration("home", {"mode": "canary", "percent": 12.5, "deadline_ms": 80})

    states, applied = read_migration_state(tmp_path / "migration.json") or ({}, {})

    assert states == {"home": first.migration("home"), "jobs": first.migration("jobs")}
    assert applied == {"jobs": {"mode": "shadow", "shadow_share": 0.5}}


def surfaces(home: dict[str, Any]) -> str:
    return json.dumps({"surfaces": {"home": home}})


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (
            surfaces({"mode": "banana", "percent": 500}),
            "surfaces.home.mode: expected one of legacy, shadow, canary, interleave, live, "
            "got 'banana'",
        ),
        (surfaces({"mode": "canary", "percent": 500}), "surfaces.home.percent: must lie in"),
        (surfaces({"mode": "canary"}), "surfaces.home.percent: canary needs"),
        (surfaces({"mode": "live", "deadline_ms": -1}), "surfaces.home.deadline_ms: must lie"),
        (surfaces({"mode": "live", "colour": "red"}), "surfaces.home.colour: unknown field"),
        (surfaces({"mode": "live", "origin": "moon"}), "surfaces.home.origin: expected one of"),
        (surfaces({"mode": "live", "updated": "now"}), "surfaces.home.updated: expected a time"),
        (json.dumps({"surfaces": {"home": "live"}}), "surfaces.home: expected an object"),
        (json.dumps({"surfaces": []}), "surfaces: expected an object"),
        (json.dumps({"config_applied": {"home": {"mode": "x"}}}), "config_applied.home.mode"),
        (json.dumps({"colour": 1}), "colour: unknown field"),
        (json.dumps([1]), "expected an object"),
        ("{cut short", "not JSON"),
    ],
)
def test_a_bad_state_file_refuses_to_load_naming_the_file_and_field(
    tmp_path: Path, content: str, message: str
) -> None:
    (tmp_path / "migration.json").write_text(content)
    expected = re.escape(f"{tmp_path / 'migration.json'}: {message}")

    with pytest.raises(MigrationError, match=expected):
        read_migration_state(tmp_path / "migration.json")
    with pytest.raises(MigrationError, match=expected):
        router(tmp_path)


def test_a_migration_table_is_read_from_the_config_file(tmp_path: Path) -> None:
    config = tmp_path / "surfaces.toml"
    config.write_text('[surfaces.home]\nk = 5\n[migration.home]\nmode = "live"\n')
    assert load_migration_config(config) == {"home": {"mode": "live"}}
    config.write_text('[migration.home]\nmode = "upside-down"\n')
    with pytest.raises(MigrationError, match=r"migration\.home\.mode"):
        load_migration_config(config)


async def test_each_mode_serves_its_path(tmp_path: Path) -> None:
    ranker = FakeRanker()
    async with running_router(tmp_path, ranker) as r:
        legacy = await r.recommend(req())
        assert legacy["source"] == "legacy"
        assert [i["id"] for i in legacy["items"]] == ["f1", "f2"]
        missing = await r.recommend(req("nobody"))
        assert (missing["source"], missing["feed_missing"]) == ("realtime", True)

        r.set_migration("home", {"mode": "shadow"})
        calls = ranker.calls
        assert (await r.recommend(req()))["source"] == "legacy"
        await trio.testing.wait_all_tasks_blocked()
        assert ranker.calls == calls + 1  # the shadow ran off the request path

        r.set_migration("home", {"mode": "shadow", "shadow_share": 0.0})
        calls = ranker.calls
        await r.recommend(req())
        await trio.testing.wait_all_tasks_blocked()
        assert ranker.calls == calls  # sampled out

        r.set_migration("home", {"mode": "live"})
        assert (await r.recommend(req()))["source"] == "realtime"


async def test_live_falls_back_to_the_feed_on_errors_and_deadlines(tmp_path: Path) -> None:
    ranker = FakeRanker(fail=RuntimeError("model exploded"))
    async with running_router(tmp_path, ranker) as r:
        r.set_migration("home", {"mode": "live", "deadline_ms": 20})
        answer = await r.recommend(req())
        assert answer["source"] == "fallback"
        assert "model exploded" in answer["fallback_reason"]
        with pytest.raises(RealtimeUnavailable):
            await r.recommend(req("nobody"))  # nothing to fall back on

        ranker.fail, ranker.stall = None, True
        answer = await r.recommend(req())
        assert answer["source"] == "fallback"
        assert "deadline" in answer["fallback_reason"]

        ranker.stall, ranker.fail = False, RequestError("filter: unknown field")
        with pytest.raises(RequestError):  # a bad request is not a real-time failure
            await r.recommend(req())
        assert r.statistics().fallbacks == 3


async def test_interleave_merges_both_lists_for_the_share_in_it_and_records_the_teams(
    tmp_path: Path,
) -> None:
    users = {f"u{n}" for n in range(40)}
    log = DecisionLog(tmp_path / "comparisons")
    async with open_router(
        FakeRanker(),  # type: ignore[arg-type]
        FakeFeed(users),  # type: ignore[arg-type]
        data_dir=tmp_path,
        comparisons=log,
    ) as r:
        with pytest.raises(MigrationError, match="interleave needs the share"):
            r.set_migration("home", {"mode": "interleave"})
        r.set_migration("home", {"mode": "interleave", "percent": 50})
        answers = {user: await r.recommend(req(user)) for user in sorted(users)}
        absent = await r.recommend(req("nobody"))
        await r.flush()
    inside = {user for user in users if canary_bucket(user, "home") < 50}
    assert 0 < len(inside) < len(users)
    for user, answer in answers.items():
        ids = [item["id"] for item in answer["items"]]
        if user in inside:
            assert answer["source"] == "interleaved"
            # one pick each from r1, r2 and f1, f2 (k = 2): a real-time and a legacy item
            assert len(ids) == 2
            assert {ids[0][0], ids[1][0]} == {"r", "f"}
        else:
            assert (answer["source"], ids) == ("legacy", ["f1", "f2"])
    assert absent["source"] == "realtime"  # not in the feed: real time alone, no impression
    records = [rec for rec in log.read() if rec["kind"] == "interleaving"]
    log.close()
    assert {rec["user"] for rec in records} == inside
    for rec in records:
        assert rec["items"] == [i["id"] for i in answers[rec["user"]]["items"]]
        assert rec["teams"] == ["realtime" if i[0] == "r" else "legacy" for i in rec["items"]]
        assert rec["request_id"] == answers[rec["user"]]["request_id"]
    assert r.statistics().served["interleaved"] == len(inside)


async def test_interleave_falls_back_to_the_feed_when_real_time_fails(tmp_path: Path) -> None:
    async with running_router(tmp_path, FakeRanker(fail=RuntimeError("boom"))) as r:
        r.set_migration("home", {"mode": "interleave", "percent": 100})
        answer = await r.recommend(req())
        assert answer["source"] == "fallback"
        assert "boom" in answer["fallback_reason"]


async def test_only_lists_shown_as_ranked_are_asked_for_as_shown(tmp_path: Path) -> None:
    """The decision log marks shadows and interleaved sides (an off-policy estimate leaves
    them out): the router says which requests those are."""
    ranker = FakeRanker()
    async with running_router(tmp_path, ranker) as r:
        for mode in ("shadow", "interleave", "live"):
            r.set_migration("home", {"mode": mode, "percent": 100})
            await r.recommend(req())
            await trio.testing.wait_all_tasks_blocked()
    assert ranker.shown == [False, False, True]
