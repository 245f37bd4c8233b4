"""An LMDB map that grows on demand: start small, double whenever a write finds it full.

LMDB fixes the size of its memory map when an environment opens; a write
transaction that needs more raises ``MapFullError`` and leaves nothing behind.
:class:`GrowingMap` runs a write, and on ``MapFullError`` doubles the map and
runs it again, so stores start small and grow with their data. Used by the
event store, the decision log and the legacy feed loader.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import attrs
import lmdb

log = logging.getLogger(__name__)

T = TypeVar("T")


@attrs.define
class GrowingMap:
    """The map of ``env``, doubled whenever :meth:`write` finds it full.

    ``lock`` is held while resizing: ``set_mapsize`` needs no transaction open
    in this process, so a store whose readers hold that lock for the length of
    their transaction passes it here.
    """

    env: Any
    #: What the environment holds, for the log line (``event store``, ``legacy feed``).
    name: str
    lock: contextlib.AbstractContextManager[Any] = attrs.field(factory=contextlib.nullcontext)
    #: How many times the map was doubled.
    resizes: int = 0

    def write(self, transaction: Callable[[], T]) -> T:
        """Run ``transaction`` (one LMDB write transaction) until it fits; its result.

        ``transaction`` must leave nothing behind when it raises (an aborted
        LMDB transaction does not), since it is run again after each growth.
        Blocking. Raises what ``transaction`` raises, except ``MapFullError``.
        """
        while True:
            try:
                return transaction()
            except lmdb.MapFullError:
                self.grow()

    def grow(self) -> None:
        """Double the map size (holding ``lock``)."""
        with self.lock:
            new_size = self.env.info()["map_size"] * 2
            log.info("%s: map full; growing to %d MiB", self.name, new_size >> 20)
            self.env.set_mapsize(new_size)
            self.resizes += 1
