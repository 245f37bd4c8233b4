"""Item-to-item co-occurrence: "users who just engaged with X went on to Y", kept live.

A projection of the log like the item index (:mod:`actors.item_index`). For
each engagement (an interaction whose type weighs at least
:data:`MIN_TYPE_WEIGHT`: clicks, likes, saves, hires, accepts), the pair it
forms with each of the same user's previous :data:`WINDOW` engagements made
within :data:`GAP_S` before it gains ``weight(X) * weight(Y)``, in both
directions. Pair masses decay with :data:`HALF_LIFE_S` (forward decay
against one landmark: see :mod:`actors.decay`), so what users do now
outweighs what they did months ago.

Memory is bounded: a row keeps its :data:`KEEP` heaviest neighbours, pruned
(heaviest first, ties by internal id) whenever it grows past twice that, and
the user windows it remembers are those of the :data:`MAX_USERS` users who
engaged most recently. Rows are keyed by the index's internal ids.

The actor system feeds it in log order, as events are committed
(:meth:`CoOccurrence.observe`); :func:`rebuild_cooccurrence` feeds it the
whole log in the same order at start. The two are equal (a Hypothesis
property in ``tests/actors/test_cooccurrence.py``). Not thread-safe: written
by the actor system and read by the ranker on the Trio thread.
"""

from __future__ import annotations

import logging
import math
import time
from collections import OrderedDict, defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

import attrs
import msgpack
import numpy as np
import numpy.typing as npt

from actors import decay
from actors.errors import CodecError
from actors.events import InteractionRecorded
from actors.files import write_atomically
from actors.gc_pause import collector_paused
from actors.store import EventStore
from actors.user import OTHER_TYPE_WEIGHT, TYPE_WEIGHTS
from index import Index

log = logging.getLogger(__name__)

#: Engagements: interaction types weighing at least this much (views and dismissals do not).
MIN_TYPE_WEIGHT: Final = 0.3
#: An engagement pairs with this many of the same user's previous engagements ...
#: (the items just before it: "went on to"; on MovieLens-latest-small, replayed with
#: co-occurrence alone, a window of 5 and 5 sources gave hit@10 0.115, 10 and 10 gave
#: 0.106, 3 and 5 gave 0.111; and a smaller window costs less per event).
WINDOW: Final = 5
#: ... made at most this long before it (seconds).
GAP_S: Final = 30 * 24 * 3600.0
#: A pair's mass loses half its weight in this time. Long: a 30-day half-life left
#: little of the catalogue's long-lived pairs (0.079 against 0.112 hit@10 on MovieLens).
HALF_LIFE_S: Final = 365 * 24 * 3600.0
#: Neighbours kept per item (a row is pruned back to this when it doubles).
KEEP: Final = 64
#: Users whose recent engagements are remembered (least recently engaged forgotten first).
MAX_USERS: Final = 200_000
READ_PAGE: Final = 10_000

Docs = npt.NDArray[np.uint32]
Floats = npt.NDArray[np.float64]


def _new_row() -> defaultdict[int, float]:
    return defaultdict(float)


def _heaviest_first(entry: tuple[int, float]) -> tuple[float, int]:
    return -entry[1], entry[0]


def engagement_weight(event: InteractionRecorded) -> float:
    """How much ``event`` counts as an engagement; 0 if it is not one."""
    weight = TYPE_WEIGHTS.get(event.type, OTHER_TYPE_WEIGHT)
    return event.weight * weight if weight >= MIN_TYPE_WEIGHT else 0.0


@attrs.frozen(kw_only=True)
class CoOccurrenceStatistics:
    #: Items with at least one neighbour.
    items: int
    pairs: int
    #: Users with a window of recent engagements.
    users: int
    #: An estimate (:meth:`CoOccurrence.memory_bytes`).
    memory_bytes: int


