"""How far each reader has applied the log, in a small file the writer reads.

With ``--workers N`` the readers apply the log that the writer appends (see
:mod:`actors.follower`). Nothing stopped the writer from running far ahead of
them. Under bulk ingest on a 2-core machine it did: 4 clients ingested 1M events
at 23,000 events/s while the readers applied 10,000 to 13,000 each. When the
ingest ended, the readers were about 430,000 and 550,000 events behind the log.
Two things follow from a lag like that:

- a read first catches up with everything committed (read-your-writes), so it
  waited for those events to be applied: tens of seconds;
- after a ``kill -9``, a reader replays what it had not applied before the node
  serves again.

So the writer holds a new write while the slowest reader is more than
``max_apply_lag`` events behind the log (see :class:`~actors.write_path.WritePath`).

``DIR/run/applied`` holds one slot per reader: the ``seq`` it has applied and
when it last said so (``CLOCK_MONOTONIC``, which Linux keeps for the whole
system). A reader posts after every page it applies and every time its follower
wakes, so at least every :data:`~matchlight.server.commit_bell.FALLBACK_POLL_S`
(:meth:`ApplyBoard.post`). The writer counts only the readers that posted in the
last :data:`STALE_S` (:meth:`ApplyBoard.slowest`). A reader that is still starting,
is being restarted or has died is not waited for. It serves no reads meanwhile,
and a restarted reader rebuilds from the log's head.

Each process maps the file itself and sizes it if it is too small, so start
order does not matter. A slot left by an earlier process is stale within
:data:`STALE_S`.
"""

from __future__ import annotations

import mmap
import os
import struct
import time
from pathlib import Path
from typing import Final

#: One reader's slot: the seq it has applied, and ``time.monotonic()`` when it posted it.
_SLOT: Final = struct.Struct("<qd")
#: A reader that has not posted for this long is not waited for, seconds.
STALE_S: Final = 1.0


def board_path(run_dir: Path) -> Path:
    return run_dir / "applied"


class ApplyBoard:
    """The slots of readers 1…``readers`` in ``path``. Use as a context manager, or close it."""

    def __init__(self, path: Path, readers: int) -> None:
        self._readers = readers
        size = _SLOT.size * (readers + 1)  # slot 0 is unused: readers count from 1
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < size:
                os.ftruncate(fd, size)  # zeroes the new slots: seq 0, never posted
            self._map = mmap.mmap(fd, size)
        finally:
            os.close(fd)

    def post(self, reader: int, seq: int) -> None:
        """Reader ``reader`` has applied the log up to ``seq`` (now)."""
        _SLOT.pack_into(self._map, reader * _SLOT.size, seq, time.monotonic())

    def slowest(self) -> int | None:
        """The lowest ``seq`` applied among the readers that posted in the last
        :data:`STALE_S`; ``None`` if none did."""
        now = time.monotonic()
        live = [
            seq
            for seq, posted in (
                _SLOT.unpack_from(self._map, r * _SLOT.size) for r in range(1, self._readers + 1)
            )
            if posted > 0.0 and now - posted <= STALE_S
        ]
        return min(live) if live else None

    def close(self) -> None:
        self._map.close()

    def __enter__(self) -> ApplyBoard:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
