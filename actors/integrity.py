"""The integrity check of an LMDB event store: what ``matchlight verify`` runs on ``DATA/events``.

Every table is walked once, in one read transaction (a consistent view, also
beside a server writing the store):

- ``events``: keys are ``seq`` 1, 2, … without gaps; each record passes its
  checksum (:mod:`actors.framing`) and decodes;
- ``ids``: each id names the ``seq`` of an event with that id, and every
  event has its id there (this also catches a record copied under another
  ``seq``: event checksums do not cover the key);
- ``streams``: each entry names an event of that entity, and every event is
  listed in each stream it belongs to;
- ``snapshots``: each passes its checksum (which covers its key), decodes to
  the state of its entity at its ``seq``, and that ``seq`` is at most the
  entity's latest event.

Memory: about 27 bytes per event (hashes of each event's id and entities in
flat arrays, compared by hash: a mismatch is missed with odds of 2**-64) and
one small entry per entity.
"""

from __future__ import annotations

import time
from array import array
from collections.abc import Callable
from typing import Final

from actors.codec import decode_event, decode_state
from actors.errors import CodecError
from actors.events import InteractionRecorded
from actors.framing import is_sealed, unseal
from actors.item import ItemState
from actors.lmdb_layout import SEQ as _SEQ
from actors.lmdb_layout import open_snapshot, parse_entity_key
from actors.lmdb_store import LmdbEventStore, RawView
from actors.user import UserState

#: Report where, what.
Problem = Callable[[str, str], None]
Progress = Callable[[str], None]

_STATE_TYPES: Final[dict[str, type]] = {"item": ItemState, "user": UserState}
#: Missing entries listed one by one at most; past this they are counted.
_LISTED: Final = 100


class _Ticker:
    """Calls ``progress`` at most every ``every_s`` seconds."""

    def __init__(self, progress: Progress | None, every_s: float = 2.0) -> None:
        self._progress = progress
        self._every_s = every_s
        self._next = time.monotonic() + every_s

    def due(self) -> bool:
        if self._progress is None or time.monotonic() < self._next:
            return False
        self._next = time.monotonic() + self._every_s
        return True

    def say(self, message: str) -> None:
        if self._progress is not None:
            self._progress(message)


def check_event_store(
    store: LmdbEventStore, problem: Problem, progress: Progress | None = None
) -> dict[str, int]:
    """Check every table of ``store`` (see the module docstring). Blocking.

    Each problem is reported as ``problem(where, what)``; progress messages go
    to ``progress`` every few seconds. Returns the counts of what was checked.

    Raises:
        StoreError: LMDB cannot read the store (its file is damaged).
    """
    ticker = _Ticker(progress)
    with store.raw_view() as view:
        entries = view.entries()
        walk = _Walk(problem, ticker, entries)
        walk.events(view)
        walk.ids(view)
        walk.streams(view)
        walk.snapshots(view)
    return walk.counts


