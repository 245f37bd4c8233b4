"""The stages of a recommendation, as pure functions over candidate arrays.

Candidates are the index's internal ids (``docs``, a sorted ``uint32``
array); every stage works on numpy arrays aligned with them, so a request
over 1,000 candidates costs microseconds per stage. No Trio, no I/O:
:mod:`ranker.actor` gathers the inputs (user state, model, index) and runs
the stages in order:

:func:`retrieve` → :func:`score` → :func:`apply_rules` → (:func:`reciprocal`)
→ :func:`select` (diversity) → :func:`explore` (Thompson sampling).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs
import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

from actors import ItemSignals
from index import Index, Query, to_bitmap
from ranker.policy import Blend, Diversity, Exploration, Reciprocal

Docs = npt.NDArray[np.uint32]
Floats = npt.NDArray[np.float64]

#: Share of the retrieved candidates that are the newest matches (cold items get a chance).
NEWEST_SHARE: Final = 0.25
#: Share retrieved through the user's favourite terms.
PERSONAL_SHARE: Final = 0.25
#: How many of the user's favourite terms feed retrieval and the affinity part.
AFFINITY_TERMS: Final = 16
#: Recency: an item's latest interaction loses half its weight in this time.
RECENCY_HALF_LIFE_S: Final = 24 * 3600.0
#: Counters that count as a success for Thompson sampling, and as trials.
SUCCESS_TYPES: Final = ("click", "like", "save", "hire", "accept")
TRIAL_TYPE: Final = "view"
PROPENSITY_DRAWS: Final = 32


def to_docs(bitmap: BitMap) -> Docs:
    return np.frombuffer(bitmap.to_array(), dtype=np.uint32) if bitmap else np.empty(0, np.uint32)


# -- retrieval ------------------------------------------------------------------------


def retrieve(
    index: Index,
    signals: ItemSignals,
    query: Query,
    *,
    limit: int,
    exclude: BitMap,
    favourite_terms: Sequence[tuple[str, str]] = (),
    popular: Sequence[BitMap] = (),
) -> tuple[Docs, int]:
    """Up to ``limit`` candidates matching ``query``, not in ``exclude``; and how many matched.

    When more match than ``limit``, the candidates are the most popular
    matches, plus the newest (:data:`NEWEST_SHARE`) and the most popular of
    those carrying the user's favourite terms (:data:`PERSONAL_SHARE`).
    ``popular`` are nested tiers of the most popular items (smallest first,
    see :class:`PopularTiers`): the most popular matches are looked for in
    the smallest tier holding enough of them, not among every match.

    Raises:
        QueryError: the query names a field the index does not have.
    """
    matches = index.match(query)
    if exclude:
        matches -= exclude
    total = len(matches)
    if total <= limit:
        return to_docs(matches), total
    chosen = BitMap()
    newest = int(limit * NEWEST_SHARE)
    if newest:
        chosen |= matches[total - newest :]
    personal = int(limit * PERSONAL_SHARE)
    if personal and favourite_terms:
        mine = BitMap.union(*(index.term_postings(f, v) for f, v in favourite_terms)) & matches
        chosen |= _most_popular(signals, mine - chosen, personal, popular)
    chosen |= _most_popular(signals, matches - chosen, limit - len(chosen), popular)
    return to_docs(chosen), total


def _most_popular(
    signals: ItemSignals, pool: BitMap, n: int, tiers: Sequence[BitMap] = ()
) -> BitMap:
    if n <= 0 or not pool:
        return BitMap()
    if len(pool) <= n:
        return pool
    for tier in tiers:
        if pool.intersection_cardinality(tier) >= n:
            pool = pool & tier
            break
    docs = to_docs(pool)
    top = np.argpartition(-signals.levels(docs), n - 1)[:n]
    return to_bitmap(docs[top])


class PopularTiers:
    """Nested sets of the most popular searchable items, recomputed at most every ``max_age_s``.

    The most popular matches of a broad query are almost always among the
    most popular items overall; looking there first saves ranking every
    match. The tiers may be up to ``max_age_s`` old (popularity moves
    slowly); within a tier, candidates are still ranked by current popularity.
    """

    def __init__(self, sizes: Sequence[int] = (4096, 32768), max_age_s: float = 5.0) -> None:
        self.sizes = tuple(sorted(sizes))
        self.max_age_s = max_age_s
        self._tiers: list[BitMap] = []
        self._at = -math.inf

    def get(self, index: Index, signals: ItemSignals, now: float) -> list[BitMap]:
        """The tiers as of ``now`` (a monotonic clock), recomputed if older than ``max_age_s``."""
        if now - self._at > self.max_age_s:
            live = to_docs(index.live)
            negated = -signals.levels(live)
            self._tiers = [
                to_bitmap(live[np.argpartition(negated, size - 1)[:size]])
                for size in self.sizes
                if size < len(live)
            ]
            self._at = now
        return self._tiers


# -- scoring --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Scored:
    """Candidates with their blended score and each weighted part (aligned arrays)."""

    docs: Docs
    score: Floats
    parts: Mapping[str, Floats]


#: Standardised parts are clipped at this many standard deviations ...
CLIP_Z: Final = 3.0
#: ... and what lies beyond counts this much, so the clip never turns an order into a tie.
EXCESS_WEIGHT: Final = 1e-3


def standardise(values: Floats) -> Floats:
    """``(x - mean) / std`` over the candidates, softly clipped at ±:data:`CLIP_Z`.

    The clip keeps one heavy-tailed part (popularity follows a power law) from
    drowning the others: without it the single most popular item scored 9
    standard deviations and outranked every item the user had shown a taste
    for. Beyond the clip a z-score still counts :data:`EXCESS_WEIGHT` per unit,
    so the transform stays strictly increasing: ranking by one part alone (the
    model on the default surface) keeps its order at the top. All zeros when
    every candidate is equal.
    """
    if len(values) == 0:
        return values
    std = float(values.std())
    if not std > 1e-12:
        return np.zeros(len(values))
    z = (values - values.mean()) / std
    clipped = np.clip(z, -CLIP_Z, CLIP_Z)
    out: Floats = clipped + EXCESS_WEIGHT * (z - clipped)
    return out


def affinity_part(index: Index, docs: Docs, affinity: Sequence[tuple[str, str, float]]) -> Floats:
    """For each candidate, the sum of the user's affinity over the terms it carries."""
    out = np.zeros(len(docs))
    if not len(docs) or not affinity:
        return out
    within = to_bitmap(docs)
    for field, value, weight in affinity:
        hits = index.term_postings(field, value) & within
        if hits:
            out[np.searchsorted(docs, to_docs(hits))] += weight
    return out


