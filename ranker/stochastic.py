"""Stochastic slates: Plackett-Luce draws whose per-slot probabilities are exact.

A surface with a ``stochastic`` table (:class:`ranker.policy.Stochastic`)
serves a random slate, so that every served slate carries the probabilities
an off-policy estimate needs, not only the exploration slots. Diversity
chooses the ``pool`` best candidates it allows; the slots are drawn from them
by Plackett-Luce: one at a time, each remaining candidate with probability
proportional to its weight ``exp(z / temperature)``, ``z`` its score
standardised over all the request's candidates. :func:`draw` samples with
the Gumbel-max trick (the order of ``log w + Gumbel noise`` is a
Plackett-Luce draw), seeded by the caller.

Two probabilities are logged per slot ``j`` holding item ``i``:

- the *marginal* ``P(i at j)``, summed over every prefix that could come
  before it: what item-position off-policy estimators divide by;
- the *conditional* ``P(i at j | the items before it)``; their product is the
  probability of the whole slate.

The marginals have no closed form. :func:`marginals` computes them exactly
by dynamic programming over the subsets of the pool: ``P(the first m slots
hold the set S)`` grows one item at a time, ``P(S + i) = Σ P(S) w_i / W(not
S)``, and the item at slot ``m`` is ``i`` with ``Σ_{|S| = m, i ∉ S} P(S) w_i /
W(not S)``: ``2 ** pool`` states, vectorised with numpy by subset size. On
the 2-core dev machine, for 10 slots, it costs 0.035 ms for a pool of 8,
0.06 ms for 10, 0.13 ms for 12 (the default at ``k`` 10) and 0.46 ms for 14,
the largest pool allowed (:data:`ranker.policy.MAX_STOCHASTIC_POOL`); a whole
draw (:func:`serve`: seeding, weights, sampling, both probabilities) 0.21 ms
at the default. See README.md for the command.

:func:`position_marginals` gives the same probabilities for any policy
(``None``: the fixed order, probability 1 at each item's slot), so a replay
can weigh a logged slate by a candidate policy: ``P_candidate(i at j) /
P_logged(i at j)``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Final

import attrs
import numpy as np
import numpy.typing as npt

from ranker.policy import MAX_STOCHASTIC_POOL, Stochastic

Floats = npt.NDArray[np.float64]
Indices = npt.NDArray[np.intp]

#: Log-weights more than this far below the best are raised to it: every pool item keeps a
#: probability (at most about 4e-18 per slot there), and no sum of weights underflows to 0.
LOG_WEIGHT_FLOOR: Final = -40.0


@attrs.frozen(kw_only=True, eq=False)
class Marginals:
    """A ranking policy's probability of each candidate at each slot.

    ``probability[r, j]`` is ``P(candidate positions[r] at slot j)``; a
    candidate not in ``positions`` is never served. Each slot's column sums
    to 1 (while there are candidates for it); a row sums to the probability
    that candidate is served at all.
    """

    #: Candidate positions (indices into the request's candidates), one per row.
    positions: tuple[int, ...]
    probability: Floats

    @property
    def slots(self) -> int:
        return int(self.probability.shape[1])

    def of(self, position: int) -> Floats:
        """The probability of candidate ``position`` at each slot (zeros if never served)."""
        try:
            row: Floats = self.probability[self.positions.index(position)]
        except ValueError:
            row = np.zeros(self.slots)
        return row


@attrs.frozen(kw_only=True, eq=False)
class Slate:
    """A served stochastic slate and its exact probabilities, per slot."""

    #: The served candidate positions, in slot order.
    positions: list[int]
    #: ``P(its item at this slot)``, over every prefix.
    marginal: list[float]
    #: ``P(its item at this slot | the items in the slots before)``.
    conditional: list[float]
    #: The policy's marginals over every candidate it could have served.
    marginals: Marginals

    def served(self, position: int) -> float:
        """The probability that candidate ``position`` is served in any slot."""
        return float(self.marginals.of(position).sum())


def log_weights(score: Floats, pool: Sequence[int], temperature: float) -> Floats:
    """Plackett-Luce log-weights of the ``pool`` candidates: their scores standardised over
    all of ``score``, divided by ``temperature``, less the best's, floored at
    :data:`LOG_WEIGHT_FLOOR` (all 0 when every candidate scores the same)."""
    std = float(score.std()) if len(score) else 0.0
    if not std > 1e-12:
        return np.zeros(len(pool))
    # Standardised less the best's: the mean cancels, so only the deviation is needed.
    z = score[np.asarray(pool, dtype=np.intp)] / (std * temperature)
    out: Floats = np.maximum(z - z.max(), LOG_WEIGHT_FLOOR)
    return out


def draw(log_w: Floats, count: int, rng: np.random.Generator) -> Indices:
    """``count`` indices into ``log_w`` drawn by Plackett-Luce without replacement, in order.

    The order of ``log_w`` plus independent standard Gumbel noise is
    exactly a Plackett-Luce draw with weights ``exp(log_w)``.
    """
    keys = log_w + rng.gumbel(size=len(log_w))
    order: Indices = np.argsort(-keys, kind="stable")[:count]
    return order


def conditionals(log_w: Floats, drawn: Indices) -> Floats:
    """``P(drawn[j] at slot j | drawn[:j] before it)`` for each slot ``j``."""
    w = np.exp(log_w)
    left = np.ones(len(w), dtype=bool)
    left[drawn] = False
    # Each slot's remaining weight as a sum of positive terms, never a difference (a tiny
    # remainder must not vanish in cancellation): the undrawn plus the drawn from j on.
    remaining = float(w[left].sum()) + np.cumsum(w[drawn][::-1])[::-1]
    out: Floats = w[drawn] / remaining
    return out


@functools.cache
def _subsets(n: int) -> tuple[Floats, list[tuple[Indices, Indices, Floats]]]:
    """For a pool of ``n``: every subset's membership (``2 ** n`` rows, bit ``i`` of a row's
    index is item ``i``), and per subset size its subsets, their neighbours one item
    away (``S ^ (1 << i)`` for each ``i``) and which items they lack.

    Built once per process and pool size: 1.6 ms and 1.2 MiB for 12, 5-6 ms and
    5.4 MiB for 14.
    """
    masks = np.arange(1 << n)
    inside = ((masks[:, None] >> np.arange(n)) & 1).astype(bool)
    size = inside.sum(axis=1)
    layers = []
    for m in range(n + 1):
        subsets = np.flatnonzero(size == m)
        neighbours = subsets[:, None] ^ (1 << np.arange(n))
        layers.append((subsets, neighbours, (~inside[subsets]).astype(np.float64)))
    return inside.astype(np.float64), layers


def marginals(log_w: Floats, slots: int) -> Floats:
    """``P(item i at slot j)`` under Plackett-Luce with weights ``exp(log_w)``, exactly.

    Returns an ``(items, slots)`` array; ``slots`` is at most the number of
    items, which is at most :data:`ranker.policy.MAX_STOCHASTIC_POOL`.
    About 0.13 ms for 12 items and 10 slots (see the module docstring).

    Raises:
        ValueError: too many items, or more slots than items.
    """
    n = len(log_w)
    if n > MAX_STOCHASTIC_POOL or slots > n:
        raise ValueError(
            f"cannot compute {slots} slots over {n} items: at most {MAX_STOCHASTIC_POOL} "
            "items, and no more slots than items"
        )
    w = np.exp(log_w)
    inside, layers = _subsets(n)
    # W(not S) by the complement's subset: subsets are numbered by bits, so the complement
    # of S is the reverse index. A sum of weights, never a difference (no cancellation).
    rest = (inside @ w)[::-1]
    # r[S] = P(the first |S| slots hold S) / W(not S); 0 for subsets not reached yet.
    r = np.zeros(1 << n)
    out = np.empty((n, slots))
    reach = np.ones(1)
    for m in range(slots):
        subsets, neighbours, lacking = layers[m]
        if m:
            # P(S) = Σ_{i ∈ S} r[S - i] w_i. The neighbours S + i (i ∉ S) have a size not
            # reached yet, where r is still 0: summing over every i needs no mask.
            reach = r[neighbours] @ w
        r[subsets] = reach / rest[subsets]
        out[:, m] = w * (r[subsets] @ lacking)
    return out


def position_marginals(
    chosen: Sequence[int], k: int, score: Floats, policy: Stochastic | None
) -> Marginals:
    """The probability of each candidate at each of ``k`` slots under a policy.

    ``chosen`` are the candidate positions diversity selected, best first (at
    least ``k``, or ``policy.pool`` if more, when there are that many);
    ``score`` the scores of every candidate. With ``policy`` ``None`` (the
    fixed order) the first ``k`` are served in order, each with probability
    1 at its slot; with a :class:`~ranker.policy.Stochastic` policy the first
    ``pool`` are drawn by Plackett-Luce into the first slots and any slots
    after them take the next ones in order. Pure: a replay calls it with a
    candidate surface's policy to weigh a logged slate.
    """
    head = 0 if policy is None else min(policy.pool, len(chosen))
    served = min(max(k, head), len(chosen))
    slots = min(k, served)
    probability = np.zeros((served, slots))
    if policy is not None and head:
        drawn = min(head, slots)
        log_w = log_weights(score, chosen[:head], policy.temperature)
        probability[:head, :drawn] = marginals(log_w, drawn)
    # The slots after the pool's take the next candidates in order.
    tail = np.arange(head, slots)
    probability[tail, tail] = 1.0
    return Marginals(positions=tuple(int(p) for p in chosen[:served]), probability=probability)


def serve(
    chosen: Sequence[int], k: int, score: Floats, policy: Stochastic, rng: np.random.Generator
) -> Slate:
    """Draw the slate of ``k`` slots from ``chosen`` (see :func:`position_marginals`), with
    each slot's marginal and conditional probability."""
    policy_marginals = position_marginals(chosen, k, score, policy)
    head = min(policy.pool, len(chosen), k)
    pool = list(chosen[: min(policy.pool, len(chosen))])
    log_w = log_weights(score, pool, policy.temperature)
    drawn = draw(log_w, head, rng)
    slots = policy_marginals.slots
    positions = [int(pool[i]) for i in drawn.tolist()] + [int(p) for p in chosen[head:slots]]
    rows = [policy_marginals.positions.index(p) for p in positions]
    return Slate(
        positions=positions,
        marginal=[float(policy_marginals.probability[r, j]) for j, r in enumerate(rows)],
        conditional=conditionals(log_w, drawn).tolist() + [1.0] * (slots - head),
        marginals=policy_marginals,
    )