class CoOccurrence:
    """Decayed co-occurrence counts of item pairs, the top neighbours per item."""

    def __init__(
        self,
        *,
        window: int = WINDOW,
        gap_s: float = GAP_S,
        half_life: float = HALF_LIFE_S,
        keep: int = KEEP,
        max_users: int = MAX_USERS,
    ) -> None:
        self.window = window
        self.gap_s = gap_s
        self.half_life = half_life
        self.keep = keep
        self.max_users = max_users
        self.prune_at = 2 * keep
        #: doc -> neighbour doc -> mass against ``landmark`` (shared by every row).
        self.rows: defaultdict[int, defaultdict[int, float]] = defaultdict(_new_row)
        self.landmark = 0.0
        #: user -> their latest engagements as (doc, ts, weight), oldest first.
        self.recent: OrderedDict[str, list[tuple[int, float, float]]] = OrderedDict()

    def observe(self, user_id: str, doc: int, weight: float, ts: float) -> None:
        """Record an engagement of ``user_id`` with ``doc`` at ``ts`` (events in log order)."""
        if weight <= 0.0:
            return
        recent = self.recent.get(user_id)
        if recent is None:
            self.recent[user_id] = [(doc, ts, weight)]
            if len(self.recent) > self.max_users:
                self.recent.popitem(last=False)
            return
        self.recent.move_to_end(user_id)
        if not self.rows:
            self.landmark = ts
        elif decay.needs_rescale(ts, self.landmark, self.half_life):
            self._rescale(ts)
        growth = weight * decay.growth(ts, self.landmark, self.half_life)
        rows, earliest = self.rows, ts - self.gap_s
        row = rows[doc]  # a defaultdict: rows and entries appear as they are added to
        prune_at = self.prune_at
        for other, at, other_weight in recent:
            if other == doc or at < earliest:
                continue
            mass = growth * other_weight
            row[other] += mass
            other_row = rows[other]
            other_row[doc] += mass
            if len(other_row) > prune_at:
                self._prune(other)
        if not row:
            del rows[doc]  # nothing recent enough to pair with
        elif len(row) > self.prune_at:
            self._prune(doc)
        for i, entry in enumerate(recent):
            if entry[0] == doc:
                del recent[i]
                break
        recent.append((doc, ts, weight))
        if len(recent) > self.window:
            del recent[0]

    def _prune(self, doc: int) -> None:
        """Keep the row's ``keep`` heaviest neighbours (ties by id)."""
        row = self.rows[doc]
        self.rows[doc] = defaultdict(float, sorted(row.items(), key=_heaviest_first)[: self.keep])

    def _rescale(self, ts: float) -> None:
        """Re-express every mass against ``ts`` (once in :data:`decay.RESCALE_AFTER` half-lives)."""
        factor = math.exp2((self.landmark - ts) / self.half_life)
        for row in self.rows.values():
            for key in row:
                row[key] *= factor
        self.landmark = ts

    def neighbours(self, doc: int, now: float) -> tuple[Docs, Floats]:
        """``doc``'s neighbours (sorted by id) and their decayed pair weights as of ``now``."""
        row = self.rows.get(doc)
        if not row:
            return np.empty(0, np.uint32), np.empty(0)
        docs = np.fromiter(row.keys(), dtype=np.uint32, count=len(row))
        masses = np.fromiter(row.values(), dtype=np.float64, count=len(row))
        order = np.argsort(docs)
        scale = decay.value_at(1.0, self.landmark, now, self.half_life)
        return docs[order], masses[order] * scale

    def scores(self, sources: Iterable[tuple[int, float]], now: float) -> tuple[Docs, Floats]:
        """The items co-occurring with ``sources`` (``(doc, weight)``), with summed weights.

        Each neighbour's score is the sum over sources of the source's weight
        times the pair's decayed weight normalised by the source row's total
        (so a popular source does not drown the others). Sorted by id.
        """
        parts_docs, parts_values = [], []
        for doc, weight in sources:
            docs, values = self.neighbours(doc, now)
            if len(docs):
                total = float(values.sum())
                if total > 0.0:
                    parts_docs.append(docs)
                    parts_values.append(values * (weight / total))
        if not parts_docs:
            return np.empty(0, np.uint32), np.empty(0)
        docs = np.concatenate(parts_docs)
        values = np.concatenate(parts_values)
        unique, inverse = np.unique(docs, return_inverse=True)
        summed = np.bincount(inverse, weights=values, minlength=len(unique)).astype(np.float64)
        return unique, summed

    def state(self) -> tuple[dict[int, dict[int, float]], float, list[tuple[str, list[Any]]]]:
        """Everything it holds, for comparing a live projection with a rebuilt one."""
        return (
            {doc: dict(row) for doc, row in self.rows.items()},
            self.landmark,
            [(user, list(entries)) for user, entries in self.recent.items()],
        )

    def memory_bytes(self) -> int:
        """An estimate of its memory: dict entries, floats and the user windows."""
        entries = sum(len(row) for row in self.rows.values())
        windows = sum(len(entries_) for entries_ in self.recent.values())
        # Per pair ~56 B (a dict slot, an int key, a float; 68.5 MiB measured with tracemalloc
        # for 883k pairs), a row ~300 B, a window tuple ~120 B.
        return entries * 56 + len(self.rows) * 300 + windows * 120 + len(self.recent) * 150

    def statistics(self) -> CoOccurrenceStatistics:
        return CoOccurrenceStatistics(
            items=len(self.rows),
            pairs=sum(len(row) for row in self.rows.values()),
            users=len(self.recent),
            memory_bytes=self.memory_bytes(),
        )


