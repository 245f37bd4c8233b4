"""The stages of a recommendation, as pure functions over candidate arrays.

Candidates are the index's internal ids (``docs``, a sorted ``uint32``
array); every stage works on numpy arrays aligned with them, so a request
over 1,000 candidates costs microseconds per stage. No Trio, no I/O:
:mod:`ranker.actor` gathers the inputs (user state, model, index) and runs
the stages in order:

:func:`retrieve` → :func:`score` → :func:`apply_rules` → (on a two-sided surface,
:mod:`ranker.two_sided`) → :func:`select` (diversity) → :func:`explore`
(Thompson sampling); on a stochastic surface, :func:`select` then a
Plackett-Luce draw (:mod:`ranker.stochastic`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final

import attrs
import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

from actors import ItemSignals, Recent
from actors.cooccurrence import MIN_TYPE_WEIGHT
from actors.user import OTHER_TYPE_WEIGHT, TYPE_WEIGHTS
from index import Index, Query, to_bitmap
from ranker.policy import CLIP_Z, Blend, Diversity, Exploration

Docs = npt.NDArray[np.uint32]
Floats = npt.NDArray[np.float64]

#: Share of the retrieved candidates that co-occur most with the user's recent items.
RELATED_SHARE: Final = 0.3
#: Share that are the newest matches nobody engaged with yet (cold items get a chance).
NEWEST_SHARE: Final = 0.1
#: Share retrieved through the user's favourite terms (the most popular carrying them).
PERSONAL_SHARE: Final = 0.2
#: Matches up to this many times the candidate limit are all scored (cheaper than choosing).
SCORE_WHOLE: Final = 2
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
    related: tuple[Docs, Floats] | None = None,
) -> tuple[Docs, int]:
    """Candidates matching ``query``, not in ``exclude``; and how many matched.

    Up to :data:`SCORE_WHOLE` times ``limit`` matches are all candidates.
    Beyond that, ``limit`` of them from several sources, unioned: the matches
    most ``related`` to the user's recent items (``(docs, scores)`` sorted by
    id, :data:`RELATED_SHARE`), the newest matches nobody engaged with yet
    (:data:`NEWEST_SHARE`), the most popular of those carrying the user's
    favourite terms (:data:`PERSONAL_SHARE`), and the most popular matches.
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
    if total <= SCORE_WHOLE * limit:
        return to_docs(matches), total
    chosen = BitMap()
    if related is not None and len(related[0]):
        chosen |= _most_related(related, matches, int(limit * RELATED_SHARE))
    newest = int(limit * NEWEST_SHARE)
    if newest:
        cold = matches - signals.engaged
        chosen |= cold[max(len(cold) - newest, 0) :]
    personal = int(limit * PERSONAL_SHARE)
    if personal and favourite_terms:
        mine = BitMap.union(*(index.term_postings(f, v) for f, v in favourite_terms)) & matches
        chosen |= _most_popular(signals, mine - chosen, personal, popular)
    chosen |= _most_popular(signals, matches - chosen, limit - len(chosen), popular)
    return to_docs(chosen), total


def _most_related(related: tuple[Docs, Floats], matches: BitMap, n: int) -> BitMap:
    """The ``n`` matches with the highest related scores (ties by id)."""
    docs, scores = related
    inside = to_bitmap(docs) & matches
    if n <= 0 or not inside:
        return BitMap()
    if len(inside) <= n:
        return inside
    found = to_docs(inside)
    values = scores[np.searchsorted(docs, found)]
    return to_bitmap(found[np.argsort(-values, kind="stable")[:n]])


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


#: The sizes of the popular tiers (:func:`popular_tiers`), smallest first.
TIER_SIZES: Final = (4096, 32768)


def popular_tiers(
    index: Index, signals: ItemSignals, sizes: Sequence[int] = TIER_SIZES
) -> list[BitMap]:
    """Nested sets of the most popular searchable items, one per size (ascending) smaller
    than the catalogue: a function of the index and signals alone."""
    live = to_docs(index.live)
    negated = -signals.levels(live)
    return [
        to_bitmap(live[np.argpartition(negated, size - 1)[:size]])
        for size in sizes
        if size < len(live)
    ]


class PopularTiers:
    """:func:`popular_tiers`, recomputed at most every ``max_age_s``.

    The most popular matches of a broad query are almost always among the
    most popular items overall; looking there first saves ranking every
    match. The tiers may be up to ``max_age_s`` old (popularity moves
    slowly); within a tier, candidates are still ranked by current popularity.
    ``seq`` is the log position of the projections they were computed from (a
    decision records it, so a replay computes the same tiers there).
    """

    def __init__(self, sizes: Sequence[int] = TIER_SIZES, max_age_s: float = 5.0) -> None:
        self.sizes = tuple(sorted(sizes))
        self.max_age_s = max_age_s
        self._tiers: list[BitMap] = []
        self._at = -math.inf
        self.seq = 0

    def get(self, index: Index, signals: ItemSignals, now: float, seq: int) -> list[BitMap]:
        """The tiers as of ``now`` (a monotonic clock), recomputed from the index and signals
        (at log position ``seq``) if older than ``max_age_s``."""
        if now - self._at > self.max_age_s:
            self._tiers = popular_tiers(index, signals, self.sizes)
            self._at = now
            self.seq = seq
        return self._tiers


