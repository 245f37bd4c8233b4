"""The model as served: item representations aligned with the index, and the live user vector.

A :class:`ServingModel` holds a trained :class:`~ranker.model.Model` with
one row per internal id of the index: the items' LightFM representations,
computed from their current kind and terms. Rows are filled lazily (an item
added or changed since the model was loaded gets its row when it is next a
candidate) and the arrays grow by copying, so a request holding an older
``ServingModel`` keeps a consistent one. The user is folded in from live
state on every request (:func:`model_scores`). Pure functions, no Trio:
:class:`~ranker.actor.RankerActor` keeps the current ``ServingModel`` and
swaps it when a new model appears; ``matchlight train`` scores held-out
engagements with the same functions (:mod:`ranker.blend_fit`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Final

import attrs
import numpy as np
import numpy.typing as npt

from index import Index
from ranker import stages
from ranker.model import Model, learned_blend
from ranker.policy import Blend

#: Weight of the recently engaged items' embeddings in the live user vector (0: off).
RECENT_ITEMS_WEIGHT: Final = 1.0


@attrs.frozen(kw_only=True, eq=False)
class ServingModel:
    """A model and its item representations, aligned with the index's internal ids."""

    model: Model
    vectors: npt.NDArray[np.float32]
    biases: npt.NDArray[np.float32]
    #: Which rows are computed; others are filled on first use.
    ready: npt.NDArray[np.bool_]
    #: The index's term version of each row when it was computed (stale when it differs).
    versions: npt.NDArray[np.uint32]
    #: The blend ``matchlight train`` learned with the model, if it did.
    blend: Blend | None = None


def serving_model(model: Model, index: Index, count: int) -> ServingModel:
    """Item representations for the first ``count`` internal ids. Blocking (a worker thread).

    Reads the index from another thread: documents are immutable once put,
    and the list slots read are replaced atomically.
    """
    capacity = max(count, 1024)
    vectors = np.zeros((capacity, model.components), dtype=np.float32)
    biases = np.zeros(capacity, dtype=np.float32)
    ready = np.zeros(capacity, dtype=bool)
    versions = np.zeros(capacity, dtype=np.uint32)
    serving = ServingModel(
        model=model,
        vectors=vectors,
        biases=biases,
        ready=ready,
        versions=versions,
        blend=learned_blend(model),
    )
    _fill_rows(serving, index, np.arange(count, dtype=np.uint32))
    return serving


def _fill_rows(serving: ServingModel, index: Index, docs: npt.NDArray[np.uint32]) -> None:
    """Compute the rows of ``docs`` from the items' current kind and terms."""
    model = serving.model
    # Versions first: a change while computing leaves an older version, so the row is redone.
    serving.versions[docs] = index.term_versions(docs)
    for doc in docs.tolist():
        document = index.document(doc)
        if document is None:
            continue  # not searchable now: filled when it is a candidate
        kind, terms = document
        (item_id,) = index.external([doc])
        vector, bias = model.item_representation(item_id, kind, terms)
        serving.vectors[doc] = vector
        serving.biases[doc] = bias
        serving.ready[doc] = True


def ensure_rows(serving: ServingModel, index: Index, docs: npt.NDArray[np.uint32]) -> ServingModel:
    """``serving`` with the rows of ``docs`` (sorted) computed where new since the model or
    where the item's terms changed; a grown copy if a doc lies beyond its rows."""
    top = int(docs[-1])
    if top >= len(serving.ready):
        serving = _grown(serving, top + 1)
    # Rows never computed, or computed before the item's terms last changed.
    missing = docs[~serving.ready[docs] | (serving.versions[docs] != index.term_versions(docs))]
    if len(missing):
        _fill_rows(serving, index, missing)
    return serving


def _grown(serving: ServingModel, size: int) -> ServingModel:
    capacity = max(size, 2 * len(serving.ready))
    vectors = np.zeros((capacity, serving.model.components), dtype=np.float32)
    biases = np.zeros(capacity, dtype=np.float32)
    ready = np.zeros(capacity, dtype=bool)
    versions = np.zeros(capacity, dtype=np.uint32)
    n = len(serving.ready)
    vectors[:n], biases[:n], ready[:n] = serving.vectors, serving.biases, serving.ready
    versions[:n] = serving.versions
    return ServingModel(
        model=serving.model,
        vectors=vectors,
        biases=biases,
        ready=ready,
        versions=versions,
        blend=serving.blend,
    )


def user_vector(
    serving: ServingModel,
    index: Index,
    user_id: str,
    affinity: Mapping[str, float],
    engaged: tuple[stages.Docs, stages.Floats],
) -> tuple[npt.NDArray[np.float32], ServingModel]:
    """The user folded in from live state: features, plus the items just engaged with.

    The LightFM representation from the user's identity (if trained) and
    current favourite terms, plus :data:`RECENT_ITEMS_WEIGHT` times the
    weighted mean embedding of their latest engagements
    (:func:`stages.recent_engagements`), scaled to the same length. Also
    returns ``serving`` with the engaged items' rows computed.
    """
    u, _ = serving.model.user_representation(user_id, affinity)
    docs, weights = engaged
    if not RECENT_ITEMS_WEIGHT or not len(docs):
        return u, serving
    serving = ensure_rows(serving, index, np.unique(docs))
    return stages.fold_in(u, serving.vectors[docs], weights, RECENT_ITEMS_WEIGHT), serving


def model_scores(
    serving: ServingModel,
    index: Index,
    docs: stages.Docs,
    user_id: str,
    affinity: Mapping[str, float],
    engaged: tuple[stages.Docs, stages.Floats],
) -> tuple[stages.Floats, ServingModel]:
    """The model's score of each candidate of ``docs`` (sorted, not empty) for the live user.

    Also returns ``serving`` with the rows used computed (a grown copy if a
    doc lay beyond its rows): the caller keeps it as the model served.
    """
    serving = ensure_rows(serving, index, docs)
    u, serving = user_vector(serving, index, user_id, affinity, engaged)
    scores = (serving.vectors[docs] @ u + serving.biases[docs]).astype(np.float64)
    return scores, serving
