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
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import numpy as np
import scipy.sparse as sp

from actors import EventStore, InteractionRecorded, ItemState, LmdbEventStore, UserState, item, user
from actors.user import OTHER_TYPE_WEIGHT, TYPE_WEIGHTS
from ranker.errors import ModelError
from ranker.model import Model, item_feature_names, save_model, user_feature_weights

log = logging.getLogger(__name__)

READ_PAGE: Final = 10_000
#: A pair's weight is capped so a few obsessive users do not dominate an epoch.
MAX_PAIR_WEIGHT: Final = 5.0

Progress = Callable[[str], None]


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


@attrs.define(kw_only=True)
class TrainingData:
    """The log folded into users, items and weighted (user, item) pairs."""

    users: dict[str, UserState]
    items: dict[str, ItemState]
    pairs: dict[tuple[str, str], float]
    last_seq: int
    events: int


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
        if progress is not None and time.monotonic() >= next_report:
            progress(f"read {events:,} events (seq {seq:,} of {last:,})")
            next_report = time.monotonic() + 2.0
    return TrainingData(users=users, items=items, pairs=pairs, last_seq=seq, events=events)


def fit(
    data: TrainingData,
    config: TrainingConfig | None = None,
    *,
    version: str,
    progress: Progress | None = None,
) -> Model:
    """Fit a LightFM hybrid model on ``data``. Blocking; CPU-bound.

    Raises:
        ModelError: there is no positive interaction to learn from.
    """
    from lightfm import LightFM  # heavy import; only training needs it

    config = config or TrainingConfig()
    positive = {k: min(w, MAX_PAIR_WEIGHT) for k, w in data.pairs.items() if w > 0}
    if not positive:
        raise ModelError("nothing to learn: the log has no positive interaction")
    user_ids = sorted({u for u, _ in positive})
    # Items liked and later removed keep their pairs (the user did like them).
    item_ids = sorted(
        {i for i, s in data.items.items() if s.exists or s.counters} | {i for _, i in positive}
    )
    user_row = {u: n for n, u in enumerate(user_ids)}
    item_row = {i: n for n, i in enumerate(item_ids)}

    item_vocab: dict[str, int] = {}
    item_features = _feature_matrix(
        [
            dict.fromkeys(item_feature_names(i, data.items[i].kind, data.items[i].terms), 1.0)
            for i in item_ids
        ],
        item_vocab,
    )
    user_vocab: dict[str, int] = {}
    user_features = _feature_matrix(
        [
            user_feature_weights(u, user.affinity_at(data.users[u], data.users[u].updated))
            for u in user_ids
        ],
        user_vocab,
    )
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
        if progress is not None:
            progress(f"epoch {epoch + 1}/{config.epochs} ({time.monotonic() - started:.1f} s)")
    return Model(
        version=version,
        trained_seq=data.last_seq,
        item_vocab=item_vocab,
        item_embeddings=model.item_embeddings.astype(np.float32),
        item_biases=model.item_biases.astype(np.float32),
        user_vocab=user_vocab,
        user_embeddings=model.user_embeddings.astype(np.float32),
        user_biases=model.user_biases.astype(np.float32),
        facts={
            "users": len(user_ids),
            "items": len(item_ids),
            "pairs": len(positive),
            "events": data.events,
            "components": config.components,
            "epochs": config.epochs,
            "loss": config.loss,
            "seed": config.seed,
            "fit_s": round(time.monotonic() - started, 2),
            "trained_at": time.time(),
        },
    )


def _feature_matrix(rows: list[Mapping[str, float]], vocab: dict[str, int]) -> sp.csr_matrix:
    """Rows of named feature weights as a CSR matrix, rows normalised to sum to 1."""
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
    finally:
        store.close()
    if progress is not None:
        progress(
            f"{data.events:,} events: {len(data.users):,} users, {len(data.items):,} items, "
            f"{sum(1 for w in data.pairs.values() if w > 0):,} positive pairs"
        )
    model = fit(data, config, version=new_version(data_dir, data.last_seq), progress=progress)
    save_model(data_dir, model)
    log.info("model %s written (%s)", model.version, _summary(model.facts))
    return model


def _summary(facts: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in facts.items())