def observe_events(
    cooccurrence: CoOccurrence, index: Index, events: Iterable[InteractionRecorded]
) -> None:
    """Feed interactions (in log order) whose items the index has ids for."""
    doc_of = index.doc_of
    for event in events:
        weight = engagement_weight(event)
        if weight > 0.0:
            doc = doc_of(event.item)
            if doc is not None:
                cooccurrence.observe(event.user, doc, weight, event.ts)


def rebuild_cooccurrence(
    store: EventStore,
    index: Index,
    cooccurrence: CoOccurrence | None = None,
    *,
    until: int | None = None,
    after: int = 0,
) -> CoOccurrence:
    """The co-occurrence of everything in ``store`` (up to ``until``, by default its last
    ``seq``), from its log in order. Blocking.

    ``index`` gives the internal ids (a rebuilt index numbers items as the live one).
    With ``cooccurrence`` as of ``after`` (a snapshot), only the events after it are fed.

    Raises:
        StoreError: the store cannot be read.
        CodecError: an event cannot be decoded.
    """
    started = time.perf_counter()
    out = CoOccurrence() if cooccurrence is None else cooccurrence
    seq, last, events = after, store.last_seq() if until is None else until, 0
    left_out, careful_until = 0, 0
    while seq < last:
        # After a corrupt event, read one at a time for a page's length to find it.
        limit = 1 if seq < careful_until else READ_PAGE
        try:
            page = store.read_all(after=seq, limit=limit)
        except CodecError as exc:
            if limit > 1:
                careful_until = seq + READ_PAGE
            else:  # a corrupt event (counted by the store): leave it out, go on
                left_out += 1
                seq += 1  # sequence numbers are consecutive
                log.error("co-occurrence: event %d left out: %s", seq, exc)
            continue
        if page and page[-1].seq > last:
            # Another process appended since `last` was read: a follower goes on from `last`.
            page = [stored for stored in page if stored.seq <= last]
        if not page:
            break
        seq = page[-1].seq
        events += len(page)
        observe_events(
            out,
            index,
            (s.event for s in page if type(s.event) is InteractionRecorded),
        )
    log.log(
        logging.WARNING if left_out else logging.INFO,
        "co-occurrence rebuilt from %d events after seq %d (%d corrupt left out): "
        "%d items, %d pairs in %.2f s",
        events,
        after,
        left_out,
        len(out.rows),
        sum(len(row) for row in out.rows.values()),
        time.perf_counter() - started,
    )
    return out


# -- snapshots --------------------------------------------------------------------------------

#: The format of :func:`encode_snapshot`; a file of another version is ignored.
SNAPSHOT_VERSION: Final = 1


def _parameters(cooccurrence: CoOccurrence) -> list[float]:
    c = cooccurrence
    return [c.window, c.gap_s, c.half_life, c.keep, c.max_users]


def encode_snapshot(cooccurrence: CoOccurrence, seq: int, event_id: str) -> bytes:
    """Everything ``cooccurrence`` holds, as of the log's ``seq`` (whose event is
    ``event_id``), for :func:`decode_snapshot`. Rows and users keep their order."""
    c = cooccurrence
    data: bytes = msgpack.packb(
        {
            "version": SNAPSHOT_VERSION,
            "seq": seq,
            "event_id": event_id,
            "parameters": _parameters(c),
            "landmark": c.landmark,
            "rows": [(doc, list(row), list(row.values())) for doc, row in c.rows.items()],
            "recent": list(c.recent.items()),
        }
    )
    return data


