"""Team-draft interleaving: the merge, credit of engagement, and the sequential test's
guarantees (no false verdict under "no difference" however often one looks; the interval
covers a known preference; a real preference is found)."""

from __future__ import annotations

import math
import random

import pytest

from legacy_adapter.interleaving import (
    LEGACY,
    NO_DATA,
    PREFER_LEGACY,
    PREFER_REALTIME,
    REALTIME,
    UNDECIDED,
    Impression,
    Interaction,
    activity_bucket,
    credit,
    judge,
    log_evidence,
    summarise,
    team_draft,
    win_share_sequence,
)

REAL = [f"r{n}" for n in range(10)]
OLD = [f"l{n}" for n in range(10)]


@pytest.mark.parametrize("seed", range(30))
def test_team_draft_alternates_fairly_and_keeps_each_lists_order(seed: int) -> None:
    rng = random.Random(seed)
    realtime = rng.sample(REAL + OLD, 10)
    legacy = rng.sample(REAL + OLD, 10)
    items, teams = team_draft(realtime, legacy, 10, random.Random(seed))

    assert len(items) == 10
    assert len(set(items)) == 10
    for n in range(1, len(teams) + 1):  # after every pick, the teams differ by at most one
        assert abs(teams[:n].count(REALTIME) - teams[:n].count(LEGACY)) <= 1
    for team, ranked in ((REALTIME, realtime), (LEGACY, legacy)):
        picked = [item for item, t in zip(items, teams, strict=True) if t == team]
        assert all(item in ranked for item in picked)
        assert picked == sorted(picked, key=ranked.index)  # each in its own list's order
        # A team picks its best item not yet taken: nothing it ranks higher is left out.
        for item in picked:
            better = ranked[: ranked.index(item)]
            assert all(b in items[: items.index(item)] for b in better)


def test_team_draft_of_equal_lists_is_that_list_and_fills_from_the_longer_one() -> None:
    assert team_draft(REAL, REAL, 10, random.Random(1))[0] == REAL
    items, teams = team_draft(["a"], ["b", "c", "d"], 4, random.Random(2))
    assert sorted(items) == ["a", "b", "c", "d"]
    assert teams.count(REALTIME) == 1
    assert team_draft(["a", "b"], ["b"], 5, random.Random(3))[0] in (["a", "b"], ["b", "a"])


def test_the_coin_gives_each_team_the_first_pick_half_the_time() -> None:
    firsts = [team_draft(REAL, OLD, 4, random.Random(seed))[1][0] for seed in range(4000)]
    assert abs(firsts.count(REALTIME) / 4000 - 0.5) < 0.03


def impression(request_id: str, user: str, ts: float) -> Impression:
    return Impression(
        request_id=request_id,
        user=user,
        ts=ts,
        teams={"r1": REALTIME, "r2": REALTIME, "l1": LEGACY, "l2": LEGACY},
    )


def click(user: str, item: str, ts: float, request_id: str | None = None) -> Interaction:
    return Interaction(user=user, item=item, type="click", ts=ts, request_id=request_id)


def test_credit_by_request_id_then_by_user_and_item_within_the_window() -> None:
    shown = [impression("a", "u", 100.0), impression("b", "u", 200.0), impression("c", "v", 100.0)]
    credits = credit(
        shown,
        [
            click("u", "r1", 250.0, request_id="a"),  # named: counts for a, not the later b
            click("u", "r1", 260.0, request_id="a"),  # the same item again: once
            click("u", "l1", 210.0),  # unnamed: the latest list of u holding it, b
            click("u", "zz", 210.0),  # in no list
            click("u", "l2", 150.0, request_id="unknown"),  # names a decision not interleaved
            click("v", "r2", 100.0 + 1800.0),  # at the window's end: counts
            click("v", "r1", 100.0 + 1800.5),  # past it: does not
            click("v", "l2", 100.0 - 4.0),  # a little before the decision (clock skew): counts
        ],
        window_s=1800.0,
    )
    assert (credits["a"].realtime, credits["a"].legacy, credits["a"].outcome) == (1, 0, "win")
    assert (credits["b"].realtime, credits["b"].legacy, credits["b"].outcome) == (0, 1, "loss")
    assert (credits["c"].realtime, credits["c"].legacy, credits["c"].outcome) == (1, 1, "tie")


