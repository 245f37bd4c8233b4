"""Event store contract: ordered replay of the whole log and of one entity's stream, with
bounds; events come back unchanged."""

from __future__ import annotations

import pytest

import actors
from actors import (
    ITEM,
    USER,
    Event,
    InteractionRecorded,
    ItemRemoved,
    ItemUpserted,
    StoredEvent,
)
from tests.contract.events import ids, interaction, mixed_log, seqs


def test_empty_store_has_no_events(store: actors.EventStore) -> None:
    assert store.last_seq() == 0
    assert store.read_all() == []
    assert store.read_stream(USER, "u1") == []


def test_read_all_returns_events_in_seq_order_without_gaps(store: actors.EventStore) -> None:
    log = mixed_log()
    for start in range(0, len(log), 3):
        store.append(log[start : start + 3])

    stored = store.read_all()

    assert seqs(stored) == list(range(1, len(log) + 1))
    assert [s.event for s in stored] == log
    assert store.last_seq() == len(log)


def test_append_reports_stored_events_with_their_seqs(store: actors.EventStore) -> None:
    store.append([interaction("a")])
    result = store.append([interaction("b"), interaction("c")])

    assert [s.seq for s in result.stored] == [2, 3]
    assert [s.event.id for s in result.stored] == ["b", "c"]
    assert result.duplicates == ()
    assert result.seq == 3


@pytest.mark.parametrize(("after", "limit"), [(0, 3), (3, 4), (8, 100), (10, 5), (25, 5)])
def test_read_all_honours_after_and_limit(store: actors.EventStore, after: int, limit: int) -> None:
    store.append(mixed_log())

    stored = store.read_all(after=after, limit=limit)

    expected = list(range(after + 1, min(after + limit, 10) + 1))
    assert seqs(stored) == expected


def test_read_all_with_zero_limit_returns_nothing(store: actors.EventStore) -> None:
    store.append(mixed_log())

    assert store.read_all(limit=0) == []


def test_read_all_pages_through_the_whole_log(store: actors.EventStore) -> None:
    for n in range(25):
        store.append([interaction(f"e{n}")])

    pages: list[list[StoredEvent]] = []
    after = 0
    while page := store.read_all(after=after, limit=7):
        pages.append(page)
        after = page[-1].seq

    assert [len(p) for p in pages] == [7, 7, 7, 4]
    assert [s.seq for p in pages for s in p] == list(range(1, 26))


def test_read_stream_returns_only_that_entitys_events_in_order(
    store: actors.EventStore,
) -> None:
    store.append(mixed_log())

    assert ids(store.read_stream(ITEM, "i1")) == ["e1", "e2", "e6", "e7", "e8", "e9"]
    assert ids(store.read_stream(ITEM, "i2")) == ["e3", "e4", "e5", "e10"]
    assert ids(store.read_stream(USER, "u1")) == ["e2", "e5", "e9"]
    assert ids(store.read_stream(USER, "u2")) == ["e3", "e7", "e10"]
    assert seqs(store.read_stream(ITEM, "i1")) == [1, 2, 6, 7, 8, 9]


def test_an_interaction_belongs_to_its_user_and_its_item_stream(
    store: actors.EventStore,
) -> None:
    event = interaction("e1", user="alice", item="job-7")
    store.append([event])

    assert actors.streams_of(event) == ((USER, "alice"), (ITEM, "job-7"))
    assert store.read_stream(USER, "alice") == [StoredEvent(seq=1, event=event)]
    assert store.read_stream(ITEM, "job-7") == [StoredEvent(seq=1, event=event)]
    # The user and item namespaces are separate even for equal ids.
    assert store.read_stream(ITEM, "alice") == []
    assert store.read_stream(USER, "job-7") == []


@pytest.mark.parametrize(
    ("after", "until", "expected"),
    [
        (0, None, [1, 2, 6, 7, 8, 9]),
        (1, None, [2, 6, 7, 8, 9]),
        (2, 7, [6, 7]),
        (5, 6, [6]),
        (2, 5, []),
        (0, 0, []),
        (9, None, []),
        (0, 1, [1]),
        (3, 100, [6, 7, 8, 9]),
    ],
)
def test_read_stream_returns_events_after_exclusive_until_inclusive(
    store: actors.EventStore, after: int, until: int | None, expected: list[int]
) -> None:
    store.append(mixed_log())

    assert seqs(store.read_stream(ITEM, "i1", after=after, until=until)) == expected


def test_read_stream_of_unknown_entity_is_empty(store: actors.EventStore) -> None:
    store.append(mixed_log())

    assert store.read_stream(USER, "nobody") == []
    assert store.read_stream(ITEM, "nothing", after=3) == []
    # A prefix of a known id is a different entity.
    store.append([interaction("e11", user="u10")])
    assert ids(store.read_stream(USER, "u1")) == ["e2", "e5", "e9"]


def test_read_stream_handles_non_ascii_ids(store: actors.EventStore) -> None:
    store.append([interaction("ü-1", user="Zoë", item="café")])

    assert ids(store.read_stream(USER, "Zoë")) == ["ü-1"]
    assert ids(store.read_stream(ITEM, "café")) == ["ü-1"]
    assert store.contains("ü-1")


def test_events_round_trip_through_the_store_unchanged(store: actors.EventStore) -> None:
    events: list[Event] = [
        InteractionRecorded(
            id="x1",
            type="custom",
            user="u",
            item="i",
            ts=1_700_000_000.125,
            weight=-2.5,
            props={"source": "feed", "position": 3, "tags": ["a", "b"]},
            item_terms={"skills": ("go", "python"), "city": ()},
        ),
        ItemUpserted(
            id="x2",
            item="i",
            ts=2.0,
            kind=None,
            terms={"city": None, "skills": ("rust",)},
            numbers={"price": None, "rate": 1.5},
            active=None,
        ),
        ItemUpserted(id="x3", item="i", ts=3.0),
        ItemRemoved(id="x4", item="i", ts=4.0),
    ]
    store.append(events)

    assert [s.event for s in store.read_all()] == events
