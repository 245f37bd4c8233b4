"""The codec: events and states round-trip, and bad bytes, topics, versions and shapes
raise CodecError."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import actors
from actors import (
    CodecError,
    InteractionRecorded,
    ItemRemoved,
    ItemState,
    ItemUpserted,
    Recent,
    UserState,
)
from actors.codec import decode_event, decode_state, encode_event, encode_state
from tests.actors.helpers import interaction, item_after, upserted, user_after

ids = st.text(min_size=1, max_size=20)
times = st.floats(min_value=-1e10, max_value=1e10, allow_nan=False, allow_infinity=False)
floats = st.floats(allow_nan=False)
term_values = st.lists(st.text(max_size=8), max_size=3).map(tuple)
terms = st.dictionaries(st.text(max_size=8), term_values, max_size=4)
partial_terms = st.dictionaries(st.text(max_size=8), st.none() | term_values, max_size=4)
partial_numbers = st.dictionaries(st.text(max_size=8), st.none() | floats, max_size=4)
# msgpack turns tuples into lists, so props hold lists (as they do after an RPC).
json_like = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | floats
    | st.text(max_size=10)
    | st.binary(max_size=10),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)

interactions = st.builds(
    InteractionRecorded,
    id=ids,
    type=st.sampled_from(["view", "like", "dismiss", "custom"]) | st.text(max_size=10),
    user=ids,
    item=ids,
    ts=times,
    weight=floats,
    props=st.dictionaries(st.text(max_size=8), json_like, max_size=4),
    item_terms=terms,
)
upserts = st.builds(
    ItemUpserted,
    id=ids,
    item=ids,
    ts=times,
    kind=st.none() | st.text(max_size=8),
    terms=st.none() | partial_terms,
    numbers=st.none() | partial_numbers,
    active=st.none() | st.booleans(),
)
removals = st.builds(ItemRemoved, id=ids, item=ids, ts=times)
events = st.one_of(interactions, upserts, removals)

masses = st.dictionaries(st.text(max_size=8), floats, max_size=4)
item_states = st.builds(
    ItemState,
    id=ids,
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    exists=st.booleans(),
    kind=st.none() | st.text(max_size=8),
    terms=st.dictionaries(st.text(max_size=8), term_values, max_size=4),
    numbers=st.dictionaries(st.text(max_size=8), floats, max_size=4),
    active=st.booleans(),
    counters=st.dictionaries(st.text(max_size=8), st.integers(0, 2**40), max_size=4),
    decayed=masses,
    landmark=times,
    updated=times,
)
user_states = st.builds(
    UserState,
    id=ids,
    seq=st.integers(min_value=0, max_value=2**63 - 1),
    counters=st.dictionaries(st.text(max_size=8), st.integers(0, 2**40), max_size=4),
    recent=st.lists(st.builds(Recent, ids, st.text(max_size=8), times), max_size=5),
    affinity=masses,
    landmark=times,
    seen=st.dictionaries(ids, st.none(), max_size=5),
    dismissed=st.sets(ids, max_size=3),
    updated=times,
    partial=st.booleans(),
)


@settings(max_examples=200)
@given(events)
def test_event_codec_round_trips(event: actors.Event) -> None:
    assert decode_event(encode_event(event)) == event


@given(st.one_of(item_states, user_states))
def test_state_codec_round_trips(state: ItemState | UserState) -> None:
    decoded = decode_state(encode_state(state))

    assert type(decoded) is type(state)
    assert decoded == state
    # Order matters for the bounded collections (eviction order), not only content.
    if isinstance(state, UserState):
        assert isinstance(decoded, UserState)
        assert list(decoded.seen) == list(state.seen)
        assert all(isinstance(r, Recent) for r in decoded.recent)
    else:
        assert isinstance(decoded, ItemState)
        assert all(type(v) is tuple for v in decoded.terms.values())


def test_state_folded_from_events_round_trips() -> None:
    item_state = item_after(
        upserted("e1", terms={"a": ("b", "c")}, numbers={"n": 2.5}), interaction("e2", ts=7.0)
    )
    user_state = user_after(
        *(
            interaction(f"e{k}", item_id=f"i{k}", ts=float(k), item_terms={"a": ("b",)})
            for k in range(60)
        )
    )

    assert decode_state(encode_state(item_state)) == item_state
    assert decode_state(encode_state(user_state)) == user_state


def test_unknown_event_topic_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="unknown event topic"):
        decode_event(msgpack.packb(["no_such_topic", 1, ["x"]]))


def test_event_from_a_newer_build_raises_codec_error() -> None:
    data = msgpack.packb(["item_removed", 99, ["e", "i", 1.0]])

    with pytest.raises(CodecError):
        decode_event(data)


def test_event_of_the_wrong_shape_raises_codec_error() -> None:
    with pytest.raises(CodecError):
        decode_event(msgpack.packb(["item_removed", 1, ["e", "i"]]))


@pytest.mark.parametrize("data", [b"", b"\xc1", b"\x93\x01", msgpack.packb(7)])
def test_corrupt_event_bytes_raise_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_event(data)


def test_unknown_snapshot_kind_raises_codec_error() -> None:
    with pytest.raises(CodecError, match="unknown snapshot kind"):
        decode_state(msgpack.packb(["planet", 1, {}]))


def test_snapshot_missing_a_field_raises_codec_error() -> None:
    with pytest.raises(CodecError):
        decode_state(msgpack.packb(["user", 1, {"id": "u1"}]))


def test_codec_error_is_a_store_error() -> None:
    assert issubclass(CodecError, actors.StoreError)
