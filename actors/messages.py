"""Messages the runtime delivers to event-sourced actors (their mailbox vocabulary).

Besides :class:`GetState`, an event-sourced actor accepts:

- a :class:`~actors.events.StoredEvent` of its stream, committed to the log:
  it is applied unless the state already covers its ``seq``;
- a command of its kind (e.g. :class:`~actors.item.UpsertItem`): the reply is
  the tuple of events ``decide`` makes of it; nothing is stored or applied.
"""

from __future__ import annotations

import attrs


@attrs.frozen
class GetState:
    """Reply with a copy of the actor's current state."""
