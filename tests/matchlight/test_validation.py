"""``matchlight.server.validation`` on its own: RPC params become domain commands, or a
``BadRequest`` naming the offending field's path.

The ingest fast path (cheap ``type() is`` checks) and the field-by-field slow
path must agree on every well-formed event, and a single corrupted field must
be reported at its own path whatever the rest of the batch looks like.
"""

from __future__ import annotations

import math
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import index
from actors import (
    DEFAULT_CLOCK_SKEW_S,
    MAX_KEY_BYTES,
    RecordInteraction,
    RemoveItem,
    UpsertItem,
)
from matchlight.errors import BadRequest
from matchlight.server import validation

EVENT_FIELDS = ("id", "type", "user", "item", "ts", "weight", "props")

# No per-example deadline: the suite runs next to whole-process tests on two cores.
relaxed = settings(deadline=None)

# Any text of at most 64 characters is at most 256 utf-8 bytes (the fast path's bound).
short_ids = st.text(min_size=1, max_size=MAX_KEY_BYTES // 4)
long_ids = st.text(min_size=MAX_KEY_BYTES // 4 + 1, max_size=MAX_KEY_BYTES).filter(
    lambda s: len(s.encode()) <= MAX_KEY_BYTES
)
# msgpack integers are at most 64 bits wide.
wire_ints = st.integers(-(2**63), 2**64 - 1)
ids = st.one_of(short_ids, long_ids, wire_ints)
event_types = st.text(min_size=1, max_size=validation.MAX_TYPE_LEN)
finite_numbers = st.one_of(st.floats(allow_nan=False, allow_infinity=False), wire_ints)
#: The server's clock in these tests; events may be up to the default skew ahead of it.
NOW = 1_700_000_000.0
LATEST = NOW + DEFAULT_CLOCK_SKEW_S
timestamps = st.one_of(st.floats(0.0, LATEST), st.integers(0, int(LATEST)))
weights = st.one_of(st.floats(0.0, validation.MAX_WEIGHT), st.integers(0, 1_000_000))
prop_values = st.recursive(
    st.none() | st.booleans() | wire_ints | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
props = st.dictionaries(st.text(max_size=10), prop_values, max_size=4)


@st.composite
def well_formed_events(draw: st.DrawFn) -> dict[str, Any]:
    # Half the events are all short strings (the fast path's shape), half mix in the rest.
    id_of = draw(st.sampled_from([short_ids, ids]))
    event: dict[str, Any] = {
        "id": draw(id_of),
        "type": draw(event_types),
        "user": draw(id_of),
        "item": draw(id_of),
        "ts": draw(timestamps),
    }
    if draw(st.booleans()):
        event["weight"] = draw(weights)
    if draw(st.booleans()):
        event["props"] = draw(st.none() | props)
    order = draw(st.permutations(list(event)))
    return {key: event[key] for key in order}


def command_of(event: dict[str, Any]) -> RecordInteraction:
    """The command a well-formed event stands for, built independently of the module."""
    return RecordInteraction(
        id=str(event["id"]),
        type=event["type"],
        user=str(event["user"]),
        item=str(event["item"]),
        ts=float(event["ts"]),
        weight=float(event.get("weight", 1.0)),
        props=event.get("props") or {},
    )


@relaxed
@given(st.lists(well_formed_events(), max_size=20))
def test_well_formed_events_become_commands_with_the_same_fields(
    events: list[dict[str, Any]],
) -> None:
    commands = validation.events({"events": events}, now=NOW)
    assert commands == [command_of(e) for e in events]
    assert all(type(c.ts) is float and type(c.weight) is float for c in commands)


@relaxed
@given(st.lists(well_formed_events(), max_size=20))
def test_fast_path_and_slow_path_agree(events: list[dict[str, Any]]) -> None:
    slow = [validation._event_slow(e, f"events[{i}]", NOW) for i, e in enumerate(events)]
    assert validation.events({"events": events}, now=NOW) == slow


MISSING = object()
#: Per field, values that make an otherwise well-formed event invalid.
BAD_VALUES: dict[str, list[Any]] = {
    "id": [MISSING, None, True, 1.5, [], {}, "", "x" * 257, "é" * 129],
    "user": [MISSING, None, False, 2.0, ["u"], "", "u" * 257],
    "item": [MISSING, None, True, 0.5, {"id": "i"}, "", "€" * 86],
    "type": [MISSING, None, 5, True, 1.0, "", "t" * 65, ["like"]],
    "ts": [
        *(MISSING, None, "1700000000", True, math.nan, math.inf, -math.inf, [], {}),
        *(-1.0, NOW * 1000, NOW + 30 * 86400, LATEST + 1, 1e308, 2**64 - 1),
    ],
    "weight": [None, "1", True, math.nan, math.inf, -math.inf, [1.0], -0.5, 1e308, 1_000_001],
    "props": [[], "a=b", 1, True, {1: "a"}, {None: "a"}, {"ok": 1, 2: "b"}],
}


@st.composite
def batches_with_one_bad_event(draw: st.DrawFn) -> tuple[list[Any], int, list[str]]:
    """A batch, the index of its one bad event, and what the error must mention."""
    events: list[Any] = draw(st.lists(well_formed_events(), min_size=1, max_size=10))
    i = draw(st.integers(0, len(events) - 1))
    path = f"events[{i}]"
    how = draw(st.sampled_from(["field", "unknown field", "not a map"]))
    if how == "field":
        field = draw(st.sampled_from(sorted(BAD_VALUES)))
        value = draw(st.sampled_from(BAD_VALUES[field]))
        if value is MISSING:
            del events[i][field]
        else:
            events[i][field] = value
        return events, i, [f"{path}.{field}"]
    if how == "unknown field":
        key = draw(
            st.text(min_size=1, max_size=10).filter(lambda k: k not in EVENT_FIELDS)
            | st.integers()
            | st.none()
        )
        events[i][key] = draw(prop_values)
        return events, i, [path, repr(key)]
    events[i] = draw(st.none() | st.integers() | st.text() | st.lists(st.integers(), max_size=2))
    return events, i, [f"{path}: expected a map"]


@relaxed
@given(batches_with_one_bad_event())
def test_one_corrupted_event_is_reported_at_its_path(
    case: tuple[list[Any], int, list[str]],
) -> None:
    events, i, mentions = case
    with pytest.raises(BadRequest) as info:
        validation.events({"events": events}, now=NOW)
    assert info.value.code == "bad_request"
    assert info.value.message.startswith(f"events[{i}]"), info.value.message
    for text in mentions:
        assert text in info.value.message


def fast_shaped_batch() -> list[dict[str, Any]]:
    """Events exactly in the fast path's shape (short string ids, a number ts)."""
    return [
        {"id": f"e{n}", "type": "like", "user": "u1", "item": "i1", "ts": NOW + n, "weight": 1}
        for n in range(5)
    ]


@pytest.mark.parametrize(
    ("field", "value"),
    [(field, value) for field, values in BAD_VALUES.items() for value in values],
    ids=lambda v: "missing" if v is MISSING else repr(v)[:20],
)
def test_every_bad_value_is_caught_in_an_otherwise_fast_path_batch(field: str, value: Any) -> None:
    events = fast_shaped_batch()
    if value is MISSING:
        del events[3][field]
    else:
        events[3][field] = value
    with pytest.raises(BadRequest) as info:
        validation.events({"events": events}, now=NOW)
    assert info.value.message.startswith(f"events[3].{field}"), info.value.message


def test_a_fast_path_batch_is_accepted_as_is() -> None:
    events = fast_shaped_batch()
    assert validation.events({"events": events}, now=NOW) == [command_of(e) for e in events]


@pytest.mark.parametrize(
    ("ts", "unit", "seconds"),
    [
        (NOW * 1e3, "milliseconds", f"{NOW:.3f}"),
        (NOW * 1e6, "microseconds", f"{NOW:.3f}"),
        (NOW * 1e9, "nanoseconds", f"{NOW:.3f}"),
    ],
)
def test_a_timestamp_in_a_finer_unit_is_refused_naming_the_unit(
    ts: float, unit: str, seconds: str
) -> None:
    events = [{"id": "e", "type": "like", "user": "u", "item": "i", "ts": ts}]
    message = rejection(validation.events, {"events": events}, now=NOW)
    assert message.startswith("events[0].ts: "), message
    assert f"looks like {unit} since the epoch: send seconds ({seconds})" in message
    assert "at most 300 s ahead" in message


def test_a_future_timestamp_is_refused_with_the_window_and_a_skew_is_accepted() -> None:
    def event(ts: float) -> dict[str, Any]:
        return {"id": "e", "type": "like", "user": "u", "item": "i", "ts": ts}

    message = rejection(validation.events, {"events": [event(NOW + 30 * 86400)]}, now=NOW)
    assert "30.0 days ahead of the server's clock" in message
    assert "looks like" not in message
    assert validation.events({"events": [event(NOW + 299)]}, now=NOW)[0].ts == NOW + 299
    assert validation.events({"events": [event(NOW + 900)]}, now=NOW, clock_skew_s=1000)
    assert validation.events({"events": [event(0)]}, now=NOW)[0].ts == 0.0  # history is fine


# -- params and scalars -----------------------------------------------------------------------


def rejection(call: Any, *args: Any, **kwargs: Any) -> str:
    """The message of the ``BadRequest`` that ``call(*args, **kwargs)`` raises."""
    with pytest.raises(BadRequest) as info:
        call(*args, **kwargs)
    return info.value.message


def test_params_are_an_empty_array_or_one_map() -> None:
    assert validation.params_map([]) == {}
    assert validation.params_map([{"id": "x"}]) == {"id": "x"}


@pytest.mark.parametrize("params", [{}, None, "x", [1], [[]], [{}, {}], ({},)])
def test_other_params_are_bad_request(params: Any) -> None:
    assert rejection(validation.params_map, params).startswith("params must be [] or [map]")


def test_ids_are_non_empty_strings_of_at_most_256_utf8_bytes() -> None:
    assert validation.ident(42, "id") == "42"
    assert validation.ident(-7, "id") == "-7"
    assert validation.ident("é" * 128, "id") == "é" * 128
    for bad in ("", "é" * 129, True, None, 1.0, b"raw", ["x"]):
        assert rejection(validation.ident, bad, "where.id").startswith("where.id: ")


def test_numbers_are_finite_ints_or_floats() -> None:
    assert validation.number(3, "n") == 3.0
    assert type(validation.number(3, "n")) is float
    assert validation.number(-0.5, "n") == -0.5
    for bad in (math.nan, math.inf, -math.inf, True, "1", None):
        assert rejection(validation.number, bad, "n").startswith("n: ")


def test_recommend_takes_an_item_to_probe_for() -> None:
    assert validation.recommend({"user": "u", "probe": "i-1"}).probe == "i-1"
    assert validation.recommend({"user": "u"}).probe is None
    assert validation.recommend({"user": "u", "probe": 7}).probe == "7"  # as item ids are
    assert rejection(validation.recommend, {"user": "u", "probe": [1]}).startswith("probe: ")
    assert rejection(validation.recommend, {"user": "u", "probe": ""}).startswith("probe: ")


def test_messages_show_the_offending_value() -> None:
    assert rejection(validation.recommend, {"user": "u", "k": 0}).endswith("got 0")
    assert rejection(validation.recommend, {"user": "u", "k": 1001}).endswith("got 1001")
    assert rejection(validation.recommend, {"user": "u", "k": "5"}).endswith("got the string '5'")
    assert rejection(validation.ident, 1.5, "id").endswith("got 1.5")
    assert "got -2.5" in rejection(
        validation.events,
        {"events": [{"id": "e", "type": "v", "user": "u", "item": "i", "ts": 1, "weight": -2.5}]},
    )


def test_batches_are_bounded() -> None:
    too_many = {"events": [None] * (validation.MAX_BATCH + 1)}
    assert rejection(validation.events, too_many).startswith("events: at most")
    assert rejection(validation.events, {}) == "missing field 'events'"


# -- upsert_items and remove_items ------------------------------------------------------------


def test_items_become_upsert_commands() -> None:
    params = {
        "items": [
            {"id": 7},
            {
                "id": "pro-1",
                "kind": "pro",
                "terms": {"city": "austin", "skills": ["garden", "roof"], "old": None},
                "numbers": {"rating": 4, "price": 12.5, "gone": None},
                "active": False,
            },
        ]
    }
    first, second = validation.items(params, now=123.0)
    assert first == UpsertItem(event_id=first.event_id, item="7", ts=123.0)
    assert second == UpsertItem(
        event_id=second.event_id,
        item="pro-1",
        ts=123.0,
        kind="pro",
        terms={"city": ("austin",), "skills": ("garden", "roof"), "old": None},
        numbers={"rating": 4.0, "price": 12.5, "gone": None},
        active=False,
    )
    assert first.event_id != second.event_id
    assert first.event_id.startswith("item-upsert/")


@pytest.mark.parametrize(
    ("bad", "path"),
    [
        ({"id": "i", "terms": {"city": 5}}, "items[1].terms.city"),
        ({"id": "i", "terms": {"tags": ["a", 5]}}, "items[1].terms.tags[1]"),
        ({"id": "i", "terms": {"tags": ["t"] * 257}}, "items[1].terms.tags"),
        ({"id": "i", "terms": {"": "x"}}, "items[1].terms"),
        ({"id": "i", "numbers": {"rating": "high"}}, "items[1].numbers.rating"),
        ({"id": "i", "numbers": {"rating": math.inf}}, "items[1].numbers.rating"),
        ({"id": "i", "numbers": {"price": 1e308}}, "items[1].numbers.price: must lie within"),
        ({"id": "i", "numbers": {"price": -(2**63)}}, "items[1].numbers.price: must lie within"),
        (
            {"id": "i", "numbers": {f"n{k}": k for k in range(99_999)}},
            "items[1].numbers: at most 256 fields per item, got 99999",
        ),
        (
            {"id": "i", "terms": {f"t{k}": "x" for k in range(257)}},
            "items[1].terms: at most 256 fields per item, got 257",
        ),
        ({"id": "i", "numbers": {"n" * 129: 1}}, "items[1].numbers: field names are at most 128"),
        ({"id": "i", "active": "yes"}, "items[1].active"),
        ({"id": "i", "kind": 1}, "items[1].kind"),
        ({"id": "i", "color": "red"}, "items[1]: unknown field 'color'"),
        ({"kind": "pro"}, "items[1].id"),
        ("item", "items[1]: expected a map"),
    ],
)
def test_a_bad_item_is_reported_at_its_path(bad: Any, path: str) -> None:
    params = {"items": [{"id": "fine"}, bad, {"id": "also-fine"}]}
    assert path in rejection(validation.items, params, now=0.0)


def test_removals_become_remove_commands() -> None:
    first, second = validation.removals({"ids": ["a", 9]}, now=5.0)
    assert first == RemoveItem(event_id=first.event_id, item="a", ts=5.0)
    assert second == RemoveItem(event_id=second.event_id, item="9", ts=5.0)
    assert first.event_id != second.event_id
    assert rejection(validation.removals, {"ids": ["a", [1]]}, now=5.0).startswith("ids[1]: ")
    assert rejection(validation.removals, {"ids": "a"}, now=5.0).startswith(
        "ids: expected an array"
    )


# -- geo coordinates and search params ---------------------------------------------------


@pytest.mark.parametrize(
    ("numbers", "path"),
    [
        ({"loc.lat": 90.5}, "items[0].numbers.loc.lat"),
        ({"loc.lon": -180.01}, "items[0].numbers.loc.lon"),
        ({"home.lat": -1e6}, "items[0].numbers.home.lat"),
    ],
)
def test_coordinates_out_of_range_are_rejected_at_their_path(
    numbers: dict[str, float], path: str
) -> None:
    with pytest.raises(BadRequest, match=re.escape(f"{path}: a coordinate must be within")):
        validation.items({"items": [{"id": "i", "numbers": numbers}]}, now=1.0)


def test_coordinates_at_the_limits_and_unrelated_numbers_are_accepted() -> None:
    numbers = {"loc.lat": -90, "loc.lon": 180.0, "latitude": 500.0, "loc.lat.x": 1e9}

    (command,) = validation.items({"items": [{"id": "i", "numbers": numbers}]}, now=1.0)

    assert command.numbers == numbers


def test_search_params_become_query_limit_and_sort() -> None:
    query, limit, sort = validation.search(
        {"filter": {"term": ["city", "austin"]}, "limit": 7, "sort": ["price", "asc"]}
    )

    assert query == index.Term("city", "austin")
    assert limit == 7
    assert sort == index.Sort("price", descending=False)
    assert validation.search({"filter": {"all": []}})[1:] == (validation.DEFAULT_SEARCH_LIMIT, None)


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"filter": {"all": []}, "limit": 0}, "limit: expected an integer from 1 to 10000"),
        ({"filter": {"all": []}, "limit": 10_001}, "limit: expected an integer"),
        ({"filter": {"all": []}, "limit": 5.0}, "limit: expected an integer"),
        ({"filter": {"all": []}, "limit": True}, "limit: expected an integer"),
        ({"filter": {"all": []}, "sort": 3}, "sort: expected a field name"),
        ({"filter": {"all": []}, "sort": ["price", "up"]}, 'sort[1]: expected "desc" or "asc"'),
        ({"filter": {"any": [{"term": ["a", 1]}]}}, "filter.any[0].term[1]: expected a string"),
        ({"filter": {"all": []}, "page": 2}, "unknown field 'page'"),
        ({}, "missing field 'filter'"),
    ],
)
def test_bad_search_params_name_the_fault(params: dict[str, Any], message: str) -> None:
    with pytest.raises(BadRequest) as caught:
        validation.search(params)

    assert message in str(caught.value)
