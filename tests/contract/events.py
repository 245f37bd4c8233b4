"""Events, shorthands and sizes shared by the event store contract suite."""

from __future__ import annotations

from typing import Any

import attrs

from actors import Event, InteractionRecorded, ItemRemoved, ItemUpserted, StoredEvent

#: An LMDB map size small enough that the tests make it grow.
SMALL_MAP = 64 * 1024


def interaction(
    event_id: str,
    *,
    user: str = "u1",
    item: str = "i1",
    type: str = "like",
    ts: float = 1.0,
    weight: float = 1.0,
) -> InteractionRecorded:
    return InteractionRecorded(
        id=event_id,
        type=type,
        user=user,
        item=item,
        ts=ts,
        weight=weight,
        item_terms={"city": ("austin",)},
    )


def upsert(event_id: str, *, item: str = "i1", ts: float = 1.0, **changes: Any) -> ItemUpserted:
    """An active pro in austin at price 10, with ``changes`` to any of those fields."""
    austin_pro = ItemUpserted(
        id=event_id,
        item=item,
        ts=ts,
        kind="pro",
        terms={"city": ("austin",)},
        numbers={"price": 10.0},
        active=True,
    )
    return attrs.evolve(austin_pro, **changes)


def removal(event_id: str, *, item: str = "i1", ts: float = 1.0) -> ItemRemoved:
    return ItemRemoved(id=event_id, item=item, ts=ts)


def ids(stored: list[StoredEvent]) -> list[str]:
    return [s.event.id for s in stored]


def seqs(stored: list[StoredEvent]) -> list[int]:
    return [s.seq for s in stored]


def mixed_log() -> list[Event]:
    """Ten events over two users and two items, interleaved."""
    return [
        upsert("e1", item="i1"),
        interaction("e2", user="u1", item="i1"),
        interaction("e3", user="u2", item="i2"),
        upsert("e4", item="i2"),
        interaction("e5", user="u1", item="i2", type="click"),
        removal("e6", item="i1"),
        interaction("e7", user="u2", item="i1", type="view"),
        upsert("e8", item="i1", terms={"city": ("boston",)}),
        interaction("e9", user="u1", item="i1", type="save"),
        interaction("e10", user="u2", item="i2", type="dismiss"),
    ]


def recovery_log() -> list[Event]:
    """Upserts, interactions (some out of time order) and a removal around item i1 and user u1."""
    events: list[Event] = [upsert("e0", item="i1", ts=100.0)]
    types = ["view", "click", "like", "save", "hire", "dismiss", "accept", "decline", "custom"]
    for n in range(1, 40):
        ts = 100.0 + (n * 7919 % 40) * 3600.0  # a permutation of hours: out of order
        if n == 13:
            events.append(
                upsert(
                    f"e{n}",
                    item="i1",
                    ts=ts,
                    terms={"city": None, "skills": ("go", "rust")},
                    numbers={"price": None, "rate": 2.5},
                    active=False,
                    kind=None,
                )
            )
        elif n == 25:
            events.append(removal(f"e{n}", item="i1", ts=ts))
        elif n == 27:
            events.append(upsert(f"e{n}", item="i1", ts=ts, terms={"city": ("dallas",)}))
        else:
            events.append(
                InteractionRecorded(
                    id=f"e{n}",
                    type=types[n % len(types)],
                    user="u1" if n % 3 else "u2",
                    item="i1" if n % 4 else "i2",
                    ts=ts,
                    weight=1.0 + n / 10,
                    item_terms={"city": ("austin", "boston")[: 1 + n % 2], "level": ("senior",)},
                )
            )
    return events