def score(
    docs: Docs,
    blend: Blend,
    *,
    model_scores: Floats | None,
    popularity: Floats,
    last_interaction: Floats,
    affinity: Floats,
    now: float,
) -> Scored:
    """Blend the parts: each is standardised over the candidates, then weighted.

    Parts without weight (and the model part without model scores) are left out.
    """
    raw: dict[str, tuple[float, Callable[[], Floats]]] = {
        "popularity": (blend.popularity, lambda: np.log1p(np.maximum(popularity, 0.0))),
        "recency": (
            blend.recency,
            lambda: np.where(
                last_interaction > 0,
                np.exp2(-np.maximum(now - last_interaction, 0.0) / RECENCY_HALF_LIFE_S),
                0.0,
            ),
        ),
        "affinity": (blend.affinity, lambda: affinity),
    }
    if model_scores is not None:
        raw["model"] = (blend.model, lambda: model_scores)
    total = np.zeros(len(docs))
    parts = {}
    for name, (weight, values) in raw.items():
        if weight:
            part = weight * standardise(values().astype(np.float64, copy=False))
            parts[name] = part
            total += part
    return Scored(docs=docs, score=total, parts=parts)


# -- rules ----------------------------------------------------------------------------


def apply_rules(
    index: Index, docs: Docs, score: Floats, rules: Sequence[tuple[str, str, Query, float]]
) -> dict[int, list[str]]:
    """Add ``weight`` to the score of candidates matching each boost, subtract for bury.

    ``rules`` are ``(name, action, query, weight)``; ``score`` changes in place.
    Returns, per candidate position, the names of the rules that moved it.

    Raises:
        QueryError: a rule names a field the index does not have.
    """
    effects: dict[int, list[str]] = {}
    if not len(docs) or not rules:
        return effects
    within = to_bitmap(docs)
    for name, action, query, weight in rules:
        hits = index.match(query, within)
        if not hits:
            continue
        positions = np.searchsorted(docs, to_docs(hits))
        score[positions] += weight if action == "boost" else -weight
        for p in positions.tolist():
            effects.setdefault(p, []).append(
                f"{action} {name} {'+' if action == 'boost' else '-'}{weight:g}"
            )
    return effects