def test_an_unnamed_click_goes_to_the_latest_list_showing_the_item() -> None:
    older = Impression(request_id="old", user="u", ts=100.0, teams={"x": LEGACY})
    newer = Impression(request_id="new", user="u", ts=200.0, teams={"y": REALTIME})
    credits = credit([older, newer], [click("u", "x", 300.0)], window_s=1000.0)
    assert credits["old"].legacy == 1
    assert credits["new"].outcome == "tie"


def test_judge_gives_counts_preference_interval_and_verdict() -> None:
    assert judge(0, 0, 7).verdict == NO_DATA
    assert judge(0, 0, 7).preference is None
    clear = judge(400, 200, 5000)
    assert clear.verdict == PREFER_REALTIME
    assert clear.impressions == 5600
    assert clear.preference == pytest.approx(200 / 600)
    assert clear.ci is not None
    assert 0 < clear.ci[0] < 200 / 600 < clear.ci[1] <= 1
    assert judge(200, 400, 0).verdict == PREFER_LEGACY
    assert judge(51, 49, 0).verdict == UNDECIDED
    with pytest.raises(ValueError, match="confidence"):
        judge(1, 1, 1, confidence=1.0)


@pytest.mark.parametrize(("wins", "losses"), [(3, 9), (60, 40), (5200, 4800), (1000, 0)])
def test_the_interval_is_where_the_evidence_stays_below_the_bar(wins: int, losses: int) -> None:
    alpha = 0.05
    low, high = win_share_sequence(wins, losses, alpha)
    bar = math.log(1 / alpha)
    for share in (low + 1e-6, (low + high) / 2, high - 1e-6):
        if 0 < share < 1:
            assert log_evidence(wins, losses, share) < bar
    for share in (low - 1e-3, high + 1e-3):
        if 0 < share < 1:
            assert log_evidence(wins, losses, share) >= bar


def test_looking_after_every_impression_under_no_difference_rarely_gives_a_verdict() -> None:
    """The guarantee that matters for a team reading the report every hour: with no
    preference, the chance of *ever* seeing a verdict is at most 1 - confidence."""
    rng = random.Random(11)
    bar = math.log(1 / 0.05)
    runs, false = 400, 0
    for _ in range(runs):
        wins = losses = 0
        for _ in range(3000):
            if rng.random() < 0.5:
                wins += 1
            else:
                losses += 1
            if log_evidence(wins, losses, 0.5) >= bar:
                false += 1
                break
    # At most 5% in expectation; 400 runs put a true 5% above 8% with probability < 0.5%.
    assert false / runs <= 0.08


def test_the_interval_covers_a_known_preference_at_every_look_and_finds_it() -> None:
    rng = random.Random(12)
    runs, missed, found = 150, 0, 0
    for _ in range(runs):
        wins = losses = 0
        covered = True
        for n in range(1, 3001):
            if rng.random() < 0.6:
                wins += 1
            else:
                losses += 1
            if n % 50 == 0:  # every 50th look (each look costs two bisections)
                low, high = win_share_sequence(wins, losses, 0.05)
                covered = covered and low <= 0.6 <= high
        missed += not covered
        found += judge(wins, losses, 0).verdict == PREFER_REALTIME
    assert missed / runs <= 0.08
    assert found == runs  # 3,000 decided impressions at a 60% win share: always found


def test_summarise_cuts_by_the_users_activity_when_served() -> None:
    shown = [impression("a", "new", 100.0), impression("b", "busy", 100.0)]
    histories = {
        "new": [click("new", "r1", 110.0)],
        "busy": [
            *(Interaction(user="busy", item=f"x{n}", type="view", ts=float(n)) for n in range(60)),
            click("busy", "l1", 120.0),
        ],
    }
    found = summarise(shown, histories, window_s=60.0)
    assert (found["wins"], found["losses"], found["ties"]) == (1, 1, 0)
    assert found["by_activity"]["<10"]["wins"] == 1
    assert found["by_activity"][">50"]["losses"] == 1
    assert found["by_activity"]["10-50"]["impressions"] == 0
    # Views are not engagement by default; named, they are.
    assert summarise(shown, histories, engagement_types=frozenset({"view"}))["wins"] == 0
    assert [activity_bucket(n) for n in (0, 9, 10, 50, 51)] == [
        "<10",
        "<10",
        "10-50",
        "10-50",
        ">50",
    ]