# -- the user's recent engagements ----------------------------------------------------


def favourites(affinity: Mapping[str, float]) -> list[tuple[str, str, float]]:
    """The user's strongest positive terms as ``(field, value, affinity)``, strongest first
    (``affinity`` as :func:`actors.user.affinity_at` gives it: strongest first), at most
    :data:`AFFINITY_TERMS`."""
    out = []
    for key, value in affinity.items():
        if value > 0:
            field, _, term = key.partition("=")
            out.append((field, term, value))
            if len(out) == AFFINITY_TERMS:
                break
    return out


#: How many of the user's latest engagements feed the fold-in and co-occurrence ...
#: (a few recent ones carry the signal: on MovieLens, 5 gave 0.116 hit@10 and 10 gave 0.108).
RECENT_ENGAGEMENTS: Final = 5
#: ... each weighing half as much per this time before the newest of them.
SESSION_HALF_LIFE_S: Final = 24 * 3600.0


def recent_engagements(
    recent: Sequence[Recent],
    doc_of: Callable[[str], int | None],
    *,
    limit: int = RECENT_ENGAGEMENTS,
    half_life: float = SESSION_HALF_LIFE_S,
) -> tuple[Docs, Floats]:
    """The items of the user's latest engagements (distinct, newest first) and their weights.

    Engagements are interactions weighing at least
    :data:`actors.cooccurrence.MIN_TYPE_WEIGHT` (clicks and stronger: views
    say little, and dismissals are excluded from the candidates instead). A
    weight is the type's times ``2 ** -(age / half_life)``, the age counted
    from the newest engagement, not from now: a user back after a month still
    has their last session, at full strength (and no weight underflows).
    """
    weights: dict[int, float] = {}
    newest = None
    for entry in reversed(recent):
        type_weight = TYPE_WEIGHTS.get(entry.type, OTHER_TYPE_WEIGHT)
        if type_weight < MIN_TYPE_WEIGHT:
            continue
        doc = doc_of(entry.item)
        if doc is None:
            continue
        if newest is None:
            newest = entry.ts
        weight = type_weight * math.exp2(-max(newest - entry.ts, 0.0) / half_life)
        weights[doc] = weights.get(doc, 0.0) + weight
        if len(weights) == limit:
            break
    docs = np.fromiter(weights.keys(), dtype=np.uint32, count=len(weights))
    return docs, np.fromiter(weights.values(), dtype=np.float64, count=len(weights))


def fold_in(
    user_vector: npt.NDArray[np.float32],
    item_vectors: npt.NDArray[np.float32],
    weights: Floats,
    recent_weight: float,
) -> npt.NDArray[np.float32]:
    """A user's vector plus ``recent_weight`` times the weighted mean of ``item_vectors``,
    scaled to the user vector's length (to unit length if it has none)."""
    if not recent_weight or not len(weights) or not weights.sum() > 0:
        return user_vector
    q = (weights @ item_vectors.astype(np.float64)) / float(weights.sum())
    q_norm, u_norm = float(np.linalg.norm(q)), float(np.linalg.norm(user_vector))
    if q_norm == 0.0:
        return user_vector
    scale = recent_weight * (u_norm / q_norm if u_norm > 0 else 1.0)
    out: npt.NDArray[np.float32] = (user_vector + scale * q).astype(np.float32)
    return out


# -- scoring --------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Scored:
    """Candidates with their blended score and each weighted part (aligned arrays)."""

    docs: Docs
    score: Floats
    parts: Mapping[str, Floats]


#: Beyond the clip (:data:`ranker.policy.CLIP_Z` by default) a z-score counts this much per
#: unit, so the clip never turns an order into a tie.
EXCESS_WEIGHT: Final = 1e-3


