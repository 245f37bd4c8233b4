"""A column: one float64 per internal id, sparse while few ids have one, dense once many do.

Numeric and geo fields keep their values here. A field that a handful of items
have must not cost memory in proportion to the whole catalogue, and one that
most items have must be a plain array for vectorised reads. So a column is

- *sparse*: a dict id -> value, about 100 bytes per value (the entry and its
  int and float objects), plus sorted arrays of the ids and values (12 bytes
  per value) for vectorised lookups, brought up to date lazily on a read; or
- *dense*: a numpy array indexed by id, NaN where an id has no value, 8 bytes
  per id below its capacity.

A sparse column turns dense when ``count * RATIO >= highest id + 1``: then the
array costs at most ``8 * RATIO`` = 128 bytes per value, about what the dict
does. A dense column grows to cover a new id by at least doubling, unless it
would hold fewer than one value per ``RATIO`` ids: then it turns sparse
instead. It also turns sparse when removals leave it with fewer than one value
per ``4 * RATIO`` ids of capacity. So a dense column never costs more than
``8 * 4 * RATIO`` = 512 bytes per value (and at most 256 while it only grows),
and memory stays bounded by the values stored, not by the number of ids.

A missing value reads as NaN. Not thread-safe; no I/O.
"""

from __future__ import annotations

import itertools
import math
import sys
from typing import Final

import numpy as np
import numpy.typing as npt

#: A sparse column turns dense once it holds a value for at least one id in RATIO.
RATIO: Final = 16
#: A dense column turns sparse once it holds a value for fewer than one id in
#: RATIO * SHRINK of its capacity (hysteresis: densifying again needs many more values).
SHRINK: Final = 4
#: The int key and float value objects of a sparse entry (the dict's own table aside).
_ENTRY_OBJECTS: Final = sys.getsizeof(2**20) + sys.getsizeof(0.5)

#: Up to this many ids, a sparse column looks them up in its dict: fewer numpy calls.
_FEW: Final = 64

_NO_IDS: Final = np.empty(0, dtype=np.uint32)
_NO_VALUES: Final = np.empty(0, dtype=np.float64)


