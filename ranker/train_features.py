"""The features a model is fitted with, and one LightFM fit with them.

A :class:`FeatureSet` says whether items and users carry their terms
besides their identities, and at which weight; :func:`feature_candidates`
lists those :func:`ranker.train.fit` chooses from, and :func:`fit_lightfm`
fits LightFM (WARP loss) on weighted positive pairs with one of them. The
feature rows are those :mod:`ranker.model` builds when serving. Blocking;
CPU-bound.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import attrs
import numpy as np

from actors import ItemState
from ranker.model import item_feature_weights, user_feature_weights
from ranker.train_data import Pair, Progress, TrainingConfig

if TYPE_CHECKING:
    # Imported where used, like LightFM: only training needs them, and scipy.sparse alone
    # took 0.12 s of every serving process's start (`python -X importtime`).
    import scipy.sparse as sp
    from lightfm import LightFM


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


def any_terms(
    items: Mapping[str, ItemState], item_ids: Iterable[str], common: frozenset[str]
) -> bool:
    """Whether any of ``item_ids`` carries a kind or term feature that is not ``common``."""
    for i in item_ids:
        state = items.get(i)
        if state is not None and any(
            name not in common for name in item_feature_weights(None, state.kind, state.terms)
        ):
            return True
    return False


def known_rows(rows: Sequence[Mapping[str, float]], vocab: dict[str, int]) -> sp.csr_matrix:
    """Feature rows as LightFM sees them when serving: known names only, normalised."""
    return _feature_matrix([{n: w for n, w in f.items() if n in vocab} for f in rows], vocab)


# -- one LightFM fit ----------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Fitted:
    """A fitted LightFM model and the rows and feature columns it was fitted with."""

    lightfm: LightFM
    user_ids: list[str]
    user_row: dict[str, int]
    item_row: dict[str, int]
    user_features: sp.csr_matrix
    item_features: sp.csr_matrix
    user_vocab: dict[str, int]
    item_vocab: dict[str, int]


def fit_lightfm(
    features: FeatureSet,
    positive: Mapping[Pair, float],
    item_ids: Sequence[str],
    items: Mapping[str, ItemState],
    affinity: Mapping[str, Mapping[str, float]],
    common: frozenset[str],
    config: TrainingConfig,
    *,
    epoch_progress: Progress | None = None,
) -> Fitted:
    """Fit LightFM on ``positive`` pairs with ``features``. Blocking; CPU-bound.

    Every item of ``item_ids`` is a row; only items with a positive pair get
    an identity feature, and an item with no feature left is an empty row
    (it scores 0, as when served). Users are those of the pairs.
    """
    from lightfm import LightFM  # heavy import; only training needs it

    user_ids = sorted({u for u, _ in positive})
    user_row = {u: n for n, u in enumerate(user_ids)}
    item_row = {i: n for n, i in enumerate(item_ids)}
    dropped = common if features.drop_common else frozenset()
    item_vocab: dict[str, int] = {}
    item_features = _feature_matrix(
        _item_rows(features, item_ids, items, {i for _, i in positive}, dropped), item_vocab
    )
    user_vocab: dict[str, int] = {}
    user_features = _feature_matrix(_user_rows(features, user_ids, affinity, dropped), user_vocab)
    interactions, sample_weight = _interactions(
        positive, user_row, item_row, shape=(len(user_ids), len(item_ids))
    )

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
    return Fitted(
        lightfm=model,
        user_ids=user_ids,
        user_row=user_row,
        item_row=item_row,
        user_features=user_features,
        item_features=item_features,
        user_vocab=user_vocab,
        item_vocab=item_vocab,
    )


def _item_rows(
    features: FeatureSet,
    item_ids: Sequence[str],
    items: Mapping[str, ItemState],
    engaged: set[str],
    dropped: frozenset[str],
) -> list[Mapping[str, float]]:
    """Each item's named feature weights: its identity if ``engaged``, and its kind and terms
    (but the ``dropped`` ones) if the features carry terms."""
    weight = features.term_weight
    item_rows: list[Mapping[str, float]] = []
    for i in item_ids:
        identity = i if i in engaged else None
        state = items.get(i)
        if features.terms and state is not None:
            row = item_feature_weights(identity, state.kind, state.terms, term_weight=weight)
            item_rows.append({n: w for n, w in row.items() if n not in dropped})
        else:
            item_rows.append({} if identity is None else {f"item:{i}": 1.0})
    return item_rows


def _user_rows(
    features: FeatureSet,
    user_ids: Sequence[str],
    affinity: Mapping[str, Mapping[str, float]],
    dropped: frozenset[str],
) -> list[Mapping[str, float]]:
    """Each user's named feature weights: their identity, and their affinity terms (but those
    of the ``dropped`` terms) if the features carry terms."""
    user_rows: list[Mapping[str, float]] = []
    for u in user_ids:
        if features.terms:
            row = user_feature_weights(u, affinity.get(u, {}), term_weight=features.term_weight)
            user_rows.append(
                {n: w for n, w in row.items() if not (n[:2] == "a:" and "t:" + n[2:] in dropped)}
            )
        else:
            user_rows.append({f"user:{u}": 1.0})
    return user_rows


def _interactions(
    positive: Mapping[Pair, float],
    user_row: Mapping[str, int],
    item_row: Mapping[str, int],
    *,
    shape: tuple[int, int],
) -> tuple[sp.coo_matrix, sp.coo_matrix]:
    """The pairs as LightFM's interaction matrix (all ones) and its sample weights."""
    import scipy.sparse as sp

    rows = np.fromiter((user_row[u] for u, _ in positive), dtype=np.int32, count=len(positive))
    cols = np.fromiter((item_row[i] for _, i in positive), dtype=np.int32, count=len(positive))
    weights = np.fromiter(positive.values(), dtype=np.float32, count=len(positive))
    interactions = sp.coo_matrix((np.ones_like(weights), (rows, cols)), shape=shape)
    sample_weight = sp.coo_matrix((weights, (rows, cols)), shape=shape)
    return interactions, sample_weight


def _feature_matrix(rows: Sequence[Mapping[str, float]], vocab: dict[str, int]) -> sp.csr_matrix:
    """Rows of named feature weights as a CSR matrix, rows normalised to sum to 1
    (an empty row stays empty); a name not in ``vocab`` gets the next column."""
    import scipy.sparse as sp

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