# -- two-sided matching ---------------------------------------------------------------


def willingness(
    affinities: Sequence[Mapping[str, float]], job_terms: Sequence[str], policy: Reciprocal
) -> Floats:
    """Each supplier's probability of wanting a job with ``job_terms`` (``field=value`` keys).

    The logistic of the prior's log-odds plus ``strength`` times the mean of
    the supplier's time-decayed affinity over the job's terms: accepting jobs
    with those terms raises it, declining them lowers it, and a supplier
    without history gets the prior.
    """
    prior = math.log(policy.prior / (1.0 - policy.prior))
    out = np.empty(len(affinities))
    n = max(len(job_terms), 1)
    for i, affinity in enumerate(affinities):
        evidence = sum(affinity.get(term, 0.0) for term in job_terms) / n
        out[i] = prior + policy.strength * evidence
    return 1.0 / (1.0 + np.exp(-out))


def interest(score: Floats) -> Floats:
    """The consumer's interest as the score's percentile among the candidates, in (0, 1]."""
    n = len(score)
    if n == 0:
        return score
    ranks = np.empty(n)
    ranks[np.argsort(score, kind="stable")] = np.arange(1, n + 1)
    return ranks / n


def harmonic_mean(a: Floats, b: Floats) -> Floats:
    total = a + b
    return np.where(total > 0, 2.0 * a * b / np.where(total > 0, total, 1.0), 0.0)


# -- diversity and selection ----------------------------------------------------------


def ranked(docs: Docs, score: Floats) -> npt.NDArray[np.intp]:
    """Candidate positions by score, best first; ties by internal id (first seen first).

    ``docs`` is sorted, so a stable sort of the negated scores breaks ties by id.
    """
    order: npt.NDArray[np.intp] = np.argsort(-score, kind="stable")
    return order


