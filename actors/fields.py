"""The limit on distinct numeric fields (item numbers and event types together).

Each numeric field costs the index a little memory of its own, so a catalogue
may have at most ``max_numeric_fields`` (see :class:`~actors.system.SystemConfig`).
Both write paths hold a write's new names with :meth:`FieldAdmission.admit`
while it is decided and committed.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence, Set

from actors.errors import FieldLimitError
from actors.item import RecordInteraction, UpsertItem


class FieldAdmission:
    """Admits new numeric field names against ``limit``; ``known()`` gives the names in use."""

    def __init__(self, known: Callable[[], Set[str]], *, limit: int) -> None:
        self._known = known
        self._limit = limit
        #: New names of writes in progress (admitted, not yet known).
        self._pending: Counter[str] = Counter()

    @contextlib.contextmanager
    def admit(self, names: Iterable[str], path_of: Callable[[str], str]) -> Iterator[None]:
        """Hold the numeric field ``names`` a write brings for its duration, within the limit.

        Known names are free; new ones count against the limit together with
        those of writes still in progress (so concurrent writes cannot
        overshoot). ``names`` come in request order; ``path_of(name)`` gives a
        name's path in the request, for the error (called only then).

        Raises:
            FieldLimitError: the new names do not fit; nothing is held.
        """
        known = self._known()
        new = [name for name in names if name not in known]
        if not new:
            yield
            return
        pending = self._pending
        unseen = [name for name in new if name not in pending]
        limit = self._limit
        in_use = len(known) + len(pending.keys() - known)
        if unseen and in_use + len(unseen) > limit:
            raise FieldLimitError(
                f"{path_of(unseen[0])}: {unseen[0]!r} would be a new numeric field, but the "
                f"catalogue has {in_use} of the {limit} allowed (item numbers and event "
                "types together; see --max-numeric-fields)"
            )
        pending.update(new)
        try:
            yield
        finally:
            pending.subtract(new)
            for name in new:
                if pending[name] <= 0:
                    del pending[name]

    def admit_events(
        self, commands: Sequence[RecordInteraction]
    ) -> contextlib.AbstractContextManager[None]:
        """:meth:`admit` the event types of an ``ingest`` (each a counter field)."""

        def path_of(name: str) -> str:
            return f"events[{next(i for i, c in enumerate(commands) if c.type == name)}].type"

        return self.admit(dict.fromkeys(c.type for c in commands), path_of)

    def admit_items(
        self, commands: Sequence[UpsertItem]
    ) -> contextlib.AbstractContextManager[None]:
        """:meth:`admit` the ``numbers`` fields an ``upsert_items`` sets."""
        names = dict.fromkeys(
            name
            for command in commands
            for name, value in (command.numbers or {}).items()
            if value is not None
        )

        def path_of(name: str) -> str:
            i = next(i for i, c in enumerate(commands) if (c.numbers or {}).get(name) is not None)
            return f"items[{i}].numbers.{name}"

        return self.admit(names, path_of)