class _Walk:
    def __init__(self, problem: Problem, ticker: _Ticker, entries: dict[str, int]) -> None:
        self.problem = problem
        self.ticker = ticker
        self.entries = entries
        self.counts: dict[str, int] = dict.fromkeys(
            (
                "events",
                "events_unsealed",
                "ids",
                "stream_entries",
                "streams",
                "snapshots",
                "snapshots_unsealed",
            ),
            0,
        )
        # Per seq - 1: hashes of the event's id, user and item (0: no such stream, or no
        # readable event at that seq).
        self.id_hash = array("q")
        self.user_hash = array("q")
        self.item_hash = array("q")
        #: Entity key -> the seq of its latest listed event.
        self.last_seq: dict[bytes, int] = {}

    def _progress(self, table: str, done: int) -> None:
        if self.ticker.due():
            total = self.entries.get(table, 0)
            self.ticker.say(f"{table}: {done:,} of {total:,} checked")

    def events(self, view: RawView) -> None:
        problem, unpack = self.problem, _SEQ.unpack
        id_hash, user_hash, item_hash = self.id_hash, self.user_hash, self.item_hash
        previous = events = unsealed = 0
        for key, value in view.events():
            events += 1
            if not events % 4096:
                self._progress("events", events)
            if len(key) != _SEQ.size:
                problem("events", f"key {key[:20]!r} is not a sequence number")
                continue
            seq = unpack(key)[0]
            if seq != previous + 1:
                gap = seq - previous - 1
                if gap > self.entries["events"]:
                    problem(f"event seq {seq}", "far past the others: a damaged key?")
                    continue
                problem(f"events {previous + 1}..{seq - 1}", "missing: the log has a gap")
                for table in (id_hash, user_hash, item_hash):
                    table.extend([0] * gap)
            previous = seq
            if not is_sealed(value):
                unsealed += 1
            try:
                event = decode_event(unseal(value))
            except CodecError as exc:
                problem(f"event seq {seq}", str(exc))
                id_hash.append(0)
                user_hash.append(0)
                item_hash.append(0)
                continue
            id_hash.append(hash(event.id))
            user_hash.append(hash(event.user) if type(event) is InteractionRecorded else 0)
            item_hash.append(hash(event.item))
        self.counts["events"] = events
        self.counts["events_unsealed"] = unsealed

    def ids(self, view: RawView) -> None:
        problem, unpack, id_hash = self.problem, _SEQ.unpack, self.id_hash
        found = bytearray(len(id_hash))
        ids = 0
        for key, value in view.ids():
            ids += 1
            if not ids % 4096:
                self._progress("ids", ids)
            try:
                event_id = key.decode()
            except UnicodeDecodeError:
                problem(f"ids {key[:40]!r}", "the id is not utf-8")
                continue
            seq = unpack(value)[0] if len(value) == _SEQ.size else 0
            if not 0 < seq <= len(id_hash):
                problem(f"ids {event_id!r}", f"names seq {seq}, beyond the log")
            elif id_hash[seq - 1] != hash(event_id):
                if id_hash[seq - 1]:  # a readable event with another id
                    problem(f"ids {event_id!r}", f"names seq {seq}, whose event has another id")
            else:
                found[seq - 1] = 1
        self.counts["ids"] = ids
        self._unlisted(found, id_hash, "ids", "event seq {seq}", "has no entry in ids")

    def streams(self, view: RawView) -> None:
        problem, unpack = self.problem, _SEQ.unpack
        seen = {"user": bytearray(len(self.id_hash)), "item": bytearray(len(self.id_hash))}
        hashes = {"user": self.user_hash, "item": self.item_hash}
        last_seq = self.last_seq
        current: bytes | None = None
        name = ""
        entity_hash = 0
        table = self.item_hash
        found = seen["item"]
        entries = 0
        for key, value in view.streams():
            entries += 1
            if not entries % 4096:
                self._progress("streams", entries)
            if key != current:
                current = key
                try:
                    kind, entity_id = parse_entity_key(key)
                except CodecError as exc:
                    problem("streams", str(exc))
                    entity_hash = 0
                    continue
                name = f"{kind} {entity_id!r}"
                entity_hash, table, found = hash(entity_id), hashes[kind], seen[kind]
            elif not entity_hash:
                continue
            seq = unpack(value)[0] if len(value) == _SEQ.size else 0
            last_seq[key] = seq
            if 0 < seq <= len(table) and table[seq - 1] == entity_hash:
                found[seq - 1] = 1
            elif 0 < seq <= len(table) and not self.id_hash[seq - 1]:
                pass  # the event itself is unreadable: reported already
            else:
                problem(f"streams {name}", f"lists seq {seq}, which is not one of its events")
        self.counts["stream_entries"] = entries
        self.counts["streams"] = len(last_seq)
        for kind in ("user", "item"):
            self._unlisted(
                seen[kind],
                hashes[kind],
                "streams",
                "event seq {seq}",
                f"is missing from its {kind}'s stream",
            )

    def _unlisted(
        self, found: bytearray, hashes: array[int], table: str, where: str, what: str
    ) -> None:
        """Report the events with a hash in ``hashes`` that ``found`` does not mark."""
        expected = len(hashes) - hashes.tolist().count(0)
        missing = expected - sum(found)
        if missing <= 0:
            return
        listed = 0
        for seq, (h, mark) in enumerate(zip(hashes, found, strict=True), start=1):
            if h and not mark:
                self.problem(where.format(seq=seq), what)
                listed += 1
                if listed >= _LISTED:
                    break
        if missing > listed:
            self.problem(table, f"{missing - listed} more events {what}")

    def snapshots(self, view: RawView) -> None:
        problem = self.problem
        snapshots = unsealed = 0
        for key, value in view.snapshots():
            snapshots += 1
            if not snapshots % 1024:
                self._progress("snapshots", snapshots)
            try:
                kind, entity_id = parse_entity_key(key)
            except CodecError as exc:
                problem("snapshots", str(exc))
                continue
            where = f"snapshot of {kind} {entity_id!r}"
            if not is_sealed(value):
                unsealed += 1
            try:
                seq, data = open_snapshot(key, value)
                state = decode_state(data)
            except CodecError as exc:
                problem(where, str(exc))
                continue
            if type(state) is not _STATE_TYPES[kind]:
                problem(where, f"holds a {type(state).__name__}")
            elif state.id != entity_id or state.seq != seq:
                problem(where, f"holds {state.id!r} at seq {state.seq}, stored as seq {seq}")
            last = self.last_seq.get(key)
            if last is None:
                problem(where, "the entity has no events")
            elif seq > last:
                problem(where, f"seq {seq} is past the entity's latest event (seq {last})")
        self.counts["snapshots"] = snapshots
        self.counts["snapshots_unsealed"] = unsealed
