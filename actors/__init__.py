"""Trio actors over an LMDB event log: the durable, event-sourced core of Matchlight."""

from actors import decay, item, user
from actors.errors import (
    ActorError,
    AskTimeoutError,
    CodecError,
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
from actors.memory_store import MemoryEventStore
from actors.runtime import ActorRuntime, Behavior, Outcome, RuntimeConfig
from actors.store import MAX_KEY_BYTES, AppendResult, EventStore, LmdbEventStore, Snapshot
from actors.system import ActorSystem, SystemConfig, WriteResult, open_actor_system
from actors.user import Recent, UserState
from actors.writer import StoreWriter

__all__ = [
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
    "Event",
    "EventStore",
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
    "item",
    "open_actor_system",
    "streams_of",
    "user",
]
