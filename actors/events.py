"""The stored event vocabulary: facts that happened, in past tense.

Every event carries its own id (the idempotency key), a stable ``TOPIC`` and a
schema ``VERSION``. Domain code only sees these classes; the byte format lives
in :mod:`actors.codec`.

An event belongs to one or more entity streams (see :func:`streams_of`): an
interaction is part of both the user's and the item's stream, item catalogue
changes only of the item's.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar, Final, NamedTuple

import attrs

USER: Final = "user"
ITEM: Final = "item"
KINDS: Final = (USER, ITEM)

#: Entity key: (kind, entity id).
EntityKey = tuple[str, str]


@attrs.frozen(kw_only=True)
class InteractionRecorded:
    """A user did something (``type``) to an item at ``ts`` (seconds since the epoch).

    ``item_terms`` is the item's terms at the time the event was recorded, so
    that replaying the user's stream gives the same term affinities whatever
    the item looks like later.
    """

    TOPIC: ClassVar[str] = "interaction_recorded"
    VERSION: ClassVar[int] = 1

    id: str
    type: str
    user: str
    item: str
    ts: float
    weight: float = 1.0
    props: Mapping[str, Any] = attrs.field(factory=dict)
    item_terms: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class ItemUpserted:
    """The catalogue changed an item. ``None`` fields were not given and keep their value.

    ``terms`` and ``numbers`` are partial: a field mapped to ``None`` (or, for
    terms, to an empty tuple) is removed, other fields are replaced.
    """

    TOPIC: ClassVar[str] = "item_upserted"
    VERSION: ClassVar[int] = 1

    id: str
    item: str
    ts: float
    kind: str | None = None
    terms: Mapping[str, tuple[str, ...] | None] | None = None
    numbers: Mapping[str, float | None] | None = None
    active: bool | None = None


@attrs.frozen(kw_only=True)
class ItemRemoved:
    """The catalogue removed an item; it no longer exists until upserted again."""

    TOPIC: ClassVar[str] = "item_removed"
    VERSION: ClassVar[int] = 1

    id: str
    item: str
    ts: float


Event = InteractionRecorded | ItemUpserted | ItemRemoved

EVENT_TYPES: Final[Mapping[str, type[Event]]] = {
    cls.TOPIC: cls for cls in (InteractionRecorded, ItemUpserted, ItemRemoved)
}


# A NamedTuple rather than attrs: one is built per event on the ingest path.
class StoredEvent(NamedTuple):
    """An event as the log holds it: with its global sequence number (``seq`` ≥ 1)."""

    seq: int
    event: Event


def streams_of(event: Event) -> tuple[EntityKey, ...]:
    """The entity streams an event belongs to, in a fixed order."""
    if isinstance(event, InteractionRecorded):
        return ((USER, event.user), (ITEM, event.item))
    return ((ITEM, event.item),)
