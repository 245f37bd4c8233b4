"""Exceptions raised by the actor runtime and the event store."""

from __future__ import annotations


class MatchlightError(Exception):
    """Base class of every error Matchlight raises on purpose."""


class StoreError(MatchlightError):
    """The event store could not do what was asked; nothing of the request was written."""


class StoreClosedError(StoreError):
    """The store was closed by its owner; no further reads or writes."""


class CodecError(StoreError):
    """Bytes in the store do not decode to a known event or snapshot (unknown topic/version)."""


class ActorError(MatchlightError):
    """An actor failed while handling a message; it is restarted from its durable state."""


class MailboxFullError(MatchlightError):
    """An actor's bounded mailbox is full and the caller asked not to wait."""


class AskTimeoutError(MatchlightError):
    """An ``ask`` got no reply before its deadline."""


class SystemClosedError(MatchlightError):
    """The actor system is shutting down and takes no more messages."""
