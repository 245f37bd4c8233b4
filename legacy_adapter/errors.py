"""Exceptions raised by the legacy adapter."""

from __future__ import annotations

from actors import MatchlightError


class LegacyAdapterError(MatchlightError):
    """Base class of the legacy adapter's errors."""


class FeedError(LegacyAdapterError):
    """A legacy batch feed cannot be opened, read or loaded.

    Raised for a bad feed spec (missing path, unknown extension, malformed
    ``sqlite:`` spec), a source that fails while being read, or a feed store
    that cannot be opened or written. A load that raises it changed nothing:
    the previously loaded feed keeps serving. Bad lines or rows of a readable
    feed never raise it; they are counted in the load's report.
    """


class MigrationError(LegacyAdapterError):
    """A surface's migration settings are invalid (the message names the field)."""


class RealtimeUnavailable(LegacyAdapterError):
    """In ``canary``/``live`` the real-time path failed and the feed has no list for the user."""