class Column:
    """A float64 per id; NaN (no value) unless set. Not thread-safe; no I/O."""

    # A field has two or three columns and a catalogue may have thousands of fields.
    __slots__ = (
        "_count",
        "_dense",
        "_holes",
        "_ids",
        "_pending",
        "_sparse",
        "_stale",
        "_top",
        "_values",
    )

    def __init__(self) -> None:
        # Dense: the array (its length is the capacity); else None and the fields below.
        self._dense: npt.NDArray[np.float64] | None = None
        # Dense: how many ids have a value.
        self._count = 0
        # Sparse: the values by id (never NaN).
        self._sparse: dict[int, float] = {}
        # Sparse: an upper bound of the highest id with a value (-1: none).
        self._top = -1
        # Sparse, for vectorised reads: ids ascending and their values. Ids that
        # lost their value since are still there with NaN (_holes of them); ids
        # that gained one since are in _pending (perhaps twice, perhaps gone again).
        self._ids: npt.NDArray[np.uint32] = _NO_IDS
        self._values: npt.NDArray[np.float64] = _NO_VALUES
        self._holes = 0
        self._pending: list[int] = []
        # Sparse: _ids and _values must be rebuilt from the dict before a read.
        self._stale = False

    def __len__(self) -> int:
        """How many ids have a value."""
        return self._count if self._dense is not None else len(self._sparse)

    @property
    def dense(self) -> bool:
        return self._dense is not None

    @property
    def nbytes(self) -> int:
        """The bytes the column holds: exact when dense, a close estimate when sparse."""
        if self._dense is not None:
            return self._dense.nbytes
        return (
            sys.getsizeof(self._sparse)
            + len(self._sparse) * _ENTRY_OBJECTS
            + self._ids.nbytes
            + self._values.nbytes
            + sys.getsizeof(self._pending)
        )

    def get(self, doc: int) -> float:
        """The value of ``doc``, NaN if it has none."""
        dense = self._dense
        if dense is not None:
            return float(dense[doc]) if doc < len(dense) else math.nan
        return self._sparse.get(doc, math.nan)

    # -- changes ------------------------------------------------------------------

    def set(self, doc: int, value: float) -> None:
        """Give ``doc`` the value ``value`` (NaN: remove its value)."""
        if value != value:
            self.unset(doc)
            return
        dense = self._dense
        if dense is not None:
            if doc < len(dense):
                if math.isnan(dense[doc]):
                    self._count += 1
                dense[doc] = value
                return
            if (self._count + 1) * RATIO >= doc + 1:
                dense = self._grow(doc + 1)
                dense[doc] = value
                self._count += 1
                return
            self._sparsify()  # a far id and few values: an array would be mostly NaN
        sparse = self._sparse
        value = float(value)
        new = doc not in sparse
        sparse[doc] = value
        if new:
            if doc > self._top:
                self._top = doc
            if len(sparse) * RATIO >= self._top + 1:
                self._densify()
                return
        if self._stale:
            return
        ids = self._ids
        if len(ids) and doc <= ids[-1]:
            at = int(ids.searchsorted(doc))
            if ids[at] == doc:
                if new:
                    self._holes -= 1  # it had a value when the arrays were built
                self._values[at] = value
                return
        if new:
            pending = self._pending
            pending.append(doc)
            if len(pending) > 2 * len(sparse) + 64:
                # Ids that come and go with no read in between: rebuild at the next read.
                self._stale, self._pending = True, []

    def unset(self, doc: int) -> None:
        """Remove ``doc``'s value, if it has one."""
        dense = self._dense
        if dense is not None:
            if doc < len(dense) and not math.isnan(dense[doc]):
                dense[doc] = math.nan
                self._count -= 1
                if self._count * RATIO * SHRINK < len(dense):
                    self._sparsify()
            return
        if self._sparse.pop(doc, None) is None or self._stale:
            return
        ids = self._ids
        if len(ids) and doc <= ids[-1]:
            at = int(ids.searchsorted(doc))
            if ids[at] == doc:
                self._values[at] = math.nan
                self._holes += 1
        # Else it is pending: reads look it up in the dict and find nothing.

    def load(self, docs: npt.NDArray[np.uint32], values: npt.NDArray[np.float64]) -> None:
        """Set many values at once (a bulk :meth:`set`; ``docs`` distinct, in any order)."""
        if np.isnan(values).any():
            kept = ~np.isnan(values)
            docs, values = docs[kept], values[kept]
        if not len(docs):
            return
        top = int(docs.max())
        dense = self._dense
        if dense is None:
            # As many values as that (fewer if some ids had one): dense straight away?
            if (len(self._sparse) + len(docs)) * RATIO >= max(self._top, top) + 1:
                self._top = max(self._top, top)
                dense = self._densify()
        elif top >= len(dense):
            if (self._count + len(docs)) * RATIO >= top + 1:
                dense = self._grow(top + 1)
            else:
                self._sparsify()  # as in set(): few values, far ids
                dense = None
        if dense is not None:
            self._count += int(np.count_nonzero(np.isnan(dense[docs])))
            dense[docs] = values
            return
        sparse = self._sparse
        was_empty = not sparse
        sparse.update(zip(docs.tolist(), values.tolist(), strict=True))
        self._top = max(self._top, top)
        if was_empty:
            order = np.argsort(docs, kind="stable")
            self._ids = np.ascontiguousarray(docs[order], dtype=np.uint32)
            self._values = np.ascontiguousarray(values[order], dtype=np.float64)
            self._holes, self._pending, self._stale = 0, [], False
        else:
            self._stale = True

    # -- reads --------------------------------------------------------------------

    def take(
        self, docs: npt.NDArray[np.uint32], *, ascending: bool = False
    ) -> npt.NDArray[np.float64]:
        """The value of each of ``docs`` (a new array), NaN where there is none.

        With ``ascending`` the ids must be strictly ascending (as from a bitmap),
        which spares a dense column a pass over them and lets a sparse one look
        its few ids up among many.
        """
        dense = self._dense
        if dense is not None:
            capacity = len(dense)
            if ascending:
                if not len(docs) or docs[-1] < capacity:
                    return dense[docs]
                inside = int(docs.searchsorted(capacity))
                out = np.full(len(docs), np.nan)
                out[:inside] = dense[docs[:inside]]
                return out
            within = docs < capacity
            if within.all():
                return dense[docs]
            out = np.full(len(docs), np.nan)
            out[within] = dense[docs[within]]
            return out
        if len(docs) <= _FEW:
            looked_up = map(self._sparse.get, docs.tolist(), itertools.repeat(math.nan))
            return np.fromiter(looked_up, dtype=np.float64, count=len(docs))
        ids, values = self._arrays()
        out = np.full(len(docs), np.nan)
        if not len(ids):
            return out
        if ascending and len(ids) < len(docs):
            # Few values among many ids: find each of ours among them.
            at = docs.searchsorted(ids)
            found = at < len(docs)
            found[found] = docs[at[found]] == ids[found]
            out[at[found]] = values[found]
        else:
            at = ids.searchsorted(docs)
            np.minimum(at, len(ids) - 1, out=at)
            found = ids[at] == docs
            out[found] = values[at[found]]
        return out

    # -- representation -----------------------------------------------------------

    def _arrays(self) -> tuple[npt.NDArray[np.uint32], npt.NDArray[np.float64]]:
        """A sparse column's ids ascending and their values (NaN: removed since)."""
        sparse = self._sparse
        if self._stale or 2 * self._holes > len(self._ids) or len(self._pending) > len(sparse) // 2:
            # Rebuild: cheaper than merging when much changed.
            ids = np.fromiter(sparse.keys(), dtype=np.uint32, count=len(sparse))
            values = np.fromiter(sparse.values(), dtype=np.float64, count=len(sparse))
            order = np.argsort(ids)
            self._ids, self._values = ids[order], values[order]
            self._top = int(self._ids[-1]) if len(ids) else -1
            self._holes, self._pending, self._stale = 0, [], False
        elif self._pending:
            added = sorted({doc for doc in self._pending if doc in sparse})
            self._pending = []
            if added:
                # None of them is among the ids (else it would not be pending).
                new_ids = np.array(added, dtype=np.uint32)
                at = self._ids.searchsorted(new_ids)
                self._ids = np.insert(self._ids, at, new_ids)
                self._values = np.insert(self._values, at, [sparse[doc] for doc in added])
        return self._ids, self._values

    def _grow(self, size: int) -> npt.NDArray[np.float64]:
        """Make a dense column cover ids below ``size`` (amortised: at least doubles)."""
        assert self._dense is not None
        grown = np.full(max(size, 2 * len(self._dense)), np.nan)
        grown[: len(self._dense)] = self._dense
        self._dense = grown
        return grown

    def _densify(self) -> npt.NDArray[np.float64]:
        """Turn dense, covering ids up to the highest; returns the array."""
        sparse = self._sparse
        dense = np.full(self._top + 1, np.nan)
        ids = np.fromiter(sparse.keys(), dtype=np.intp, count=len(sparse))
        dense[ids] = np.fromiter(sparse.values(), dtype=np.float64, count=len(sparse))
        self._dense, self._count = dense, len(sparse)
        self._sparse, self._top = {}, -1
        self._ids, self._values = _NO_IDS, _NO_VALUES
        self._holes, self._pending, self._stale = 0, [], False
        return dense

    def _sparsify(self) -> None:
        """Turn sparse."""
        assert self._dense is not None
        ids = np.flatnonzero(~np.isnan(self._dense))
        values = self._dense[ids]
        self._sparse = dict(zip(ids.tolist(), values.tolist(), strict=True))
        self._top = int(ids[-1]) if len(ids) else -1
        self._ids, self._values = ids.astype(np.uint32), values
        self._holes, self._pending, self._stale = 0, [], False
        self._dense, self._count = None, 0