def decode_snapshot(data: bytes, template: CoOccurrence) -> tuple[CoOccurrence, int, str]:
    """The co-occurrence ``data`` holds, its ``seq`` and that event's id.

    ``template``: an empty co-occurrence with this server's parameters.

    Raises:
        CodecError: ``data`` is not a snapshot of this version, or was made with
            other parameters (window, gap, half-life, row size, users).
    """
    try:
        raw = msgpack.unpackb(data, use_list=False, strict_map_key=False)
        if raw["version"] != SNAPSHOT_VERSION:
            raise CodecError(f"version {raw['version']!r}, not {SNAPSHOT_VERSION}")
        if list(raw["parameters"]) != _parameters(template):
            raise CodecError("made with other parameters")
        out = template
        out.landmark = float(raw["landmark"])
        rows = out.rows
        for doc, docs, masses in raw["rows"]:
            rows[doc] = defaultdict(float, zip(docs, masses, strict=True))
        out.recent = OrderedDict((user, list(entries)) for user, entries in raw["recent"])
        return out, int(raw["seq"]), str(raw["event_id"])
    except CodecError:
        raise
    except (ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
        raise CodecError(f"not a co-occurrence snapshot: {exc}") from None


def load_cooccurrence(
    store: EventStore, index: Index, path: Path | None, *, until: int | None = None
) -> CoOccurrence:
    """:func:`rebuild_cooccurrence`, from the snapshot at ``path`` when there is a usable
    one (then only the events after it are read). Blocking; pauses the cyclic garbage
    collector meanwhile (:func:`~actors.gc_pause.collector_paused`): for startup.

    A snapshot is used only if its event is the log's event at its ``seq`` (the
    same log) and it is not ahead of ``until``; otherwise, or if it cannot be
    read, the log is replayed from the start (and why is logged).

    Raises:
        StoreError: the store cannot be read.
    """
    with collector_paused():
        last = store.last_seq() if until is None else until
        snapshot = None if path is None else _usable_snapshot(store, path, last)
        if snapshot is None:
            return rebuild_cooccurrence(store, index, until=last)
        loaded, seq = snapshot
        return rebuild_cooccurrence(store, index, loaded, until=last, after=seq)


def read_snapshot(store: EventStore, path: Path, last: int) -> tuple[CoOccurrence, int]:
    """The co-occurrence at ``path`` and its ``seq``, if it is a snapshot of ``store``'s log
    no further than ``last`` (also what ``matchlight verify`` checks). Blocking.

    Raises:
        FileNotFoundError: there is none.
        OSError: it cannot be read.
        CodecError: it does not decode, or is not a snapshot of this log up to ``last``.
        StoreError: the store cannot be read.
    """
    loaded, seq, event_id = decode_snapshot(path.read_bytes(), CoOccurrence())
    if seq > last:
        raise CodecError(f"it is at seq {seq}, past the log's {last}")
    at = store.read_all(after=seq - 1, limit=1)
    if not at or at[0].seq != seq or at[0].event.id != event_id:
        raise CodecError(f"the log's event at seq {seq} is not the one it was made after")
    return loaded, seq


def _usable_snapshot(store: EventStore, path: Path, last: int) -> tuple[CoOccurrence, int] | None:
    """:func:`read_snapshot`, or ``None`` (logged, unless there is no file)."""
    try:
        return read_snapshot(store, path, last)
    except FileNotFoundError:
        return None
    except (OSError, CodecError) as exc:
        log.warning("co-occurrence snapshot %s not used (%s): replaying the log", path, exc)
        return None


def save_cooccurrence(cooccurrence: CoOccurrence, store: EventStore, path: Path, seq: int) -> None:
    """Write ``cooccurrence`` (as of the log's ``seq``) to ``path`` atomically, for the next
    start's :func:`load_cooccurrence`. Blocking. Nothing for an empty log.

    Raises:
        OSError: the file cannot be written (the previous one stays).
        StoreError: the store cannot be read.
    """
    if seq <= 0:
        return
    started = time.perf_counter()
    size = write_snapshot(cooccurrence, seq, event_id_at(store, seq), path)
    log.info(
        "co-occurrence snapshot at seq %d written (%.1f MiB) in %.2f s",
        seq,
        size / 2**20,
        time.perf_counter() - started,
    )


def event_id_at(store: EventStore, seq: int) -> str:
    """The id of the log's event at ``seq`` (a snapshot records it, to be checked against).

    Raises:
        StoreError: the store cannot be read.
    """
    (at,) = store.read_all(after=seq - 1, limit=1)
    return at.event.id


def write_snapshot(cooccurrence: CoOccurrence, seq: int, event_id: str, path: Path) -> int:
    """Encode ``cooccurrence`` (as of ``seq``, whose event is ``event_id``) and replace
    ``path`` with it atomically; the bytes written. Blocking; no store needed.

    Raises:
        OSError: the file cannot be written (the previous one stays).
    """
    data = encode_snapshot(cooccurrence, seq, event_id)
    write_atomically(path, data)
    return len(data)
