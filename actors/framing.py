"""Checksummed framing of stored records: how a reader tells damaged bytes from data.

A *sealed* record is one byte ``0xC1``, then the CRC-32 of the record's key
and payload (4 bytes, big-endian), then the payload::

    0xC1 | crc32(key + payload) | payload

``0xC1`` is the one byte msgpack never writes, and the values written before
checksums existed start otherwise (an event with a msgpack array, a snapshot
with its 8-byte ``seq``, whose first byte is 0), so a record without the mark
is a pre-checksum record: :func:`unseal` returns it as it is and the decoder
is its only check. The key is covered (without being stored) where the writer
knows it when it seals: a snapshot sealed under one entity's key fails under
another's. Event records are sealed before their ``seq`` is assigned (on the
caller's thread, see :meth:`actors.lmdb_store.LmdbEventStore.prepare`), so their
checksum covers the payload alone; ``matchlight verify`` checks each event
against the ``ids`` table instead.

The store applies the framing (:mod:`actors.lmdb_store`), the codec never sees it
(:mod:`actors.codec`); the legacy feed store seals its entries the same way.
"""

from __future__ import annotations

import struct
import zlib
from typing import Final

from actors.errors import CorruptRecordError

MARK: Final = 0xC1
"""The first byte of a sealed record (never written by msgpack)."""

_HEADER: Final = struct.Struct(">BI")
HEADER_SIZE: Final = _HEADER.size

_pack_header = _HEADER.pack
_crc32 = zlib.crc32


def seal(payload: bytes, key: bytes = b"") -> bytes:
    """``payload`` framed with the checksum of ``key`` and ``payload`` (key not stored)."""
    return _pack_header(MARK, _crc32(payload, _crc32(key))) + payload


def seal_payload(payload: bytes) -> bytes:
    """:func:`seal` without a key: the hot path of event writes (a few hundred ns)."""
    return _pack_header(MARK, _crc32(payload)) + payload


def is_sealed(record: bytes) -> bool:
    """Whether ``record`` carries a checksum (else it predates checksums)."""
    return bool(record) and record[0] == MARK


def unseal(record: bytes, key: bytes = b"") -> bytes:
    """The payload of ``record``, its checksum checked; an unsealed record as it is.

    Raises:
        CorruptRecordError: the checksum does not match ``key`` and the payload,
            or the header is cut short.
    """
    if not record or record[0] != MARK:
        return record
    if len(record) < HEADER_SIZE:
        raise CorruptRecordError(f"record cut short ({len(record)} bytes)")
    # A copy, not a memoryview: crc32 and msgpack read bytes faster, more than paying for it.
    payload = record[HEADER_SIZE:]
    expected = _HEADER.unpack_from(record)[1]
    actual = _crc32(payload, _crc32(key)) if key else _crc32(payload)
    if actual != expected:
        raise CorruptRecordError(
            f"checksum mismatch (stored {expected:08x}, computed {actual:08x})"
        )
    return payload
