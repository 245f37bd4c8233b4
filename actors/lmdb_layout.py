"""How the event log is laid out in LMDB: keys, stored records and snapshot values.

One environment, named databases:

``events``     seq (8-byte big-endian) -> sealed(encoded event)
``ids``        event id (utf-8) -> seq                    idempotency keys
``streams``    kind(1) + len(2) + entity id -> seq(8), sorted duplicates
``snapshots``  kind(1) + len(2) + entity id -> sealed(seq(8) + encoded state, key)

``sealed`` is the checksummed framing of :mod:`actors.framing`; records written
before it are read as they are. Pure functions over bytes: the store
(:mod:`actors.lmdb_store`) and ``matchlight verify`` (:mod:`actors.integrity`)
share them.
"""

from __future__ import annotations

import struct
from typing import Final

from actors.codec import encode_event
from actors.errors import CorruptRecordError, StoreError
from actors.events import Event
from actors.framing import HEADER_SIZE, is_sealed, seal_payload, unseal
from actors.store import MAX_KEY_BYTES

SEQ: Final = struct.Struct(">Q")
"""A ``seq`` as stored: 8 bytes, big-endian (so keys sort by ``seq``)."""
_LEN: Final = struct.Struct(">H")
KIND_BYTE: Final = {"user": b"u", "item": b"i"}
"""The first byte of an entity key, per entity kind."""
_KIND_OF_BYTE: Final = {byte[0]: kind for kind, byte in KIND_BYTE.items()}


def check_size(what: str, raw: bytes) -> None:
    """Raise :class:`StoreError` unless ``raw`` is an id of 1 to :data:`MAX_KEY_BYTES` bytes."""
    if not raw or len(raw) > MAX_KEY_BYTES:
        raise StoreError(f"{what} must be 1..{MAX_KEY_BYTES} utf-8 bytes, got {len(raw)}")


def entity_key(kind: str, entity_id: str) -> bytes:
    """An entity's key in ``streams`` and ``snapshots``. Raises :class:`StoreError` if too long."""
    raw = entity_id.encode()
    if not raw or len(raw) > MAX_KEY_BYTES:
        check_size("entity id", raw)
    return KIND_BYTE[kind] + _LEN.pack(len(raw)) + raw


def entity_id_of(key: bytes) -> str:
    """The entity id in a well-formed entity key (unchecked: see :func:`parse_entity_key`)."""
    (length,) = _LEN.unpack_from(key, 1)
    return key[3 : 3 + length].decode()


def parse_entity_key(key: bytes) -> tuple[str, str]:
    """``(kind, entity id)`` of a ``streams`` or ``snapshots`` key.

    Raises:
        CorruptRecordError: the key is not of that form.
    """
    kind = _KIND_OF_BYTE.get(key[0]) if key else None
    if kind is None or len(key) < 3 or _LEN.unpack_from(key, 1)[0] != len(key) - 3:
        raise CorruptRecordError(f"malformed entity key {bytes(key[:40])!r}")
    try:
        return kind, key[3:].decode()
    except UnicodeDecodeError as exc:
        raise CorruptRecordError(f"entity key {bytes(key[:40])!r} is not utf-8") from exc


def seal_event(event: Event) -> bytes:
    """An event's stored record (:func:`actors.framing.seal_payload` of its encoding)."""
    return seal_payload(encode_event(event))


def open_snapshot(key: bytes, raw: bytes) -> tuple[int, bytes]:
    """``(seq, encoded state)`` of a stored snapshot value under ``key``.

    Raises:
        CorruptRecordError: its checksum fails (or it is too short to hold a ``seq``).
    """
    payload = unseal(raw, key)
    if len(payload) < SEQ.size:
        raise CorruptRecordError(f"snapshot value of {len(payload)} bytes is too short")
    return SEQ.unpack_from(payload)[0], payload[SEQ.size :]


def stored_seq(raw: bytes) -> int | None:
    """The ``seq`` a snapshot value says it has, unchecked (for messages), if it has one."""
    offset = HEADER_SIZE if is_sealed(raw) else 0
    return SEQ.unpack_from(raw, offset)[0] if len(raw) >= offset + SEQ.size else None
