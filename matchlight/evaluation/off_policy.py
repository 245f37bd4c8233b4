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

**Slates** (:class:`SlateRounds`) are estimated under the item-position model (Li et
al., 2018, "Offline evaluation of ranking policies with click models"): the reward
of an item at a slot depends on the item and the slot only, so a policy's expected
slate reward is ``Σ_j Σ_i P(i at j) · E[r | i at j]``, and each logged (item, slot)
is weighed by ``w = P_target(item at slot) / P_logging(item at slot)``, the
*marginal* probabilities a stochastic surface logs (:mod:`ranker.stochastic`). IPS
sums ``w · r`` over the slots; SNIPS normalises each slot by its mean weight; DR adds
the reward model's slate value. A round of single actions is a slate of one slot:
both go through the same arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from statistics import NormalDist
from typing import Final, Generic, TypeVar

import attrs
import numpy as np

#: Below this effective sample size the estimates are refused.
DEFAULT_MIN_ESS: Final = 100.0
ESTIMATORS: Final = ("ips", "snips", "dr")
#: An item, as policies' per-slot probabilities name it.
Item = TypeVar("Item", bound=Hashable)


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
class SlateRounds:
    """Logged slates: one row per round, one column per slot (pad a short slate with
    reward 0, logging 1 and target 0: a slot the round did not fill weighs nothing)."""

    #: The reward of the logged item at each slot (a click, an engagement: 0 or 1).
    reward: np.ndarray
    #: ``P_logging(logged item at its slot)``: a decision's ``position_propensities``.
    logging: np.ndarray
    #: ``P_target(logged item at its slot)``, e.g. by :func:`ranker.pipeline.slot_marginals`.
    target: np.ndarray
    #: The reward model's prediction for the logged item at each slot (for DR).
    model_logged: np.ndarray | None = None
    #: Per round, the reward model's expected slate reward under the target policy,
    #: ``Σ_j Σ_i P_target(i at j) · model(i, j)`` (for DR).
    model_target: np.ndarray | None = None
    #: Per round, the share of the target's slots it fills with items the logging policy
    #: never puts there (:func:`unsupported_share`).
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


def slates(rounds: Rounds | SlateRounds) -> SlateRounds:
    """``rounds`` as slates: a round of single actions is a slate of one slot.

    Raises:
        ValueError: the arrays of a slate log do not have one shape.
    """
    if isinstance(rounds, SlateRounds):
        shapes = {np.shape(a) for a in (rounds.reward, rounds.logging, rounds.target)}
        if rounds.model_logged is not None:
            shapes.add(np.shape(rounds.model_logged))
        if len(shapes) != 1 or len(next(iter(shapes))) != 2:
            raise ValueError(f"slate arrays must share one (rounds, slots) shape, got {shapes}")
        return rounds

    def column(values: np.ndarray | None) -> np.ndarray | None:
        return None if values is None else np.asarray(values, dtype=float).reshape(-1, 1)

    return SlateRounds(
        reward=np.asarray(rounds.reward, dtype=float).reshape(-1, 1),
        logging=np.asarray(rounds.logging, dtype=float).reshape(-1, 1),
        target=np.asarray(rounds.target, dtype=float).reshape(-1, 1),
        model_logged=column(rounds.model_logged),
        model_target=rounds.model_target,
        unsupported=rounds.unsupported,
    )


def weights(rounds: Rounds | SlateRounds) -> np.ndarray:
    """The importance weights ``target / logging`` (per round, or per round and slot)."""
    w: np.ndarray = np.asarray(rounds.target, dtype=float) / np.asarray(rounds.logging, dtype=float)
    return w


def effective_sample_size(w: np.ndarray) -> float:
    """Kish's ``(Σ w)² / Σ w²``; of slate weights (rounds by slots), the smallest slot's."""
    if w.ndim == 2:
        return min((effective_sample_size(w[:, j]) for j in range(w.shape[1])), default=0.0)
    total = float(w.sum())
    squares = float((w * w).sum())
    return total * total / squares if squares > 0 else 0.0


def unsupported_share(
    target: Mapping[Item, np.ndarray], logging: Mapping[Item, np.ndarray]
) -> float:
    """The share of a target policy's slots it fills with an item the logging policy never
    puts at that slot (in the same round).

    Both map each item a policy may serve to its probability at each slot (a
    row of :class:`ranker.stochastic.Marginals`; a fixed order is 1 at its
    item's slot); items absent from ``logging``, and slots past its rows, are
    never filled by it.
    """
    mass = missing = 0.0
    for item, row in target.items():
        row = np.asarray(row, dtype=float)
        logged = np.zeros(len(row))
        known = np.asarray(logging.get(item, ()), dtype=float)[: len(row)]
        logged[: len(known)] = known
        mass += float(row.sum())
        missing += float(row[logged <= 0].sum())
    return missing / mass if mass > 0 else 0.0


