"""Trio actors over an LMDB event log: the durable, event-sourced core of Matchlight."""

from actors import decay, framing, item, user
from actors.errors import (
    ActorError,
    AskTimeoutError,
    CodecError,
    CorruptRecordError,
    DirectoryLockedError,
    FieldLimitError,
    MailboxFullError,
    MatchlightError,
    StoreClosedError,
    StoreError,
    SystemClosedError,
)
from actors.events import (
    ITEM,
    USER,
    Event,
    InteractionRecorded,
    ItemRemoved,
    ItemUpserted,
    StoredEvent,
    streams_of,
)
from actors.item import ItemState, RecordInteraction, RemoveItem, UpsertItem
from actors.item_index import ItemSignals
from actors.lmdb_store import LmdbEventStore
from actors.lock import DirectoryLock
from actors.memory_store import MemoryEventStore
from actors.projections import Projections
from actors.ratelimit import RateLimitedLog
from actors.runtime import ActorRuntime, Behavior, Outcome, RuntimeConfig
from actors.store import MAX_KEY_BYTES, AppendResult, EventStore, Snapshot
from actors.system import (
    DEFAULT_CLOCK_SKEW_S,
    ActorSystem,
    SystemConfig,
    WriteResult,
    open_actor_system,
)
from actors.user import Recent, UserState
from actors.writer import StoreWriter

__all__ = [
    "DEFAULT_CLOCK_SKEW_S",
    "ITEM",
    "MAX_KEY_BYTES",
    "USER",
    "ActorError",
    "ActorRuntime",
    "ActorSystem",
    "AppendResult",
    "AskTimeoutError",
    "Behavior",
    "CodecError",
    "CorruptRecordError",
    "DirectoryLock",
    "DirectoryLockedError",
    "Event",
    "EventStore",
    "FieldLimitError",
    "InteractionRecorded",
    "ItemRemoved",
    "ItemSignals",
    "ItemState",
    "ItemUpserted",
    "LmdbEventStore",
    "MailboxFullError",
    "MatchlightError",
    "MemoryEventStore",
    "Outcome",
    "Projections",
    "RateLimitedLog",
    "Recent",
    "RecordInteraction",
    "RemoveItem",
    "RuntimeConfig",
    "Snapshot",
    "StoreClosedError",
    "StoreError",
    "StoreWriter",
    "StoredEvent",
    "SystemClosedError",
    "SystemConfig",
    "UpsertItem",
    "UserState",
    "WriteResult",
    "decay",
    "framing",
    "item",
    "open_actor_system",
    "streams_of",
    "user",
]
