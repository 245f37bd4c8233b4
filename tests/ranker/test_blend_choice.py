"""Which blend serves: a pinned one, else the one learned with the model, else a default."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest

from ranker import Model, parse_surfaces, pipeline
from ranker.model import UNCLIPPED, learned_blend
from ranker.policy import CLIP_Z, DEFAULT_BLEND, HEURISTIC_BLEND, Blend
from ranker.serving import ServingModel


def model_with(facts: dict[str, Any]) -> Model:
    empty = np.zeros((0, 2), dtype=np.float32)
    return Model(
        version="v",
        trained_seq=0,
        item_vocab={},
        item_embeddings=empty,
        item_biases=np.zeros(0, dtype=np.float32),
        user_vocab={},
        user_embeddings=empty,
        user_biases=np.zeros(0, dtype=np.float32),
        facts=facts,
    )


def serving(model: Model) -> ServingModel:
    none = np.zeros(0)
    return ServingModel(
        model=model,
        vectors=np.zeros((0, 2), dtype=np.float32),
        biases=none.astype(np.float32),
        ready=none.astype(bool),
        versions=none.astype(np.uint32),
        blend=learned_blend(model),
    )


def test_a_learned_blend_is_read_from_the_models_facts() -> None:
    model = model_with({"blend": {"model": 0.5, "cooccurrence": 1.0, "trending": 0.25}})

    assert learned_blend(model) == Blend(model=0.5, cooccurrence=1.0, trending=0.25)


def test_a_blend_learned_on_unclipped_parts_is_served_unclipped() -> None:
    learned = {"blend": {"model": 1.0, "cooccurrence": 0.5}}

    assert learned_blend(model_with(learned | {"blend_parts": UNCLIPPED})) == Blend(
        model=1.0, cooccurrence=0.5, clip_z=math.inf
    )
    # An artifact from before the learner said so was learned on clipped parts.
    assert learned_blend(model_with(learned)) == Blend(model=1.0, cooccurrence=0.5, clip_z=CLIP_Z)


@pytest.mark.parametrize(
    "raw",
    [
        None,
        {},
        {"model": 0.0},
        {"model": -1.0},
        {"model": float("nan")},
        {"model": True},
        {"model": "1"},
        {"novelty": 1.0},
        [1.0],
    ],
)
def test_an_unusable_learned_blend_is_ignored(raw: Any) -> None:
    assert learned_blend(model_with({} if raw is None else {"blend": raw})) is None


def test_pinned_beats_learned_beats_default() -> None:
    surfaces = parse_surfaces(
        {"surfaces": {"pinned": {"blend": {"popularity": 1.0}}, "free": {"k": 5}}}
    )
    learned = serving(model_with({"blend": {"cooccurrence": 1.0}}))
    plain = serving(model_with({}))

    assert pipeline.blend(surfaces.get("pinned"), learned) == Blend(model=0.0, popularity=1.0)
    assert pipeline.blend(surfaces.get("free"), learned) == Blend(model=0.0, cooccurrence=1.0)
    assert pipeline.blend(surfaces.get("free"), plain) == DEFAULT_BLEND
    assert pipeline.blend(surfaces.get("free"), None) == HEURISTIC_BLEND
    # A pinned blend without a model serves its non-model parts.
    assert pipeline.blend(surfaces.get("pinned"), None) == Blend(model=0.0, popularity=1.0)
