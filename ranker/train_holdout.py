"""Choosing a model's features on held-out data (see :mod:`ranker.train`).

:func:`split_holdout` cuts the positive pairs at the time the latest
:attr:`~ranker.train_data.TrainingConfig.holdout` share of them begins;
:func:`select_features` fits each candidate :class:`FeatureSet` on the pairs
before the cut, ranks the whole catalogue for each held-out target as a
server would have just before it (:func:`evaluate`), and keeps the candidate
with the best hit rate at :data:`HIT_K`, the simpler one unless the other is
better by more than one standard error. Blocking; CPU-bound.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import numpy as np
import numpy.typing as npt

from actors import ItemState, decay, user
from ranker.model import user_feature_weights
from ranker.train_data import Pair, Progress, TrainingConfig, TrainingData
from ranker.train_features import FeatureSet, Fitted, fit_lightfm, known_rows

#: Held-out pairs are judged by the hit rate at this list length.
HIT_K: Final = 10
#: A held-out pair counts as a target when its weight reaches a like's.
TARGET_WEIGHT: Final = 1.0
#: Fewer held-out targets than this cannot tell candidates apart: the last
#: candidate (terms at the highest weight) is kept without a held-out fit.
MIN_TARGETS: Final = 30
#: Held-out targets scored at most (a seeded sample beyond), to bound the cost.
MAX_TARGETS: Final = 5_000
#: A held-out target's user is folded in with this many of their latest items
#: (serving folds in the latest events, the most recent weighing most).
FOLD_IN_ITEMS: Final = 10
#: Scores computed per block when ranking held-out targets (bounds memory).
EVAL_BLOCK: Final = 4_000_000


@attrs.frozen(kw_only=True)
class CandidateScore:
    """How well a candidate feature set predicted the held-out slice."""

    name: str
    #: Share of held-out targets in the top :data:`HIT_K` (ties broken at random, in expectation).
    hit: float
    #: Mean share of the user's other items ranked below the target.
    auc: float
    fit_s: float


@attrs.frozen(kw_only=True)
class Split:
    """The positive pairs before the cut, and the held-out targets to predict.

    Each target is asked about as the server would be right before it: with
    the user's affinity and items up to then.
    """

    cut_ts: float
    history: dict[Pair, float]
    #: Each history user's affinity as of the cut, from their history pairs.
    affinity: dict[str, dict[str, float]]
    targets: list[Pair]
    #: Per target: the user's positive items before it, oldest first.
    before: list[list[str]]
    #: Per target: the user's affinity as of the target's time.
    target_affinity: list[dict[str, float]]
    #: Targets whose user had no pair before the cut.
    new_users: int


def select_features(
    data: TrainingData,
    positive: Mapping[Pair, float],
    item_ids: Sequence[str],
    common: frozenset[str],
    candidates: Sequence[FeatureSet],
    config: TrainingConfig,
    say: Progress,
    split: Split | None,
) -> tuple[FeatureSet, dict[str, Any], Fitted | None]:
    """The candidate that predicts the held-out slice best, what the choice rested on, and
    the chosen candidate fitted on the pairs before the cut (if it was)."""
    if len(candidates) == 1:
        say(f"features: {candidates[0].name} (the only candidate)")
        return candidates[0], {"chosen": candidates[0].name, "reason": "only candidate"}, None
    if split is None:
        fallback = candidates[-1]
        say(
            f"features: {fallback.name} (too little held-out data to choose: fewer than "
            f"{MIN_TARGETS} later positive pairs after another of the same user)"
        )
        return fallback, {"chosen": fallback.name, "reason": "too little held-out data"}, None
    users = len({u for u, _ in split.targets})
    say(
        f"choosing features: fitting {len(candidates)} candidates on the {len(split.history):,} "
        f"positive pairs before {_when(split.cut_ts)}, then ranking the catalogue for "
        f"{len(split.targets):,} later pairs of {users:,} users ({split.new_users:,} by users "
        f"new since) as served: affinity and last {FOLD_IN_ITEMS} items folded in"
    )
    scores, fits = _score_candidates(data, item_ids, common, candidates, config, say, split)
    best = max(scores, key=lambda s: (s.hit, s.auc))
    # One standard error of the best hit rate: a candidate within it is as good, on this data.
    margin = math.sqrt(best.hit * (1.0 - best.hit) / len(split.targets))
    chosen_at = next(n for n, s in enumerate(scores) if s.hit >= best.hit - margin)
    chosen = candidates[chosen_at]
    reason = (
        "best held-out hit rate"
        if scores[chosen_at] is best
        else f"simplest within one standard error ({margin:.4f}) of the best, {best.name}"
    )
    say(f"features: {chosen.name} ({reason}); fitting it on all {len(positive):,} pairs")
    facts = {
        "chosen": chosen.name,
        "reason": reason,
        "metric": f"hit@{HIT_K}",
        "holdout": config.holdout,
        "cut_ts": split.cut_ts,
        "history_pairs": len(split.history),
        "targets": len(split.targets),
        "target_users": users,
        "new_user_targets": split.new_users,
        "standard_error": round(margin, 5),
        "candidates": [_score_facts(s) for s in scores],
    }
    return chosen, facts, fits[chosen_at]


def _score_facts(score: CandidateScore) -> dict[str, Any]:
    """A candidate's scores as the model's facts keep them."""
    return {
        "name": score.name,
        f"hit_at_{HIT_K}": round(score.hit, 5),
        "auc": round(score.auc, 5),
        "fit_s": round(score.fit_s, 2),
    }


def _score_candidates(
    data: TrainingData,
    item_ids: Sequence[str],
    common: frozenset[str],
    candidates: Sequence[FeatureSet],
    config: TrainingConfig,
    say: Progress,
    split: Split,
) -> tuple[list[CandidateScore], list[Fitted]]:
    """Each candidate fitted on the pairs before the cut, and how well it predicted the rest."""
    scores = []
    fits = []
    for candidate in candidates:
        started = time.monotonic()
        fitted = fit_lightfm(
            candidate, split.history, item_ids, data.items, split.affinity, common, config
        )
        fits.append(fitted)
        hit, auc = evaluate(fitted, candidate, split)
        score = CandidateScore(
            name=candidate.name, hit=hit, auc=auc, fit_s=time.monotonic() - started
        )
        scores.append(score)
        say(f"  {candidate.name:<20} hit@{HIT_K} {hit:.4f}  AUC {auc:.4f}  ({score.fit_s:.1f} s)")
    return scores, fits


def split_holdout(
    data: TrainingData, positive: Mapping[Pair, float], config: TrainingConfig
) -> Split | None:
    """Cut the positive pairs at the time the latest ``holdout`` share of them begins.

    A target is a later pair worth a like (any later positive pair if there
    are too few of those) whose user had a positive pair before it, so
    there is something to go on. ``None`` when the pairs' times are unknown
    or there are fewer than :data:`MIN_TARGETS` targets.
    """
    if not 0.0 < config.holdout < 1.0 or any(k not in data.pair_ts for k in positive):
        return None
    ts = data.pair_ts
    times = np.fromiter((ts[k] for k in positive), dtype=np.float64, count=len(positive))
    cut = float(np.quantile(times, 1.0 - config.holdout))
    history = {k: w for k, w in positive.items() if ts[k] < cut}
    if not history:
        return None
    sequences: dict[str, list[str]] = {}
    for u, i in sorted(positive, key=lambda k: (ts[k], k)):
        sequences.setdefault(u, []).append(i)
    chosen = _chosen_targets(data, sequences, cut, config.seed)
    if chosen is None:
        return None
    wanted: dict[str, set[int]] = {}
    for u, j in chosen:
        wanted.setdefault(u, set()).add(j)
    targets, before, target_affinity, new_users = [], [], [], 0
    for u, positions in wanted.items():
        seq, landmark = sequences[u], 0.0
        mass: dict[str, float] = {}
        for j, i in enumerate(seq):
            when = ts[(u, i)]
            if j in positions:
                targets.append((u, i))
                before.append(seq[:j])
                target_affinity.append(
                    {k: decay.value_at(m, landmark, when) for k, m in mass.items()}
                )
                new_users += int(ts[(u, seq[0])] >= cut)
            if not mass:
                landmark = when
            _add_terms(mass, data.items.get(i), data.pairs[(u, i)], when, landmark)
    # The history users' affinity as of the cut, from their history pairs (as ``actors.user``
    # decays it; event by event would need the log again).
    affinity: dict[str, dict[str, float]] = {}
    for (u, i), _ in history.items():
        mine = affinity.setdefault(u, {})
        _add_terms(mine, data.items.get(i), data.pairs[(u, i)], ts[(u, i)], cut)
    return Split(
        cut_ts=cut,
        history=history,
        affinity=affinity,
        targets=targets,
        before=before,
        target_affinity=target_affinity,
        new_users=new_users,
    )


def _chosen_targets(
    data: TrainingData, sequences: Mapping[str, list[str]], cut: float, seed: int
) -> list[tuple[str, int]] | None:
    """The held-out targets as (user, position in their sequence); ``None`` if too few.

    ``sequences`` holds each user's positive items in time order.
    """
    ts = data.pair_ts
    later = [(u, j) for u, seq in sequences.items() for j in range(1, len(seq))]
    later = [(u, j) for u, j in later if ts[(u, sequences[u][j])] >= cut]
    liked = [(u, j) for u, j in later if data.pairs[(u, sequences[u][j])] >= TARGET_WEIGHT]
    chosen = liked if len(liked) >= MIN_TARGETS else later
    if len(chosen) < MIN_TARGETS:
        return None
    if len(chosen) > MAX_TARGETS:
        rng = np.random.default_rng(seed)
        picked = np.sort(rng.choice(len(chosen), MAX_TARGETS, replace=False))
        chosen = [chosen[n] for n in picked.tolist()]
    return chosen


def _add_terms(
    mass: dict[str, float], state: ItemState | None, weight: float, ts: float, landmark: float
) -> None:
    if state is None or not state.terms:
        return
    added = weight * decay.growth(ts, landmark)
    for field, values in state.terms.items():
        for value in values:
            key = user.term_key(field, value)
            mass[key] = mass.get(key, 0.0) + added


def evaluate(fitted: Fitted, features: FeatureSet, split: Split) -> tuple[float, float]:
    """Hit rate at :data:`HIT_K` and AUC of the held-out targets. Vectorised.

    Each target's user is represented as served (:meth:`ranker.model.Model.
    user_representation` from their identity, if fitted, and affinity, plus
    the mean of their last :data:`FOLD_IN_ITEMS` items scaled to the same
    length) and ranks every item of the catalogue but those the user had
    before; an item with no features scores 0, as when served. Ties count as
    broken at random: a target tied with ``e - 1`` others just below ``g``
    better items is in the top ``k`` with probability ``(k - g) / e``.
    """
    import scipy.sparse as sp  # only training needs it (see ranker.train_features)

    lightfm = fitted.lightfm
    item_vectors = np.asarray(fitted.item_features @ lightfm.item_embeddings, dtype=np.float32)
    item_biases = np.asarray(fitted.item_features @ lightfm.item_biases, dtype=np.float32)
    n_items = len(item_biases)
    query, user_biases = _target_queries(fitted, features, split, item_vectors)
    n = len(split.targets)
    seen_rows = np.repeat(np.arange(n), [len(b) for b in split.before])
    seen_cols = np.fromiter(
        (fitted.item_row[i] for b in split.before for i in b), dtype=np.int64, count=len(seen_rows)
    )
    seen = sp.csr_matrix(
        (np.ones(len(seen_rows), dtype=np.float32), (seen_rows, seen_cols)), shape=(n, n_items)
    )
    seen.sum_duplicates()
    available = n_items - np.diff(seen.indptr)
    columns = np.fromiter((fitted.item_row[i] for _, i in split.targets), dtype=np.int64, count=n)
    block = max(1, EVAL_BLOCK // max(n_items, 1))
    hits, aucs = [], []
    for start in range(0, n, block):
        stop = min(start + block, n)
        scores = query[start:stop] @ item_vectors.T
        scores += user_biases[start:stop, None] + item_biases[None, :]
        mask = seen[start:stop]
        scores[np.repeat(np.arange(stop - start), np.diff(mask.indptr)), mask.indices] = -np.inf
        target = scores[np.arange(stop - start), columns[start:stop]][:, None]
        greater = (scores > target).sum(axis=1)
        equal = (scores == target).sum(axis=1)  # the target itself included
        hits.append(np.clip((HIT_K - greater) / equal, 0.0, 1.0))
        below = available[start:stop] - greater - equal + (equal - 1) / 2.0
        aucs.append(below / np.maximum(available[start:stop] - 1, 1))
    return float(np.concatenate(hits).mean()), float(np.concatenate(aucs).mean())


def _target_queries(
    fitted: Fitted,
    features: FeatureSet,
    split: Split,
    item_vectors: npt.NDArray[np.float32],
) -> tuple[npt.NDArray[Any], npt.NDArray[np.float32]]:
    """Each target's user vector as served, with their last items folded in, and their bias."""
    lightfm = fitted.lightfm
    weight = features.term_weight if features.terms else 1.0
    user_rows = [
        user_feature_weights(
            u if u in fitted.user_row else None,
            affinity if features.terms else {},
            term_weight=weight,
        )
        for (u, _), affinity in zip(split.targets, split.target_affinity, strict=True)
    ]
    user_features = known_rows(user_rows, fitted.user_vocab)
    users = np.asarray(user_features @ lightfm.user_embeddings, dtype=np.float32)
    user_biases = np.asarray(user_features @ lightfm.user_biases, dtype=np.float32)
    # The fold-in: the mean of the last items' vectors, as long as the user's own.
    n = len(split.targets)
    recent = np.full((n, FOLD_IN_ITEMS), -1, dtype=np.int64)
    for t, items in enumerate(split.before):
        last = [fitted.item_row[i] for i in items[-FOLD_IN_ITEMS:]]
        recent[t, : len(last)] = last
    present = recent >= 0
    folded = (item_vectors[np.where(present, recent, 0)] * present[:, :, None]).sum(axis=1)
    folded /= np.maximum(present.sum(axis=1), 1)[:, None]
    u_norm = np.linalg.norm(users, axis=1)
    f_norm = np.linalg.norm(folded, axis=1)
    scale = np.where(u_norm > 0, u_norm / np.maximum(f_norm, 1e-12), 1.0)
    return users + np.where(f_norm > 0, scale, 0.0)[:, None] * folded, user_biases


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))
