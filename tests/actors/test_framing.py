"""The checksummed framing of stored records (:mod:`actors.framing`)."""

from __future__ import annotations

import pytest

from actors import CodecError, CorruptRecordError, InteractionRecorded, framing
from actors.codec import decode_event, encode_event

EVENT = InteractionRecorded(
    id="e1", type="like", user="u1", item="i1", ts=1.0, item_terms={"city": ("austin",)}
)


def test_a_sealed_record_round_trips_to_its_payload() -> None:
    payload = encode_event(EVENT)

    record = framing.seal(payload, b"key")

    assert record[0] == framing.MARK
    assert framing.is_sealed(record)
    assert bytes(framing.unseal(record, b"key")) == payload
    assert decode_event(framing.unseal(record, b"key")) == EVENT
    assert bytes(framing.unseal(framing.seal_payload(payload))) == payload


def test_every_single_bit_flip_of_a_sealed_record_is_caught() -> None:
    record = framing.seal(encode_event(EVENT), b"key")
    for bit in range(8, 8 * len(record)):  # the mark byte itself: see the next test
        damaged = bytearray(record)
        damaged[bit // 8] ^= 1 << (bit % 8)
        with pytest.raises(CorruptRecordError, match="checksum mismatch"):
            framing.unseal(bytes(damaged), b"key")


def test_a_damaged_mark_leaves_bytes_msgpack_cannot_take_for_an_old_record() -> None:
    """Flipping the mark makes the record look unsealed; its first byte is then not msgpack's."""
    record = bytearray(framing.seal(encode_event(EVENT)))
    record[0] ^= 0x01
    with pytest.raises(CodecError, match=r"malformed|undecodable|wrong shape"):
        decode_event(framing.unseal(bytes(record)))


def test_the_key_is_covered_a_record_under_another_key_fails() -> None:
    record = framing.seal(b"payload", b"item:i1")

    with pytest.raises(CorruptRecordError):
        framing.unseal(record, b"item:i2")


def test_records_written_before_checksums_are_returned_as_they_are() -> None:
    old = encode_event(EVENT)  # a msgpack array: never starts with the mark

    assert not framing.is_sealed(old)
    assert framing.unseal(old, b"any key") is old
    assert framing.unseal(b"") == b""


def test_a_header_cut_short_is_corrupt() -> None:
    with pytest.raises(CorruptRecordError, match="cut short"):
        framing.unseal(bytes([framing.MARK, 1, 2]))
