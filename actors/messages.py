"""Messages the runtime delivers to event-sourced actors (their mailbox vocabulary).

Besides :class:`GetState`, an event-sourced actor accepts:

- :class:`ApplyEvents`: events of its stream, committed to the log, in ``seq``
  order; each is applied unless the state already covers its ``seq``;
- a command of its kind (e.g. :class:`~actors.item.UpsertItem`): the reply is
  the tuple of events ``decide`` makes of it; nothing is stored or applied.
"""

from __future__ import annotations

from typing import NamedTuple

import attrs

from actors.events import StoredEvent


@attrs.frozen
class GetState:
    """Reply with a copy of the actor's current state."""


# A NamedTuple: one is built per entity per commit on the ingest path.
class ApplyEvents(NamedTuple):
    """Committed events of the receiving entity's stream, in ``seq`` order."""

    events: list[StoredEvent]
