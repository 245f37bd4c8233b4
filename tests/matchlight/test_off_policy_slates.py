"""Slate estimators on generated logs whose answer is known: a Plackett-Luce logging
policy, a candidate policy and an item-position click model, the candidate's true
engagement computed exactly from its per-slot probabilities."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from matchlight.evaluation.off_policy import (
    ESTIMATORS,
    LoggedSlate,
    Rounds,
    SlateRounds,
    estimate,
    slate_rounds,
    unsupported_share,
)
from ranker.stochastic import marginals

SLOTS = 3
#: Click probability of item i at slot j: its attraction times the slot's examination.
ATTRACTION = np.array([0.30, 0.25, 0.20, 0.15, 0.10, 0.05])
EXAMINATION = np.array([1.0, 0.6, 0.35])
CLICK = ATTRACTION[:, None] * EXAMINATION[None, :]
#: Log-weights of the logging policy (favours the first items) and of the candidate
#: (favours the middle ones): both Plackett-Luce over all 6 items.
LOGGING = np.array([0.0, -0.3, -0.6, -0.9, -1.2, -1.5])
CANDIDATE = np.array([-1.0, 0.0, -0.2, 0.0, -0.8, -2.0])
LOGGED_TABLE = marginals(LOGGING, SLOTS)
CANDIDATE_TABLE = marginals(CANDIDATE, SLOTS)
#: The candidate's expected clicks per slate.
TRUTH = float((CANDIDATE_TABLE * CLICK).sum())


def test_the_truth_is_the_expectation_over_every_slate_the_candidate_draws() -> None:
    w = np.exp(CANDIDATE)
    total = 0.0
    for slate in itertools.permutations(range(len(w)), SLOTS):
        p, left = 1.0, float(w.sum())
        for i in slate:
            p *= w[i] / left
            left -= w[i]
        total += p * sum(CLICK[i, j] for j, i in enumerate(slate))
    assert pytest.approx(total, rel=1e-12) == TRUTH


def drawn(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` slates of the logging policy (Gumbel-max: a Plackett-Luce draw) and their clicks."""
    keys = LOGGING + rng.gumbel(size=(n, len(LOGGING)))
    items = np.argsort(-keys, axis=1)[:, :SLOTS]
    clicks = (rng.random((n, SLOTS)) < CLICK[items, np.arange(SLOTS)]).astype(float)
    return items, clicks


def as_rounds(items: np.ndarray, clicks: np.ndarray, model: np.ndarray) -> SlateRounds:
    """The logged slates weighed for the candidate; DR's reward model is ``model`` (per item
    and slot)."""
    slot = np.arange(SLOTS)
    return SlateRounds(
        reward=clicks,
        logging=LOGGED_TABLE[items, slot],
        target=CANDIDATE_TABLE[items, slot],
        model_logged=model[items, slot],
        model_target=np.full(len(items), float((CANDIDATE_TABLE * model).sum())),
        unsupported=np.zeros(len(items)),
    )


def simulated(rng: np.random.Generator, n: int, model: np.ndarray) -> SlateRounds:
    return as_rounds(*drawn(rng, n), model)


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_slate_intervals_cover_the_candidates_true_engagement_at_about_their_level(
    estimator: str,
) -> None:
    rng = np.random.default_rng(17)
    wrong_model = np.full_like(CLICK, 0.1)  # DR must hold up with a wrong reward model
    runs = 400
    covered = 0
    values = []
    for _ in range(runs):
        e = estimate(simulated(rng, 2_000, wrong_model), estimator, confidence=0.95)
        assert e.refused is None, e
        covered += e.ci_low <= TRUTH <= e.ci_high
        values.append(e.value)
    # 95 % intervals: over 400 runs, coverage within about 3 binomial standard errors.
    assert 0.91 <= covered / runs <= 0.99, covered / runs
    assert abs(np.mean(values) - TRUTH) < 4 * np.std(values) / math.sqrt(runs)


def test_with_a_right_reward_model_slate_dr_is_tighter_than_ips() -> None:
    """Only a little here: the policies are close, and the clicks' own noise dominates."""
    rounds = simulated(np.random.default_rng(2), 5_000, CLICK)
    dr, ips = estimate(rounds, "dr"), estimate(rounds, "ips")

    assert dr.ci_high - dr.ci_low < ips.ci_high - ips.ci_low


