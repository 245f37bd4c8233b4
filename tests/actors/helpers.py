"""Events and folds shared by the tests of the pure domain (no event loop)."""

from __future__ import annotations

from typing import Any

import actors
from actors import (
    InteractionRecorded,
    ItemState,
    ItemUpserted,
    StoredEvent,
    UserState,
    decay,
    item,
    user,
)

HALF_LIFE = decay.DEFAULT_HALF_LIFE_S


def stored(*events: actors.Event, start: int = 1) -> list[StoredEvent]:
    return [StoredEvent(seq=start + n, event=e) for n, e in enumerate(events)]


def upserted(event_id: str = "e", ts: float = 1.0, **fields: Any) -> ItemUpserted:
    """An upsert of item i1 giving only ``fields``."""
    return ItemUpserted(id=event_id, item="i1", ts=ts, **fields)


def interaction(
    event_id: str = "e",
    *,
    type: str = "like",
    item_id: str = "i1",
    ts: float = 1.0,
    weight: float = 1.0,
    item_terms: dict[str, tuple[str, ...]] | None = None,
) -> InteractionRecorded:
    return InteractionRecorded(
        id=event_id,
        type=type,
        user="u1",
        item=item_id,
        ts=ts,
        weight=weight,
        item_terms=item_terms or {},
    )


def item_after(*events: actors.Event) -> ItemState:
    return item.fold(item.initial("i1"), stored(*events))


def user_after(*events: InteractionRecorded) -> UserState:
    return user.fold(user.initial("u1"), stored(*events))