def select(
    order: npt.NDArray[np.intp],
    k: int,
    diversity: Diversity,
    values_of: Any,
    *,
    score: Floats,
    embeddings: npt.NDArray[np.float32] | None = None,
) -> tuple[list[int], dict[int, str]]:
    """Choose ``k`` positions in score ``order``, respecting the diversity policy.

    ``values_of(position)`` gives the candidate's values of the diversity field.
    With ``diversity.mmr`` and ``embeddings`` (aligned with positions),
    candidates are picked by maximal marginal relevance among the best
    ``10 * k``: ``(1 - mmr) * relevance - mmr * max cosine similarity`` to
    those already picked. Returns the chosen positions and notes per
    position: why it was skipped, or how similar an MMR pick was to earlier ones.
    """
    notes: dict[int, str] = {}
    cap, field = diversity.max_per_value, diversity.field
    counts: dict[str, int] = {}

    def allowed(p: int) -> bool:
        if cap is None:
            return True
        values = values_of(p)
        full = [v for v in values if counts.get(v, 0) >= cap]
        if full:
            notes[p] = f"diversity: already {cap} with {field}={full[0]}"
            return False
        return True

    def take(p: int) -> None:
        if cap is not None:
            for v in values_of(p):
                counts[v] = counts.get(v, 0) + 1

    chosen: list[int] = []
    if k <= 0:
        return chosen, notes
    if diversity.mmr > 0 and embeddings is not None and len(order):
        pool = order[: 10 * k]
        vectors = embeddings[pool].astype(np.float64)
        norms = np.linalg.norm(vectors, axis=1)
        vectors /= np.where(norms > 0, norms, 1.0)[:, None]
        rel = score[pool]
        spread = rel.max() - rel.min()
        rel = (rel - rel.min()) / spread if spread > 0 else np.ones(len(pool))
        max_sim = np.full(len(pool), -1.0)
        open_ = np.ones(len(pool), dtype=bool)
        lam = diversity.mmr
        while len(chosen) < k and open_.any():
            value = np.where(open_, (1 - lam) * rel - lam * np.maximum(max_sim, 0.0), -np.inf)
            best = int(np.argmax(value))
            open_[best] = False
            p = int(pool[best])
            if not allowed(p):
                continue
            if max_sim[best] > 0:
                notes[p] = f"diversity: mmr similarity {max_sim[best]:.2f}"
            take(p)
            chosen.append(p)
            max_sim = np.maximum(max_sim, vectors @ vectors[best])
        return chosen, notes
    for p in order.tolist():
        if len(chosen) == k:
            break
        if allowed(p):
            take(p)
            chosen.append(p)
    return chosen, notes


# -- exploration ----------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Explored:
    #: The final positions in slot order.
    positions: list[int]
    #: Per position: the probability it was served (1 for exploited items).
    propensity: dict[int, float]
    #: Per explored position: its Thompson draw.
    draws: dict[int, float]


def explore(
    order: npt.NDArray[np.intp],
    exploit: list[int],
    k: int,
    policy: Exploration,
    successes: Floats,
    trials: Floats,
    rng: np.random.Generator,
) -> Explored:
    """Give ``share * k`` slots (rounded half up) to Thompson sampling on item counters.

    Each candidate among the next :attr:`~Exploration.pool` best not already
    exploited draws a success rate from ``Beta(1 + successes, 1 + failures)``
    (failures = trials - successes, at least 0); the highest draws take the
    exploration slots, at seeded random positions. An explored item's
    propensity is the share of :data:`PROPENSITY_DRAWS` further draws in which
    it would have been explored too.
    """
    slots = min(int(policy.share * k + 0.5), k)
    pool = np.empty(0, dtype=np.intp)
    if slots:
        taken = np.zeros(len(order), dtype=bool)
        taken[exploit] = True
        pool = order[~taken[order]][: policy.pool]
    if slots == 0 or len(pool) == 0:
        positions = exploit[:k]
        return Explored(positions=positions, propensity=dict.fromkeys(positions, 1.0), draws={})
    slots = min(slots, len(pool))
    keep = exploit[: k - slots]
    a = 1.0 + successes[pool]
    b = 1.0 + np.maximum(trials[pool] - successes[pool], 0.0)
    # Row 0 decides; the other rows estimate how often each item would have been explored.
    sampled = rng.beta(a, b, size=(PROPENSITY_DRAWS + 1, len(pool)))
    draws, resampled = sampled[0], sampled[1:]
    picked = np.argsort(-draws, kind="stable")[:slots]
    winners = np.argpartition(-resampled, slots - 1, axis=1)[:, :slots]
    counts = np.bincount(winners.ravel(), minlength=len(pool))
    positions = list(keep)
    propensity = dict.fromkeys(keep, 1.0)
    explored = {}
    at = sorted(rng.choice(len(keep) + slots, size=slots, replace=False).tolist())
    for slot, j in zip(at, picked.tolist(), strict=True):
        p = int(pool[j])
        positions.insert(slot, p)
        # At least one draw in PROPENSITY_DRAWS: it *was* explored.
        propensity[p] = max(float(counts[j]), 1.0) / PROPENSITY_DRAWS
        explored[p] = float(draws[j])
    return Explored(positions=positions, propensity=propensity, draws=explored)
