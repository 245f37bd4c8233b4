"""The only module that knows how events and snapshots look on disk (msgpack).

Stored event layout: ``[topic, version, {field: value}]``. Decoding looks up the
topic, runs upcasters until the record reaches the current version, then builds
the event class. An upcaster is a pure function ``record -> record`` registered
in :data:`UPCASTERS` under ``(topic, from_version)``; add one whenever an event's
``VERSION`` is raised, and never edit a released version's layout.

Snapshot layout: ``[kind, version, {field: value}]`` built from the state's
own fields; the same upcasting rule applies. A user snapshot (v2) stores the
user's seen items as one string, the ids joined by NUL in first-seen order
(a list of ids if an id holds a NUL): about one byte more than the ids, and
a 5,000-item history encodes in about 0.1 ms. Its v1 kept at most
the latest 1,000 items with their latest type; one that full is decoded as
``partial`` (see :attr:`actors.user.UserState.partial`).

The store frames each record with a checksum (:mod:`actors.framing`); this
module sees the payloads only.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any, Final

import msgpack

from actors.errors import CodecError
from actors.events import (
    EVENT_TYPES,
    Event,
    InteractionRecorded,
    ItemRemoved,
    ItemUpserted,
)
from actors.item import ItemState
from actors.user import DISMISS, Recent, UserState

Record = Any
Upcaster = Callable[[Record], Record]

#: (topic, version) -> function lifting a record from that version to the next.
UPCASTERS: Final[dict[tuple[str, int], Upcaster]] = {}

_packer = msgpack.Packer(use_bin_type=True)


def _packb(obj: Any) -> bytes:
    packed: bytes = _packer.pack(obj)
    return packed


def _unpackb(data: bytes) -> Any:
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, use_list=True)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise CodecError(f"undecodable record: {exc}") from exc


def _upcast(topic: str, version: int, record: Record, current: int) -> Record:
    while version < current:
        upcaster = UPCASTERS.get((topic, version))
        if upcaster is None:
            raise CodecError(f"no upcaster for {topic} v{version} -> v{version + 1}")
        record = upcaster(record)
        version += 1
    if version > current:
        raise CodecError(f"{topic} v{version} is newer than this build (v{current})")
    return record


# -- events -------------------------------------------------------------------


def _terms_in(raw: Any) -> Any:
    if raw is None:
        return None
    return {field: (None if values is None else tuple(values)) for field, values in raw.items()}


# Records are positional arrays (cheaper to pack and unpack than maps); the
# field order of a (topic, version) is frozen once released.


def encode_event(event: Event) -> bytes:
    """Encode one event to its stored bytes."""
    if isinstance(event, InteractionRecorded):
        fields: list[Any] = [
            event.id,
            event.type,
            event.user,
            event.item,
            event.ts,
            event.weight,
            event.props,
            event.item_terms,
        ]
    elif isinstance(event, ItemUpserted):
        fields = [
            event.id,
            event.item,
            event.ts,
            event.kind,
            event.terms,
            event.numbers,
            event.active,
        ]
    else:
        fields = [event.id, event.item, event.ts]
    return _packb([event.TOPIC, event.VERSION, fields])


def decode_event(data: bytes) -> Event:
    """Decode an event's bytes (a stored record's payload) to an event of the current version.

    Raises:
        CodecError: unknown topic, a version this build cannot read, or corrupt bytes.
    """
    try:
        topic, version, record = _unpackb(data)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"malformed event record: {exc}") from exc
    cls = EVENT_TYPES.get(topic)
    if cls is None:
        raise CodecError(f"unknown event topic {topic!r}")
    if version != cls.VERSION:
        record = _upcast(topic, version, record, cls.VERSION)
    try:
        if cls is InteractionRecorded:
            event_id, type_, user, item, ts, weight, props, terms = record
            return InteractionRecorded(
                id=event_id,
                type=type_,
                user=user,
                item=item,
                ts=ts,
                weight=weight,
                props=props,
                item_terms=_terms_in(terms),
            )
        if cls is ItemUpserted:
            event_id, item, ts, kind, terms, numbers, active = record
            return ItemUpserted(
                id=event_id,
                item=item,
                ts=ts,
                kind=kind,
                terms=_terms_in(terms),
                numbers=numbers,
                active=active,
            )
        event_id, item, ts = record
        return ItemRemoved(id=event_id, item=item, ts=ts)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"{topic} v{cls.VERSION} record has the wrong shape: {exc}") from exc


# -- snapshots ----------------------------------------------------------------

ITEM_SNAPSHOT_VERSION: Final = 1
USER_SNAPSHOT_VERSION: Final = 2

#: How many seen items a v1 user snapshot kept at most (the latest ones).
_V1_SEEN_MAX: Final = 1000
_SEP: Final = "\0"


def upcast_user_v1_v2(record: Record) -> Record:
    """v1 ``seen`` (item -> latest type, at most 1,000) -> v2 ``seen`` and ``dismissed``.

    A v1 snapshot with 1,000 seen items may have forgotten older ones: it is
    marked ``partial``, and the user actor rebuilds that user from its stream.
    """
    seen: dict[str, str] = record["seen"]
    record = dict(record)
    record["seen"] = list(seen)
    record["dismissed"] = [i for i, t in seen.items() if t == DISMISS]
    record["partial"] = len(seen) >= _V1_SEEN_MAX
    return record


UPCASTERS[("user-snapshot", 1)] = upcast_user_v1_v2


def _seen_out(seen: dict[str, None]) -> str | list[str]:
    if not seen:
        return []
    joined = _SEP.join(seen)
    # One C-level count tells whether an id holds the separator.
    return joined if joined.count(_SEP) == len(seen) - 1 else list(seen)


def _seen_in(raw: str | list[str]) -> dict[str, None]:
    # Interned: every user who saw an item shares one copy of its id.
    return dict.fromkeys(map(sys.intern, raw.split(_SEP) if isinstance(raw, str) else raw))


def encode_state(state: ItemState | UserState) -> bytes:
    """Encode an actor state for a snapshot."""
    if isinstance(state, ItemState):
        return _packb(
            [
                "item",
                ITEM_SNAPSHOT_VERSION,
                {
                    "id": state.id,
                    "seq": state.seq,
                    "exists": state.exists,
                    "kind": state.kind,
                    "terms": dict(state.terms),
                    "numbers": dict(state.numbers),
                    "active": state.active,
                    "counters": dict(state.counters),
                    "decayed": state.decayed,
                    "landmark": state.landmark,
                    "updated": state.updated,
                },
            ]
        )
    return _packb(
        [
            "user",
            USER_SNAPSHOT_VERSION,
            {
                "id": state.id,
                "seq": state.seq,
                "counters": dict(state.counters),
                "recent": state.recent,
                "affinity": state.affinity,
                "landmark": state.landmark,
                "seen": _seen_out(state.seen),
                "dismissed": list(state.dismissed),
                "updated": state.updated,
                **({"partial": True} if state.partial else {}),
            },
        ]
    )


def decode_item_record(data: bytes) -> dict[str, Any]:
    """An item snapshot's fields as a map, arrays as tuples: the fast path of an index rebuild.

    The same fields :func:`decode_state` makes an :class:`ItemState` of, without building one.

    Raises:
        CodecError: not an item snapshot, or corrupt bytes.
    """
    try:
        kind, version, record = msgpack.unpackb(
            data, raw=False, strict_map_key=False, use_list=False
        )
    except (
        TypeError,
        ValueError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
    ) as exc:
        raise CodecError(f"malformed snapshot: {exc}") from exc
    if kind != "item":
        raise CodecError(f"expected an item snapshot, got {kind!r}")
    upcast: dict[str, Any] = _upcast("item-snapshot", version, record, ITEM_SNAPSHOT_VERSION)
    return upcast


def decode_state(data: bytes) -> ItemState | UserState:
    """Decode snapshot bytes to the actor state they were made from.

    Raises:
        CodecError: unknown kind, unreadable version or corrupt bytes.
    """
    try:
        kind, version, record = _unpackb(data)
    except (TypeError, ValueError) as exc:
        raise CodecError(f"malformed snapshot: {exc}") from exc
    try:
        if kind == "item":
            record = _upcast("item-snapshot", version, record, ITEM_SNAPSHOT_VERSION)
            return ItemState(
                id=record["id"],
                seq=record["seq"],
                exists=record["exists"],
                kind=record["kind"],
                terms={f: tuple(v) for f, v in record["terms"].items()},
                numbers=record["numbers"],
                active=record["active"],
                counters=record["counters"],
                decayed=record["decayed"],
                landmark=record["landmark"],
                updated=record["updated"],
            )
        if kind == "user":
            record = _upcast("user-snapshot", version, record, USER_SNAPSHOT_VERSION)
            return UserState(
                id=record["id"],
                seq=record["seq"],
                counters=record["counters"],
                recent=[Recent(i, t, ts) for i, t, ts in record["recent"]],
                affinity=record["affinity"],
                landmark=record["landmark"],
                seen=_seen_in(record["seen"]),
                dismissed=set(map(sys.intern, record["dismissed"])),
                updated=record["updated"],
                partial=record.get("partial", False),
            )
    except KeyError as exc:
        raise CodecError(f"{kind} snapshot lacks field {exc}") from exc
    except (TypeError, ValueError, AttributeError) as exc:
        raise CodecError(f"{kind} snapshot has the wrong shape: {exc}") from exc
    raise CodecError(f"unknown snapshot kind {kind!r}")