def test_a_fixed_order_log_cannot_estimate_a_different_candidate() -> None:
    """A deterministic logging policy shows items 0, 1, 2 at slots 0, 1, 2 and nothing else:
    the candidate's mass elsewhere cannot be weighed, and the estimate says so."""
    rng = np.random.default_rng(4)
    n = 3_000
    fixed = {i: np.eye(SLOTS)[i] for i in range(SLOTS)}
    candidate = dict(enumerate(CANDIDATE_TABLE))
    share = unsupported_share(candidate, fixed)
    assert share == pytest.approx(1 - np.trace(CANDIDATE_TABLE[:SLOTS]) / SLOTS)
    slot = np.arange(SLOTS)
    rounds = SlateRounds(
        reward=(rng.random((n, SLOTS)) < CLICK[slot, slot]).astype(float),
        logging=np.ones((n, SLOTS)),
        target=np.tile(CANDIDATE_TABLE[slot, slot], (n, 1)),
        unsupported=np.full(n, share),
    )

    for estimator in ("ips", "snips"):
        e = estimate(rounds, estimator)
        assert e.refused is not None
        assert "never takes" in e.refused
        assert math.isnan(e.value)
    # The same candidate is supported by the Plackett-Luce log.
    assert unsupported_share(candidate, dict(enumerate(LOGGED_TABLE))) == 0.0
    # And a fixed-order candidate equal to the logging policy is fully supported.
    assert unsupported_share(fixed, fixed) == 0.0


def test_a_thin_slot_refuses_the_estimate_with_its_effective_sample() -> None:
    rounds = simulated(np.random.default_rng(8), 1_000, CLICK)
    target = rounds.target.copy()
    target[:, 2] = np.where(np.arange(1_000) < 3, 50.0, 0.0)  # one slot weighs 3 rounds

    e = estimate(SlateRounds(reward=rounds.reward, logging=rounds.logging, target=target), "ips")

    assert e.refused is not None
    assert "effective sample of" in e.refused
    assert e.ess < 5


def test_single_action_rounds_are_slates_of_one_slot() -> None:
    rng = np.random.default_rng(6)
    n = 500
    rounds = Rounds(
        reward=(rng.random(n) < 0.3).astype(float),
        logging=rng.uniform(0.2, 0.8, n),
        target=rng.uniform(0.2, 0.8, n),
        model_logged=np.full(n, 0.25),
        model_target=np.full(n, 0.3),
    )
    as_slates = SlateRounds(
        reward=rounds.reward[:, None],
        logging=rounds.logging[:, None],
        target=rounds.target[:, None],
        model_logged=np.full((n, 1), 0.25),
        model_target=rounds.model_target,
    )

    for estimator in ESTIMATORS:
        assert estimate(rounds, estimator) == estimate(as_slates, estimator)


def test_slate_arrays_of_different_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="one \\(rounds, slots\\) shape"):
        estimate(
            SlateRounds(reward=np.zeros((4, 3)), logging=np.ones((4, 2)), target=np.ones((4, 3))),
            "ips",
        )


def test_logged_slates_become_the_rounds_a_replay_would_build_by_hand() -> None:
    """Items by name, as decisions log them; the tables as a replay gives them."""
    names = [f"item-{i}" for i in range(len(LOGGING))]
    candidate = dict(zip(names, CANDIDATE_TABLE, strict=True))
    logged_table = dict(zip(names, LOGGED_TABLE, strict=True))
    model = dict(zip(names, CLICK, strict=True))
    items, clicks = drawn(np.random.default_rng(9), 300)
    by_hand = as_rounds(items, clicks, CLICK)
    slates = [
        LoggedSlate(
            items=[names[i] for i in items[t]],
            logging=by_hand.logging[t].tolist(),
            reward=clicks[t].tolist(),
            target=candidate,
            logged=logged_table,
            model=model,
        )
        for t in range(300)
    ]

    rounds = slate_rounds(slates)

    np.testing.assert_array_equal(rounds.target, by_hand.target)
    np.testing.assert_allclose(rounds.model_logged, by_hand.model_logged)  # type: ignore[arg-type]
    np.testing.assert_allclose(rounds.model_target, by_hand.model_target)  # type: ignore[arg-type]
    assert rounds.unsupported is not None
    assert not rounds.unsupported.any()
    assert estimate(rounds, "dr").value == pytest.approx(estimate(by_hand, "dr").value)


def test_a_short_slate_is_padded_and_a_slate_without_its_logged_table_is_not_checked() -> None:
    fixed = {"a": np.array([1.0, 0.0]), "b": np.array([0.0, 1.0])}
    short = LoggedSlate(items=["a"], logging=[1.0], reward=[1.0], target=fixed, logged=fixed)
    full = LoggedSlate(items=["a", "b"], logging=[1.0, 1.0], reward=[0.0, 1.0], target=fixed)

    rounds = slate_rounds([short, full])

    assert rounds.reward.tolist() == [[1.0, 0.0], [0.0, 1.0]]
    assert rounds.logging.tolist() == [[1.0, 1.0], [1.0, 1.0]]
    assert rounds.target.tolist() == [[1.0, 0.0], [1.0, 1.0]]
    assert rounds.unsupported is None  # the second slate has no logged table
    assert rounds.model_logged is None
    assert rounds.model_target is None