@attrs.frozen(kw_only=True)
class LoggedSlate(Generic[Item]):
    """One logged slate and what a replay knows of it (see :func:`slate_rounds`)."""

    #: The served items in slot order (a decision's ``items``).
    items: Sequence[Item]
    #: Each slot's logged ``P(item at slot)`` (a decision's ``position_propensities``).
    logging: Sequence[float]
    #: Each slot's reward (the engagement attributed to the decision).
    reward: Sequence[float]
    #: The target policy's probability of each item it may serve, at each slot.
    target: Mapping[Item, np.ndarray]
    #: The logging policy's, if the replay rebuilt it: then its support is checked.
    logged: Mapping[Item, np.ndarray] | None = None
    #: A reward model's prediction for each item (of both policies) at each slot, for DR.
    model: Mapping[Item, np.ndarray] | None = None


def slate_rounds(logged: Sequence[LoggedSlate[Item]]) -> SlateRounds:
    """The logged slates as :class:`SlateRounds`, each padded to the longest.

    A target's probabilities at slots past a slate's length are not weighed
    (nothing was logged there; given the ``logged`` table, the support check
    counts them as unsupported). Support is checked only if every slate has
    its ``logged`` table, and DR is possible only if every slate has a ``model``.
    """
    rounds, slots = len(logged), max((len(s.items) for s in logged), default=0)
    reward, target = np.zeros((rounds, slots)), np.zeros((rounds, slots))
    logging = np.ones((rounds, slots))
    checked = all(s.logged is not None for s in logged)
    modelled = all(s.model is not None for s in logged)
    unsupported, model_target = np.zeros(rounds), np.zeros(rounds)
    model_logged = np.zeros((rounds, slots))
    for t, s in enumerate(logged):
        n = len(s.items)
        reward[t, :n], logging[t, :n] = s.reward, s.logging
        target[t, :n] = [_at(s.target, item, j) for j, item in enumerate(s.items)]
        if s.logged is not None:
            unsupported[t] = unsupported_share(s.target, s.logged)
        if s.model is not None:
            model = s.model
            model_logged[t, :n] = [_at(model, item, j) for j, item in enumerate(s.items)]
            model_target[t] = sum(
                float(p) * _at(model, item, j)
                for item, row in s.target.items()
                for j, p in enumerate(row[:n])
            )
    return SlateRounds(
        reward=reward,
        logging=logging,
        target=target,
        model_logged=model_logged if modelled else None,
        model_target=model_target if modelled else None,
        unsupported=unsupported if checked else None,
    )


def _at(table: Mapping[Item, np.ndarray], item: Item, slot: int) -> float:
    """``table[item][slot]``, 0 for an item or slot the table does not have."""
    row = table.get(item)
    return 0.0 if row is None or slot >= len(row) else float(row[slot])


def support_problem(
    rounds: Rounds | SlateRounds, *, min_ess: float = DEFAULT_MIN_ESS
) -> str | None:
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
    rounds: Rounds | SlateRounds,
    estimator: str,
    *,
    confidence: float = 0.95,
    min_ess: float = DEFAULT_MIN_ESS,
) -> Estimate:
    """``estimator`` (``ips``, ``snips`` or ``dr``) of the target policy's mean reward per
    round (per slate: summed over its slots).

    The effective sample of a slate log is its thinnest slot's.

    Raises:
        ValueError: an unknown estimator, ``dr`` without a reward model, or slate arrays
            of different shapes.
    """
    if estimator not in ESTIMATORS:
        raise ValueError(f"unknown estimator {estimator!r} ({', '.join(ESTIMATORS)})")
    log = slates(rounds)
    w = weights(log)
    n = len(w)
    ess = effective_sample_size(w) if n else 0.0
    problem = support_problem(log, min_ess=min_ess)
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
    r = np.asarray(log.reward, dtype=float)
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    if estimator == "ips":
        terms = (w * r).sum(axis=1)
        value, half = float(terms.mean()), z * float(terms.std(ddof=1)) / math.sqrt(n)
    elif estimator == "snips":
        # Each slot normalised by its mean weight (1 in expectation where supported).
        mean_w = w.mean(axis=0)
        ratio = np.divide((w * r).mean(axis=0), mean_w, out=np.zeros_like(mean_w), where=mean_w > 0)
        value = float(ratio.sum())
        # Delta method: each round's influence Σ_j w (r - V_j) / E[w_j]; Var ≈ E[ψ²] / n.
        influence = np.divide(w * (r - ratio), mean_w, out=np.zeros_like(w), where=mean_w > 0).sum(
            axis=1
        )
        half = z * math.sqrt(float(np.mean(influence**2)) / n)
    else:
        if log.model_logged is None or log.model_target is None:
            raise ValueError("dr needs a reward model (model_logged and model_target)")
        correction = (w * (r - np.asarray(log.model_logged))).sum(axis=1)
        terms = np.asarray(log.model_target).reshape(-1) + correction
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
