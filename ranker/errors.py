"""Errors of the ranker."""

from __future__ import annotations

from actors.errors import MatchlightError


class RankerError(MatchlightError):
    """Something in the ranker failed."""


class ConfigError(RankerError):
    """The surfaces configuration is invalid; the message names the offending key."""


class ModelError(RankerError):
    """A model artifact cannot be trained, written or loaded."""


class RequestError(RankerError):
    """A ``recommend`` request is invalid (a bad filter, a context value of the wrong type)."""


class ReplayError(RankerError):
    """A decision cannot be replayed (the message says why)."""
