"""Training: read the event log, fit a LightFM hybrid model, write a versioned artifact.

``matchlight train --data DIR`` runs :func:`train`. It opens the event store
read-mostly alongside a running server (LMDB allows readers in other
processes), folds every user and item stream from the log, and fits LightFM
(WARP loss) on the positive interactions: each (user, item) pair weighs the
sum of its events' type weights (``like`` 1, ``hire`` 2, ``view`` 0.1, …;
``dismiss`` and ``decline`` subtract), and pairs that end at or below zero
are left out. Features are those of :mod:`ranker.model`. The artifact goes
to ``DIR/models/VERSION``; a serving process notices the new ``CURRENT``
and swaps the model in.

Which features help depends on the data: on dense rating logs the identities
alone carry the collaborative signal, and coarse terms shared by many items
wash it out; on a sparse or fast-changing catalogue the terms are what new
and rarely engaged items have. So :func:`fit` chooses from held-out data
(:attr:`TrainingConfig.features`): it holds out the latest slice of the
positive pairs by time (:attr:`TrainingConfig.holdout`), fits each candidate
on the earlier pairs, and for each held-out pair worth a like (whose user
had a positive pair before it) ranks the whole catalogue as a server would
just before it: the user from their identity (if fitted) and affinity, with
their latest items folded in, the items they had left out. It keeps the
candidate with the best hit rate at :data:`HIT_K`, preferring the simpler
candidate unless the other is better by more than one standard error.
The candidates are identities only, and identities plus terms at each weight
of :attr:`TrainingConfig.term_weights`; a term (or kind) carried by more than
:attr:`TrainingConfig.max_term_share` of the items is left out, as it tells
items apart no better than a constant. The winner is fitted again on all the
pairs, so the latest items and users get identities. Items with no positive
pair get no identity feature (an identity trained only as a negative is
noise): like an item added after training, they are their terms.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import attrs
import numpy as np
import scipy.sparse as sp

from actors import (
    EventStore,
    InteractionRecorded,
    ItemState,
    LmdbEventStore,
    UserState,
    decay,
    item,
    user,
)
from actors.user import OTHER_TYPE_WEIGHT, TYPE_WEIGHTS
from ranker.errors import ModelError
from ranker.model import (
    UNCLIPPED,
    Model,
    item_feature_weights,
    save_model,
    user_feature_weights,
)

if TYPE_CHECKING:
    from lightfm import LightFM

log = logging.getLogger(__name__)

READ_PAGE: Final = 10_000
#: A pair's weight is capped so a few obsessive users do not dominate an epoch.
MAX_PAIR_WEIGHT: Final = 5.0
#: Feature choices: choose from held-out data, or pin a family of candidates
#: (``identity+terms`` still chooses among its term weights); ``all`` is every
#: feature at weight 1, common terms included (the choice before selection).
FEATURES: Final = ("auto", "identity", "identity+terms", "all")
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

Progress = Callable[[str], None]
Pair = tuple[str, str]


@attrs.frozen(kw_only=True)
class TrainingConfig:
    components: int = 32
    epochs: int = 30
    learning_rate: float = 0.05
    loss: str = "warp"
    #: L2 penalty on feature embeddings, per sample.
    alpha: float = 1e-6
    seed: int = 0
    threads: int = 2
    #: One of :data:`FEATURES`.
    features: str = attrs.field(default="auto")
    #: The weights of term features relative to identities that are tried.
    term_weights: tuple[float, ...] = (0.25, 1.0)
    #: The latest share of the positive pairs (by time) held out to choose features.
    holdout: float = 0.1
    #: Terms (and kinds) carried by more than this share of the items are left out.
    max_term_share: float = 0.5
    #: Learn the blend weights from the held-out slice (when training on a store).
    learn_blend: bool = True

    @features.validator
    def _check_features(self, _: object, value: str) -> None:
        if value not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, not {value!r}")
        if not self.term_weights or not all(0.0 < w < math.inf for w in self.term_weights):
            raise ValueError(f"term weights must be positive and finite, not {self.term_weights}")


@attrs.define(kw_only=True)
class TrainingData:
    """The log folded into users, items and weighted (user, item) pairs."""

    users: dict[str, UserState]
    items: dict[str, ItemState]
    pairs: dict[Pair, float]
    last_seq: int
    events: int
    #: (user, item) -> the time of the pair's first event of positive weight
    #: (what the held-out slice is cut by); pairs without one are absent.
    pair_ts: dict[Pair, float] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class FeatureSet:
    """The features a model is fitted with."""

    name: str
    #: Item kinds and terms, and user affinity terms, besides identities.
    terms: bool
    #: Their weight relative to an identity.
    term_weight: float = 1.0
    #: Leave out terms carried by more than ``max_term_share`` of the items.
    drop_common: bool = True


@attrs.frozen(kw_only=True)
class CandidateScore:
    """How well a candidate feature set predicted the held-out slice."""

    name: str
    #: Share of held-out targets in the top :data:`HIT_K` (ties broken at random, in expectation).
    hit: float
    #: Mean share of the user's other items ranked below the target.
    auc: float
    fit_s: float


def read_log(
    store: EventStore, *, until_seq: int | None = None, progress: Progress | None = None
) -> TrainingData:
    """Fold the log (up to ``until_seq``, inclusive) into training data. Blocking.

    Raises:
        StoreError: the store cannot be read.
    """
    users: dict[str, UserState] = {}
    items: dict[str, ItemState] = {}
    pairs: dict[tuple[str, str], float] = {}
    pair_ts: dict[tuple[str, str], float] = {}
    last = store.last_seq() if until_seq is None else min(until_seq, store.last_seq())
    seq, events, next_report = 0, 0, 0.0
    while seq < last:
        page = store.read_all(after=seq, limit=READ_PAGE)
        if not page:
            break
        for stored in page:
            if stored.seq > last:
                break
            seq = stored.seq
            events += 1
            event = stored.event
            state = items.get(event.item)
            if state is None:
                state = items[event.item] = item.initial(event.item)
            item.apply(state, stored)
            if type(event) is InteractionRecorded:
                person = users.get(event.user)
                if person is None:
                    person = users[event.user] = user.initial(event.user)
                user.apply(person, stored)
                key = (event.user, event.item)
                weight = event.weight * TYPE_WEIGHTS.get(event.type, OTHER_TYPE_WEIGHT)
                pairs[key] = pairs.get(key, 0.0) + weight
                if weight > 0 and key not in pair_ts:
                    pair_ts[key] = event.ts
        if progress is not None and time.monotonic() >= next_report:
            progress(f"read {events:,} events (seq {seq:,} of {last:,})")
            next_report = time.monotonic() + 2.0
    return TrainingData(
        users=users, items=items, pairs=pairs, last_seq=seq, events=events, pair_ts=pair_ts
    )


def feature_candidates(config: TrainingConfig) -> list[FeatureSet]:
    """The feature sets :func:`fit` chooses from, simplest first."""
    identity = FeatureSet(name="identity", terms=False)
    with_terms = [
        FeatureSet(name=f"identity+terms@{w:g}", terms=True, term_weight=w)
        for w in config.term_weights
    ]
    if config.features == "identity":
        return [identity]
    if config.features == "identity+terms":
        return with_terms
    if config.features == "all":
        return [FeatureSet(name="all", terms=True, drop_common=False)]
    return [identity, *with_terms]


def fit(
    data: TrainingData,
    config: TrainingConfig | None = None,
    *,
    version: str,
    progress: Progress | None = None,
    store: EventStore | None = None,
) -> Model:
    """Choose the features on held-out data and fit a LightFM hybrid model on ``data``
    with them (see the module docstring). Blocking; CPU-bound.

    With the ``store`` ``data`` was read from (and ``config.learn_blend``), also
    learn the blend weights from the held-out slice (:mod:`ranker.blend_fit`)
    and keep them in the model's facts, where the server finds them.

    Raises:
        ModelError: there is no positive interaction to learn from.
    """
    config = config or TrainingConfig()
    say = progress or (lambda _: None)
    positive = {k: min(w, MAX_PAIR_WEIGHT) for k, w in data.pairs.items() if w > 0}
    if not positive:
        raise ModelError("nothing to learn: the log has no positive interaction")
    # Items liked and later removed keep their pairs (the user did like them).
    item_ids = sorted(
        {i for i, s in data.items.items() if s.exists or s.counters} | {i for _, i in positive}
    )
    common = common_terms(data.items, item_ids, config.max_term_share)
    candidates = feature_candidates(config)
    if config.features == "auto" and not _any_terms(data.items, item_ids, common):
        candidates = candidates[:1]  # nothing but identities to choose from
    started = time.monotonic()
    split = _split(data, positive, config) if len(candidates) > 1 or store is not None else None
    chosen, selection, held_out = _select(
        data, positive, item_ids, common, candidates, config, say, split
    )
    select_s = time.monotonic() - started
    blend_facts: dict[str, Any] = {}
    if store is not None and config.learn_blend:
        blend_facts = _learn_blend(
            store, data, positive, item_ids, common, chosen, held_out, split, config, say
        )

    started = time.monotonic()
    affinity = {u: user.affinity_at(s, s.updated) for u, s in data.users.items()}
    fitted = _fit_lightfm(
        chosen, positive, item_ids, data.items, affinity, common, config, epoch_progress=say
    )
    weight = chosen.term_weight if chosen.terms else 1.0
    return _model_of(
        fitted,
        chosen,
        version=version,
        trained_seq=data.last_seq,
        facts={
            "users": len(fitted.user_ids),
            "items": len(item_ids),
            "item_identities": len({i for _, i in positive}),
            "pairs": len(positive),
            "events": data.events,
            "components": config.components,
            "epochs": config.epochs,
            "loss": config.loss,
            "seed": config.seed,
            "features": chosen.name,
            "term_weight": weight if chosen.terms else None,
            "dropped_terms": sorted(common) if chosen.terms and chosen.drop_common else [],
            "selection": selection,
            "select_s": round(select_s, 2),
            **blend_facts,
            "fit_s": round(time.monotonic() - started, 2),
            "trained_at": time.time(),
        },
    )


def _learn_blend(
    store: EventStore,
    data: TrainingData,
    positive: Mapping[Pair, float],
    item_ids: Sequence[str],
    common: frozenset[str],
    chosen: FeatureSet,
    held_out: _Fitted | None,
    split: _Split | None,
    config: TrainingConfig,
    say: Progress,
) -> dict[str, Any]:
    """The facts a learned blend adds to the model: ``blend`` (the weights) and how."""
    from ranker.blend_fit import learn_blend  # replays the log through the projections

    if split is None:
        say("blend: too little held-out data to learn one; the default blend serves")
        return {}
    if held_out is None:  # the features were not chosen on the split: fit them on it
        held_out = _fit_lightfm(
            chosen, split.history, item_ids, data.items, split.affinity, common, config
        )
    before = _model_of(held_out, chosen, version="held-out", trained_seq=0, facts={})
    learned = learn_blend(store, cut_ts=split.cut_ts, model=before, seed=config.seed, progress=say)
    if learned is None:
        return {}
    return {
        "blend": learned.blend.weights(),
        "blend_parts": UNCLIPPED,
        "blend_learning": learned.facts,
    }


def _model_of(
    fitted: _Fitted, chosen: FeatureSet, *, version: str, trained_seq: int, facts: dict[str, Any]
) -> Model:
    weight = chosen.term_weight if chosen.terms else 1.0
    return Model(
        version=version,
        trained_seq=trained_seq,
        item_vocab=fitted.item_vocab,
        item_embeddings=fitted.lightfm.item_embeddings.astype(np.float32),
        item_biases=fitted.lightfm.item_biases.astype(np.float32),
        user_vocab=fitted.user_vocab,
        user_embeddings=fitted.lightfm.user_embeddings.astype(np.float32),
        user_biases=fitted.lightfm.user_biases.astype(np.float32),
        item_term_weight=weight,
        user_term_weight=weight,
        facts=facts,
    )


def common_terms(
    items: Mapping[str, ItemState], item_ids: Iterable[str], max_share: float
) -> frozenset[str]:
    """The kind and term features carried by more than ``max_share`` of ``item_ids``."""
    counts: dict[str, int] = {}
    total = 0
    for i in item_ids:
        total += 1
        state = items.get(i)
        if state is not None:
            for name in item_feature_weights(None, state.kind, state.terms):
                counts[name] = counts.get(name, 0) + 1
    return frozenset(name for name, n in counts.items() if n > max_share * total)


def _any_terms(
    items: Mapping[str, ItemState], item_ids: Iterable[str], common: frozenset[str]
) -> bool:
    for i in item_ids:
        state = items.get(i)
        if state is not None and any(
            name not in common for name in item_feature_weights(None, state.kind, state.terms)
        ):
            return True
    return False


# -- choosing the features on held-out data ---------------------------------------------------


@attrs.frozen(kw_only=True)
class _Split:
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


def _select(
    data: TrainingData,
    positive: Mapping[Pair, float],
    item_ids: Sequence[str],
    common: frozenset[str],
    candidates: Sequence[FeatureSet],
    config: TrainingConfig,
    say: Progress,
    split: _Split | None,
) -> tuple[FeatureSet, dict[str, Any], _Fitted | None]:
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
    scores = []
    fits = []
    for candidate in candidates:
        started = time.monotonic()
        fitted = _fit_lightfm(
            candidate, split.history, item_ids, data.items, split.affinity, common, config
        )
        fits.append(fitted)
        hit, auc = _evaluate(fitted, candidate, split)
        score = CandidateScore(
            name=candidate.name, hit=hit, auc=auc, fit_s=time.monotonic() - started
        )
        scores.append(score)
        say(f"  {candidate.name:<20} hit@{HIT_K} {hit:.4f}  AUC {auc:.4f}  ({score.fit_s:.1f} s)")
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
    return (
        chosen,
        {
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
            "candidates": [
                {
                    "name": s.name,
                    f"hit_at_{HIT_K}": round(s.hit, 5),
                    "auc": round(s.auc, 5),
                    "fit_s": round(s.fit_s, 2),
                }
                for s in scores
            ],
        },
        fits[chosen_at],
    )


def _split(
    data: TrainingData, positive: Mapping[Pair, float], config: TrainingConfig
) -> _Split | None:
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
    later = [(u, j) for u, seq in sequences.items() for j in range(1, len(seq))]
    later = [(u, j) for u, j in later if ts[(u, sequences[u][j])] >= cut]
    liked = [(u, j) for u, j in later if data.pairs[(u, sequences[u][j])] >= TARGET_WEIGHT]
    chosen = liked if len(liked) >= MIN_TARGETS else later
    if len(chosen) < MIN_TARGETS:
        return None
    if len(chosen) > MAX_TARGETS:
        rng = np.random.default_rng(config.seed)
        picked = np.sort(rng.choice(len(chosen), MAX_TARGETS, replace=False))
        chosen = [chosen[n] for n in picked.tolist()]
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
    return _Split(
        cut_ts=cut,
        history=history,
        affinity=affinity,
        targets=targets,
        before=before,
        target_affinity=target_affinity,
        new_users=new_users,
    )


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


def _evaluate(fitted: _Fitted, features: FeatureSet, split: _Split) -> tuple[float, float]:
    """Hit rate at :data:`HIT_K` and AUC of the held-out targets. Vectorised.

    Each target's user is represented as served (:meth:`ranker.model.Model.
    user_representation` from their identity, if fitted, and affinity, plus
    the mean of their last :data:`FOLD_IN_ITEMS` items scaled to the same
    length) and ranks every item of the catalogue but those the user had
    before; an item with no features scores 0, as when served. Ties count as
    broken at random: a target tied with ``e - 1`` others just below ``g``
    better items is in the top ``k`` with probability ``(k - g) / e``.
    """
    lightfm = fitted.lightfm
    item_vectors = np.asarray(fitted.item_features @ lightfm.item_embeddings, dtype=np.float32)
    item_biases = np.asarray(fitted.item_features @ lightfm.item_biases, dtype=np.float32)
    n_items = len(item_biases)
    weight = features.term_weight if features.terms else 1.0
    user_rows = [
        user_feature_weights(
            u if u in fitted.user_row else None,
            affinity if features.terms else {},
            term_weight=weight,
        )
        for (u, _), affinity in zip(split.targets, split.target_affinity, strict=True)
    ]
    user_features = _known_rows(user_rows, fitted.user_vocab)
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
    query = users + np.where(f_norm > 0, scale, 0.0)[:, None] * folded
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


def _known_rows(rows: Sequence[Mapping[str, float]], vocab: dict[str, int]) -> sp.csr_matrix:
    """Feature rows as LightFM sees them when serving: known names only, normalised."""
    return _feature_matrix([{n: w for n, w in f.items() if n in vocab} for f in rows], vocab)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ts))


# -- one LightFM fit ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class _Fitted:
    lightfm: LightFM
    user_ids: list[str]
    user_row: dict[str, int]
    item_row: dict[str, int]
    user_features: sp.csr_matrix
    item_features: sp.csr_matrix
    user_vocab: dict[str, int]
    item_vocab: dict[str, int]


def _fit_lightfm(
    features: FeatureSet,
    positive: Mapping[Pair, float],
    item_ids: Sequence[str],
    items: Mapping[str, ItemState],
    affinity: Mapping[str, Mapping[str, float]],
    common: frozenset[str],
    config: TrainingConfig,
    *,
    epoch_progress: Progress | None = None,
) -> _Fitted:
    """Fit LightFM on ``positive`` pairs with ``features``. Blocking; CPU-bound.

    Every item of ``item_ids`` is a row; only items with a positive pair get
    an identity feature, and an item with no feature left is an empty row
    (it scores 0, as when served). Users are those of the pairs.
    """
    from lightfm import LightFM  # heavy import; only training needs it

    user_ids = sorted({u for u, _ in positive})
    user_row = {u: n for n, u in enumerate(user_ids)}
    item_row = {i: n for n, i in enumerate(item_ids)}
    engaged = {i for _, i in positive}
    weight = features.term_weight
    dropped = common if features.drop_common else frozenset()

    item_rows: list[Mapping[str, float]] = []
    for i in item_ids:
        identity = i if i in engaged else None
        state = items.get(i)
        if features.terms and state is not None:
            row = item_feature_weights(identity, state.kind, state.terms, term_weight=weight)
            item_rows.append({n: w for n, w in row.items() if n not in dropped})
        else:
            item_rows.append({} if identity is None else {f"item:{i}": 1.0})
    user_rows: list[Mapping[str, float]] = []
    for u in user_ids:
        if features.terms:
            row = user_feature_weights(u, affinity.get(u, {}), term_weight=weight)
            user_rows.append(
                {n: w for n, w in row.items() if not (n[:2] == "a:" and "t:" + n[2:] in dropped)}
            )
        else:
            user_rows.append({f"user:{u}": 1.0})
    item_vocab: dict[str, int] = {}
    item_features = _feature_matrix(item_rows, item_vocab)
    user_vocab: dict[str, int] = {}
    user_features = _feature_matrix(user_rows, user_vocab)

    rows = np.fromiter((user_row[u] for u, _ in positive), dtype=np.int32, count=len(positive))
    cols = np.fromiter((item_row[i] for _, i in positive), dtype=np.int32, count=len(positive))
    weights = np.fromiter(positive.values(), dtype=np.float32, count=len(positive))
    shape = (len(user_ids), len(item_ids))
    interactions = sp.coo_matrix((np.ones_like(weights), (rows, cols)), shape=shape)
    sample_weight = sp.coo_matrix((weights, (rows, cols)), shape=shape)

    model = LightFM(
        no_components=config.components,
        loss=config.loss,
        learning_rate=config.learning_rate,
        item_alpha=config.alpha,
        user_alpha=config.alpha,
        random_state=np.random.RandomState(config.seed),
    )
    started = time.monotonic()
    for epoch in range(config.epochs):
        model.fit_partial(
            interactions,
            user_features=user_features,
            item_features=item_features,
            sample_weight=sample_weight,
            epochs=1,
            num_threads=config.threads,
        )
        if epoch_progress is not None:
            epoch_progress(
                f"epoch {epoch + 1}/{config.epochs} ({time.monotonic() - started:.1f} s)"
            )
    return _Fitted(
        lightfm=model,
        user_ids=user_ids,
        user_row=user_row,
        item_row=item_row,
        user_features=user_features,
        item_features=item_features,
        user_vocab=user_vocab,
        item_vocab=item_vocab,
    )


def _feature_matrix(rows: Sequence[Mapping[str, float]], vocab: dict[str, int]) -> sp.csr_matrix:
    """Rows of named feature weights as a CSR matrix, rows normalised to sum to 1
    (an empty row stays empty); a name not in ``vocab`` gets the next column."""
    indptr, indices, data = [0], [], []
    for features in rows:
        total = sum(features.values())
        for name, weight in features.items():
            column = vocab.get(name)
            if column is None:
                column = vocab[name] = len(vocab)
            indices.append(column)
            data.append(weight / total)
        indptr.append(len(indices))
    return sp.csr_matrix(
        (np.asarray(data, dtype=np.float32), np.asarray(indices), np.asarray(indptr)),
        shape=(len(rows), len(vocab)),
    )


def new_version(data_dir: str | os.PathLike[str], last_seq: int) -> str:
    """A fresh, sortable version name: UTC time and the log position trained on.

    Of the form :data:`ranker.model.TRAINED_VERSION` (what ``serve`` accepts at startup).
    """
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = f"{stamp}-seq{last_seq}"
    version, n = base, 1
    while (Path(data_dir) / "models" / version).exists():
        n += 1
        version = f"{base}-{n}"
    return version


def train(
    data_dir: str | os.PathLike[str],
    config: TrainingConfig | None = None,
    *,
    progress: Progress | None = None,
) -> Model:
    """Train on the event log in ``data_dir`` and make the result the current model. Blocking.

    Raises:
        StoreError: the event store cannot be opened or read.
        ModelError: nothing to learn from, or the artifact cannot be written.
    """
    events = Path(data_dir) / "events"
    if not events.is_dir():
        raise ModelError(f"no event store in {data_dir} (expected {events}/)")
    store = LmdbEventStore(events)
    try:
        data = read_log(store, progress=progress)
        if progress is not None:
            progress(
                f"{data.events:,} events: {len(data.users):,} users, {len(data.items):,} "
                f"items, {sum(1 for w in data.pairs.values() if w > 0):,} positive pairs"
            )
        version = new_version(data_dir, data.last_seq)
        model = fit(data, config, version=version, progress=progress, store=store)
    finally:
        store.close()
    save_model(data_dir, model)
    # The candidates' scores went to ``progress``; meta.json keeps them.
    facts = {k: v for k, v in model.facts.items() if k != "selection"}
    log.info("model %s written (%s)", model.version, _summary(facts))
    return model


def _summary(facts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in facts.items())
