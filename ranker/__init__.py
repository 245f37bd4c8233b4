"""The ranker: ``recommend`` from live state, LightFM with fold-in, and surface policies."""

from ranker.actor import RankerActor, RankerStatistics, open_ranker
from ranker.configs import ServedConfig, config_at, keep_config, keep_copy, served_config
from ranker.decisions import DecisionLog, DecisionStatistics
from ranker.errors import ConfigError, ModelError, RankerError, ReplayError, RequestError
from ranker.model import Model, check_current, current_version, load_model, save_model
from ranker.pipeline import Recommendation, RecommendRequest, slot_marginals
from ranker.policy import (
    DEFAULT_SURFACE,
    Blend,
    Diversity,
    Exploration,
    Reciprocal,
    Rule,
    Stochastic,
    Surface,
    Surfaces,
    load_surfaces,
    parse_surfaces,
)
from ranker.retention import DEFAULT_KEEP_MODELS, prune_models
from ranker.stochastic import Marginals, position_marginals
from ranker.train import fit, train
from ranker.train_data import TrainingConfig, TrainingData, read_log

__all__ = [
    "DEFAULT_KEEP_MODELS",
    "DEFAULT_SURFACE",
    "Blend",
    "ConfigError",
    "DecisionLog",
    "DecisionStatistics",
    "Diversity",
    "Exploration",
    "Marginals",
    "Model",
    "ModelError",
    "RankerActor",
    "RankerError",
    "RankerStatistics",
    "Reciprocal",
    "RecommendRequest",
    "Recommendation",
    "ReplayError",
    "RequestError",
    "Rule",
    "ServedConfig",
    "Stochastic",
    "Surface",
    "Surfaces",
    "TrainingConfig",
    "TrainingData",
    "check_current",
    "config_at",
    "current_version",
    "fit",
    "keep_config",
    "keep_copy",
    "load_model",
    "load_surfaces",
    "open_ranker",
    "parse_surfaces",
    "position_marginals",
    "prune_models",
    "read_log",
    "save_model",
    "served_config",
    "slot_marginals",
    "train",
]
