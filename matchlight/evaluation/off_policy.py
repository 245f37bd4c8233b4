"""Off-policy estimates: how a *target* policy would have done, from another policy's log.

Each logged round holds the reward of the action the logging policy took, that action's
probability under the logging policy (its propensity) and under the target policy, and,
for the doubly robust estimate, a reward model's prediction for the logged action and
its expectation under the target policy. The estimators (Dudík, Langford and Li, 2011;
Swaminathan and Joachims, 2015):

- **IPS**: the mean of ``w · r``, ``w = target / logging``: unbiased where the logging
  policy gives the target's actions support, high variance when ``w`` is large;
- **SNIPS**: ``Σ w·r / Σ w``: a little biased, far less variance;
- **DR**: the reward model's value plus the IPS-weighted error of the model on the
  logged action: unbiased if either the propensities or the model are right.

Each comes with a normal-approximation confidence interval (for SNIPS by the delta
method) and the effective sample size ``(Σ w)² / Σ w²`` (Kish): how many on-policy
rounds the weighted log is worth. :func:`estimate` refuses, with the reason, where
the log cannot say: target actions the logging policy never takes, or too small an
effective sample.
"""

from __future__ import annotations

import math
from statistics import NormalDist
from typing import Final

import attrs
import numpy as np

#: Below this effective sample size the estimates are refused.
DEFAULT_MIN_ESS: Final = 100.0
ESTIMATORS: Final = ("ips", "snips", "dr")


@attrs.frozen(kw_only=True)
class Rounds:
    """Logged rounds, one entry per round in each array."""

    reward: np.ndarray
    #: The logged action's probability under the logging policy.
    logging: np.ndarray
    #: The logged action's probability under the target policy.
    target: np.ndarray
    #: The reward model's prediction for the logged action (for DR).
    model_logged: np.ndarray | None = None
    #: The reward model's expected reward under the target policy (for DR).
    model_target: np.ndarray | None = None
    #: Probability mass the target policy puts on actions the logging policy never takes
    #: in that round (0 where the logging policy is known to cover every action).
    unsupported: np.ndarray | None = None


@attrs.frozen(kw_only=True)
class Estimate:
    estimator: str
    value: float
    ci_low: float
    ci_high: float
    confidence: float
    #: Effective sample size of the importance weights.
    ess: float
    rounds: int
    #: Why no estimate is given (``value`` and the interval are NaN then).
    refused: str | None = None

    def view(self) -> dict[str, object]:
        return attrs.asdict(self)


def weights(rounds: Rounds) -> np.ndarray:
    """The importance weights ``target / logging``."""
    w: np.ndarray = np.asarray(rounds.target, dtype=float) / np.asarray(rounds.logging, dtype=float)
    return w


def effective_sample_size(w: np.ndarray) -> float:
    total = float(w.sum())
    squares = float((w * w).sum())
    return total * total / squares if squares > 0 else 0.0


def support_problem(rounds: Rounds, *, min_ess: float = DEFAULT_MIN_ESS) -> str | None:
    """Why the log cannot estimate the target policy, or ``None``."""
    if len(rounds.reward) == 0:
        return "the log has no rounds"
    if np.any(np.asarray(rounds.logging) <= 0):
        return "some logged propensities are 0: the log is not from the stated policy"
    if rounds.unsupported is not None:
        missing = float(np.mean(rounds.unsupported))
        if missing > 0.01:
            return (
                f"the target policy puts {missing:.1%} of its choices on actions the logging "
                "policy never takes: those rounds cannot be weighed"
            )
    ess = effective_sample_size(weights(rounds))
    if ess < min_ess:
        return (
            f"the importance weights leave an effective sample of {ess:.0f} rounds (under "
            f"{min_ess:.0f}): the target policy is too far from the logging policy here"
        )
    return None


def estimate(
    rounds: Rounds,
    estimator: str,
    *,
    confidence: float = 0.95,
    min_ess: float = DEFAULT_MIN_ESS,
) -> Estimate:
    """``estimator`` (``ips``, ``snips`` or ``dr``) of the target policy's mean reward.

    Raises:
        ValueError: an unknown estimator, or ``dr`` without a reward model.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r} ({', '.join(ESTIMATORS)})")
    w = weights(rounds)
    n = len(w)
    ess = effective_sample_size(w) if n else 0.0
    problem = support_problem(rounds, min_ess=min_ess)
    if problem is not None:
        nan = math.nan
        return Estimate(
            estimator=estimator,
            value=nan,
            ci_low=nan,
            ci_high=nan,
            confidence=confidence,
            ess=ess,
            rounds=n,
            refused=problem,
        )
    r = np.asarray(rounds.reward, dtype=float)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    if estimator == "ips":
        terms = w * r
        value, half = float(terms.mean()), z * float(terms.std(ddof=1)) / math.sqrt(n)
    elif estimator == "snips":
        value = float((w * r).sum() / w.sum())
        # Delta method: Var ≈ E[w² (r - V)²] / (n E[w]²).
        spread = float(np.mean(w * w * (r - value) ** 2)) / float(w.mean()) ** 2
        half = z * math.sqrt(spread / n)
    else:
        if rounds.model_logged is None or rounds.model_target is None:
            raise ValueError("dr needs a reward model (model_logged and model_target)")
        terms = np.asarray(rounds.model_target) + w * (r - np.asarray(rounds.model_logged))
        value, half = float(terms.mean()), z * float(terms.std(ddof=1)) / math.sqrt(n)
    return Estimate(
        estimator=estimator,
        value=value,
        ci_low=value - half,
        ci_high=value + half,
        confidence=confidence,
        ess=ess,
        rounds=n,
    )
