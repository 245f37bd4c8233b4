"""Exceptions raised by the actor runtime and the event store."""

from __future__ import annotations


class MatchlightError(Exception):
    """Base class of every error Matchlight raises on purpose."""


class StoreError(MatchlightError):
    """The event store could not do what was asked; nothing of the request was written."""


class StoreClosedError(StoreError):
    """The store was closed by its owner; no further reads or writes."""


class DirectoryLockedError(StoreError):
    """Another process holds the data directory's lock (the message names it)."""


class CodecError(StoreError):
    """Bytes in the store do not decode to a known event or snapshot (unknown topic/version)."""


class CorruptRecordError(CodecError):
    """A stored record fails its checksum or does not decode: the store's file is damaged.

    Raised by event reads; the message names the record (its ``seq``) and says
    to run ``matchlight verify``. Reads of other records are unaffected. (A
    corrupt snapshot is not raised: it is counted and treated as absent.)
    """


class FieldLimitError(MatchlightError):
    """A write would give the catalogue more distinct numeric fields than allowed.

    The message names the offending field by its path in the request. Nothing was written.
    """


class ActorError(MatchlightError):
    """An actor failed while handling a message; it is restarted from its durable state."""


class MailboxFullError(MatchlightError):
    """An actor's bounded mailbox is full and the caller asked not to wait."""


class AskTimeoutError(MatchlightError):
    """An ``ask`` got no reply before its deadline."""


class SystemClosedError(MatchlightError):
    """The actor system is shutting down and takes no more messages."""
