"""Off-policy estimators on generated logs whose answer is known, and the Open Bandit
check on small logs written here (nothing is downloaded)."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from matchlight.evaluation.off_policy import ESTIMATORS, Rounds, estimate
from matchlight.evaluation.open_bandit import ITEMS, MEMBERS, cross_checks, load_logs

#: Click probability of each of 5 actions, the logging and the target policy.
CLICK = np.array([0.05, 0.10, 0.20, 0.30, 0.40])
LOGGING = np.array([0.40, 0.25, 0.15, 0.10, 0.10])
TARGET = np.array([0.05, 0.10, 0.15, 0.30, 0.40])
TRUTH = float(TARGET @ CLICK)


def simulated(rng: np.random.Generator, n: int, *, model: np.ndarray | None = None) -> Rounds:
    """``n`` rounds of the logging policy; DR's reward model is ``model`` (per action)."""
    actions = rng.choice(len(LOGGING), size=n, p=LOGGING)
    rewards = (rng.random(n) < CLICK[actions]).astype(float)
    model = np.full(len(CLICK), 0.5) if model is None else model
    return Rounds(
        reward=rewards,
        logging=LOGGING[actions],
        target=TARGET[actions],
        model_logged=model[actions],
        model_target=np.full(n, float(TARGET @ model)),
    )


@pytest.mark.parametrize("estimator", ESTIMATORS)
def test_intervals_cover_the_true_value_at_about_their_level(estimator: str) -> None:
    rng = np.random.default_rng(7)
    runs = 400
    covered = 0
    values = []
    for _ in range(runs):
        e = estimate(simulated(rng, 2_000), estimator, confidence=0.95)
        assert e.refused is None
        covered += e.ci_low <= TRUTH <= e.ci_high
        values.append(e.value)
    # 95 % intervals: over 400 runs, coverage within about 3 binomial standard errors.
    assert 0.91 <= covered / runs <= 0.99, covered / runs
    # And centred on the truth (unbiased, or nearly for SNIPS): the mean within 4 s.e.
    assert abs(np.mean(values) - TRUTH) < 4 * np.std(values) / math.sqrt(runs)


def test_with_a_right_reward_model_dr_is_tighter_than_ips() -> None:
    rounds = simulated(np.random.default_rng(3), 5_000, model=CLICK)
    dr, ips = estimate(rounds, "dr"), estimate(rounds, "ips")
    assert dr.ci_high - dr.ci_low < 0.9 * (ips.ci_high - ips.ci_low)


def test_a_target_the_log_does_not_support_is_refused_with_the_reason() -> None:
    rng = np.random.default_rng(1)
    rounds = simulated(rng, 1_000)
    unsupported = Rounds(
        reward=rounds.reward,
        logging=rounds.logging,
        target=rounds.target,
        unsupported=np.full(1_000, 0.2),
    )
    e = estimate(unsupported, "ips")
    assert e.refused is not None
    assert "never takes" in e.refused
    assert math.isnan(e.value)
    # A target far from the logging policy leaves too small an effective sample.
    far = Rounds(
        reward=rounds.reward,
        logging=np.full(1_000, 0.001),
        target=np.where(np.arange(1_000) < 5, 1.0, 0.0),
    )
    refused = estimate(far, "snips").refused
    assert refused is not None
    assert "effective sample" in refused


def _write_log(path: Path, rows: list[tuple[int, int, int, float]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["", "timestamp", "item_id", "position", "click", "propensity_score"])
        for n, (item, position, click, propensity) in enumerate(rows):
            writer.writerow([n, "2019-11-24", item, position, click, propensity])


def _fixture(root: Path, n: int = 6_000) -> None:
    """An unpacked obp wheel: a uniform log, and a log of a policy that favours low items
    (its propensities as it would log them), clicks more likely on low items."""
    rng = np.random.default_rng(11)
    favour = np.exp(-np.arange(ITEMS) / 20.0)
    favour /= favour.sum()
    click = 0.02 + 0.1 * np.exp(-np.arange(ITEMS) / 10.0)
    uniform = [
        (int(i), int(p), int(rng.random() < click[i]), 1 / ITEMS)
        for i, p in zip(rng.integers(0, ITEMS, n), rng.integers(1, 4, n), strict=True)
    ]
    favoured = [
        (int(i), int(p), int(rng.random() < click[i]), float(favour[i]))
        for i, p in zip(rng.choice(ITEMS, n, p=favour), rng.integers(1, 4, n), strict=True)
    ]
    _write_log(root / MEMBERS["random"], uniform)
    _write_log(root / MEMBERS["bts"], favoured)


def test_each_policy_is_estimated_from_the_others_log(tmp_path: Path) -> None:
    _fixture(tmp_path)
    checks = {c.target: c for c in cross_checks(load_logs(tmp_path))}
    assert set(checks) == {"bts", "random"}
    for check in checks.values():
        for e in check.estimates:
            assert e.refused is None, e
            # The generated policies are stationary: every interval covers the on-policy rate
            # of the other log or comes close (a 6,000-round log).
            assert e.ci_low - 0.01 <= check.on_policy <= e.ci_high + 0.01, (check.target, e)
    assert checks["bts"].on_policy > checks["random"].on_policy


def test_evaluate_prints_the_estimates_and_refuses_a_bad_level(tmp_path: Path) -> None:
    _fixture(tmp_path, n=3_000)
    command = [sys.executable, "-m", "matchlight.cli", "evaluate", "--open-bandit"]
    done = subprocess.run(
        [*command, "--wheel", str(tmp_path), "--json", str(tmp_path / "out.json")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "bts policy, estimated from the random policy's log" in done.stdout
    assert (tmp_path / "out.json").exists()
    bad = subprocess.run(
        [*command, "--wheel", str(tmp_path), "--confidence", "2"],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert bad.returncode == 2
    assert "between 0 and 1" in bad.stderr
