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
candidate with the best hit rate at :data:`~ranker.train_holdout.HIT_K`,
preferring the simpler candidate unless the other is better by more than one
standard error. The candidates are identities only, and identities plus terms at each weight
of :attr:`TrainingConfig.term_weights`; a term (or kind) carried by more than
:attr:`TrainingConfig.max_term_share` of the items is left out, as it tells
items apart no better than a constant. The winner is fitted again on all the
pairs, so the latest items and users get identities. Items with no positive
pair get no identity feature (an identity trained only as a negative is
noise): like an item added after training, they are their terms.

The parts: :mod:`ranker.train_data` (the configuration and the log folded
into training data), :mod:`ranker.train_features` (feature sets and one
LightFM fit), :mod:`ranker.train_holdout` (choosing the features on the
held-out slice) and :mod:`ranker.blend_fit` (learning the blend); this
module runs them and writes the artifact.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np

from actors import EventStore, LmdbEventStore, user
from ranker.errors import ModelError
from ranker.model import UNCLIPPED, Model, save_model
from ranker.train_data import Pair, Progress, TrainingConfig, TrainingData, read_log
from ranker.train_features import (
    FeatureSet,
    Fitted,
    any_terms,
    common_terms,
    feature_candidates,
    fit_lightfm,
)
from ranker.train_holdout import Split, select_features, split_holdout

log = logging.getLogger(__name__)

#: A pair's weight is capped so a few obsessive users do not dominate an epoch.
MAX_PAIR_WEIGHT: Final = 5.0


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
    if config.features == "auto" and not any_terms(data.items, item_ids, common):
        candidates = candidates[:1]  # nothing but identities to choose from
    started = time.monotonic()
    chooses = len(candidates) > 1 or store is not None
    split = split_holdout(data, positive, config) if chooses else None
    chosen, selection, held_out = select_features(
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
    fitted = fit_lightfm(
        chosen, positive, item_ids, data.items, affinity, common, config, epoch_progress=say
    )
    facts = {
        "users": len(fitted.user_ids),
        "items": len(item_ids),
        "item_identities": len({i for _, i in positive}),
        "pairs": len(positive),
        "events": data.events,
        **_choice_facts(config, chosen, common, selection),
        "select_s": round(select_s, 2),
        **blend_facts,
        "fit_s": round(time.monotonic() - started, 2),
        "trained_at": time.time(),
    }
    return _model_of(fitted, chosen, version=version, trained_seq=data.last_seq, facts=facts)


def _choice_facts(
    config: TrainingConfig, chosen: FeatureSet, common: frozenset[str], selection: dict[str, Any]
) -> dict[str, Any]:
    """The model's facts on how it was fitted: the configuration and the features chosen."""
    weight = chosen.term_weight if chosen.terms else 1.0
    return {
        "components": config.components,
        "epochs": config.epochs,
        "loss": config.loss,
        "seed": config.seed,
        "features": chosen.name,
        "term_weight": weight if chosen.terms else None,
        "dropped_terms": sorted(common) if chosen.terms and chosen.drop_common else [],
        "selection": selection,
    }


def _learn_blend(
    store: EventStore,
    data: TrainingData,
    positive: Mapping[Pair, float],
    item_ids: Sequence[str],
    common: frozenset[str],
    chosen: FeatureSet,
    held_out: Fitted | None,
    split: Split | None,
    config: TrainingConfig,
    say: Progress,
) -> dict[str, Any]:
    """The facts a learned blend adds to the model: ``blend`` (the weights) and how."""
    from ranker.blend_fit import learn_blend  # replays the log through the projections

    if split is None:
        say("blend: too little held-out data to learn one; the default blend serves")
        return {}
    if held_out is None:  # the features were not chosen on the split: fit them on it
        held_out = fit_lightfm(
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
    fitted: Fitted, chosen: FeatureSet, *, version: str, trained_seq: int, facts: dict[str, Any]
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