def standardise(values: Floats, clip: float = CLIP_Z) -> Floats:
    """``(x - mean) / std`` over the candidates, softly clipped at ±``clip``.

    The clip keeps one heavy-tailed part (popularity follows a power law) from
    drowning the others: without it the single most popular item scored 9
    standard deviations and outranked every item the user had shown a taste
    for. Beyond the clip a z-score still counts :data:`EXCESS_WEIGHT` per unit,
    so the transform stays strictly increasing: ranking by one part alone (the
    model on the default surface) keeps its order at the top. ``clip`` may be
    ``math.inf``: plain z-scores (a learned blend, see ``Blend.clip_z``). All
    zeros when every candidate is equal.
    """
    if len(values) == 0:
        return values
    std = float(values.std())
    if not std > 1e-12:
        return np.zeros(len(values))
    z: Floats = (values - values.mean()) / std
    if not math.isfinite(clip):
        return z
    clipped = np.clip(z, -clip, clip)
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
    cooccurrence: Floats | None = None,
    trending: Floats | None = None,
) -> Scored:
    """Blend the parts: each is standardised over the candidates, then weighted.

    Parts without weight (and the model, co-occurrence and trending parts
    when not given) are left out. ``popularity`` is the decayed popularity
    (its logarithm counts), ``last_interaction`` a time (counted by how
    recent it is), ``affinity``, ``cooccurrence`` (:func:`related_part`) and
    ``trending`` (:func:`trending_part`) count as they are.
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
    if cooccurrence is not None:
        raw["cooccurrence"] = (blend.cooccurrence, lambda: cooccurrence)
    if trending is not None:
        raw["trending"] = (blend.trending, lambda: trending)
    total = np.zeros(len(docs))
    parts = {}
    for name, (weight, values) in raw.items():
        if weight:
            part = weight * standardise(values().astype(np.float64, copy=False), blend.clip_z)
            parts[name] = part
            total += part
    return Scored(docs=docs, score=total, parts=parts)


def related_part(docs: Docs, related: tuple[Docs, Floats]) -> Floats:
    """Each candidate's co-occurrence score (``related`` is ``(docs, scores)`` sorted by id)."""
    out = np.zeros(len(docs))
    found, scores = related
    if len(found) and len(docs):
        at = np.minimum(np.searchsorted(found, docs), len(found) - 1)
        hit = found[at] == docs
        out[hit] = scores[at[hit]]
    return out


def trending_part(popularity: Floats, affinity: Floats, favourites_total: float) -> Floats:
    """Popularity within the user's favourite terms: the log of each candidate's decayed
    popularity times the share of the user's positive affinity its terms carry."""
    if not favourites_total > 0:
        return np.zeros(len(popularity))
    share = np.clip(affinity / favourites_total, 0.0, 1.0)
    out: Floats = np.log1p(np.maximum(popularity, 0.0)) * share
    return out


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
    cap = _PerValueCap(diversity=diversity, values_of=values_of)
    chosen: list[int] = []
    if k <= 0:
        return chosen, cap.notes
    if diversity.mmr > 0 and embeddings is not None and len(order):
        return _select_mmr(order, k, diversity.mmr, cap, score, embeddings), cap.notes
    for p in order.tolist():
        if len(chosen) == k:
            break
        if cap.allowed(p):
            cap.take(p)
            chosen.append(p)
    return chosen, cap.notes


@attrs.define(kw_only=True)
class _PerValueCap:
    """The diversity policy's ``max_per_value`` over one selection, and its notes per position."""

    diversity: Diversity
    values_of: Any
    counts: dict[str, int] = attrs.field(factory=dict)
    notes: dict[int, str] = attrs.field(factory=dict)

    def allowed(self, p: int) -> bool:
        """Whether position ``p`` may be chosen (noting why not when it may not)."""
        cap = self.diversity.max_per_value
        if cap is None:
            return True
        values = self.values_of(p)
        full = [v for v in values if self.counts.get(v, 0) >= cap]
        if full:
            self.notes[p] = f"diversity: already {cap} with {self.diversity.field}={full[0]}"
            return False
        return True

    def take(self, p: int) -> None:
        """Count position ``p``'s values as chosen."""
        if self.diversity.max_per_value is not None:
            for v in self.values_of(p):
                self.counts[v] = self.counts.get(v, 0) + 1


def _select_mmr(
    order: npt.NDArray[np.intp],
    k: int,
    lam: float,
    cap: _PerValueCap,
    score: Floats,
    embeddings: npt.NDArray[np.float32],
) -> list[int]:
    """Up to ``k`` positions by maximal marginal relevance among the best ``10 * k``."""
    chosen: list[int] = []
    pool = order[: 10 * k]
    vectors = embeddings[pool].astype(np.float64)
    norms = np.linalg.norm(vectors, axis=1)
    vectors /= np.where(norms > 0, norms, 1.0)[:, None]
    rel = score[pool]
    spread = rel.max() - rel.min()
    rel = (rel - rel.min()) / spread if spread > 0 else np.ones(len(pool))
    max_sim = np.full(len(pool), -1.0)
    open_ = np.ones(len(pool), dtype=bool)
    while len(chosen) < k and open_.any():
        value = np.where(open_, (1 - lam) * rel - lam * np.maximum(max_sim, 0.0), -np.inf)
        best = int(np.argmax(value))
        open_[best] = False
        p = int(pool[best])
        if not cap.allowed(p):
            continue
        if max_sim[best] > 0:
            cap.notes[p] = f"diversity: mmr similarity {max_sim[best]:.2f}"
        cap.take(p)
        chosen.append(p)
        max_sim = np.maximum(max_sim, vectors @ vectors[best])
    return chosen


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
