"""A numeric field: values per internal id, bucketed into roaring bitmaps for range filters.

Each value lands in a bucket keyed by the top 16 bits of its order-preserving
64-bit image (sign, exponent and 4 mantissa bits), so a bucket spans a
sixteenth of an octave: [48, 50), [992, 1024), [0.25, 0.265625). Integers
below 32 get a bucket each. Bucket keys sort like the values, which gives:

- ``select(lo, hi)``: the union of the buckets strictly inside the range,
  plus the two boundary buckets checked value by value;
- ``keep(candidates, lo, hi)``: within an ``all``, a direct check of the
  candidates against the value array, or ``select`` and an intersection,
  whichever a measured cost model says is cheaper;
- ``order(matches, …)``: the matches sorted by value, walking buckets from
  the top (or bottom) and sorting only the buckets it needs;
- ``range_top(lo, hi, …)``: a range sorted by its own field, counted from
  bucket sizes without building the matches at all.

Values are kept in a :class:`~index.column.Column`: sparse while few items
have one, so a field costs memory in proportion to its values, not to the
catalogue.

A field may have a *default*: the value of every item that has none (item
counters default to 0, so ``like <= 10`` matches items never liked). The
field only knows which items have a value; callers pass the universe.

Ties in value are broken by ascending internal id, everywhere.
"""

from __future__ import annotations

import array
import bisect
import math
import struct
from collections.abc import Iterator
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

from index.column import Column

_PACK_D = struct.Struct("<d")
_UNPACK_Q = struct.Struct("<Q")
_SIGN: Final = 1 << 63
_MASK: Final = (1 << 64) - 1
_SHIFT: Final = 48  # keep sign + 11 exponent bits + 4 mantissa bits

#: Up to this many matches, order() sorts them all at once instead of walking buckets.
DIRECT_CHECK_MAX: Final = 4_096
#: keep() selects by buckets only if there are more than about this many
#: candidates per bucket in the range (the break-even measured on the data of
#: `matchlight bench index`: ~0.5 µs per bucket against ~7 ns per candidate).
CANDIDATES_PER_BUCKET: Final = 70
#: Up to this many, a Python loop beats numpy's per-call overhead.
SMALL: Final = 24


def bucket_key(value: float) -> int:
    """The bucket of ``value``; keys are ordered like the values."""
    bits: int
    (bits,) = _UNPACK_Q.unpack(_PACK_D.pack(value + 0.0))  # + 0.0 turns -0.0 into 0.0
    bits = (~bits & _MASK) if bits & _SIGN else (bits | _SIGN)
    return bits >> _SHIFT


def bucket_keys(values: npt.NDArray[np.float64]) -> npt.NDArray[np.uint64]:
    """:func:`bucket_key` of many values at once."""
    bits = (values + 0.0).view(np.uint64)
    negative = (bits >> np.uint64(63)).astype(bool)
    flipped = np.where(negative, ~bits, bits | np.uint64(_SIGN))
    keys: npt.NDArray[np.uint64] = flipped >> np.uint64(_SHIFT)
    return keys


def group_by_key(
    keys: npt.NDArray[Any], ids: npt.NDArray[np.uint32]
) -> Iterator[tuple[Any, BitMap]]:
    """(key, bitmap of the ids with that key) for each distinct key, keys ascending."""
    order = np.argsort(keys, kind="stable")
    keys, ids = keys[order], ids[order]
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    # Plain lists: many groups are tiny, and per-group numpy calls would dominate.
    ids_list = ids.tolist()
    for key, start, end in zip(keys[starts].tolist(), starts.tolist(), ends.tolist(), strict=True):
        yield key, BitMap(ids_list[start:end])


def to_bitmap(ids: npt.NDArray[np.uint32]) -> BitMap:
    """A bitmap of sorted or unsorted uint32 ids (through ``array``: pyroaring's fast path)."""
    buffer = array.array("I")
    buffer.frombytes(np.ascontiguousarray(ids, dtype=np.uint32).tobytes())
    return BitMap(buffer)


def ids_of(bitmap: BitMap) -> npt.NDArray[np.uint32]:
    """The ids of a bitmap as a numpy array, ascending."""
    return np.frombuffer(bitmap.to_array(), dtype=np.uint32)


class NumericField:
    """One numeric field's values and buckets. Not thread-safe; no I/O."""

    def __init__(self, name: str, *, default: float | None = None) -> None:
        self.name = name
        self.default = default
        self.values = Column()
        #: Items that have a value (not counting the default).
        self.present = BitMap()
        self._buckets: dict[int, BitMap] = {}
        self._keys: list[int] = []  # sorted bucket keys

    def __len__(self) -> int:
        return len(self.present)

    def get(self, doc: int) -> float | None:
        value = self.values.get(doc)
        return None if math.isnan(value) else value

    # -- maintenance -----------------------------------------------------------

    def load(self, docs: npt.NDArray[np.uint32], values: npt.NDArray[np.float64]) -> None:
        """Give many items that have no value yet their values at once (a bulk :meth:`set`)."""
        if not len(docs):
            return
        if self.present.intersection_cardinality(to_bitmap(docs)):
            raise ValueError(f"field {self.name!r}: load() of items that already have a value")
        self.values.load(docs, values)
        for key, bitmap in group_by_key(bucket_keys(values), docs):
            bucket = self._buckets.get(key)
            if bucket is None:
                self._buckets[key] = bitmap
                bisect.insort(self._keys, key)
            else:
                bucket |= bitmap
        self.present |= to_bitmap(docs)

    def set(self, doc: int, value: float) -> None:
        """Give ``doc`` the value ``value`` (finite)."""
        values = self.values
        old = values.get(doc)
        if old == value:
            return
        new_key = bucket_key(value)
        if not math.isnan(old):
            old_key = bucket_key(old)
            if old_key == new_key:
                values.set(doc, value)
                return
            self._bucket_discard(old_key, doc)
        bucket = self._buckets.get(new_key)
        if bucket is None:
            bucket = self._buckets[new_key] = BitMap()
            bisect.insort(self._keys, new_key)
        bucket.add(doc)
        values.set(doc, value)
        self.present.add(doc)

    def unset(self, doc: int) -> None:
        """Remove ``doc``'s value, if it has one."""
        if doc not in self.present:
            return
        self._bucket_discard(bucket_key(self.values.get(doc)), doc)
        self.values.unset(doc)
        self.present.discard(doc)

    def _bucket_discard(self, key: int, doc: int) -> None:
        bucket = self._buckets[key]
        bucket.discard(doc)
        if not bucket:
            del self._buckets[key]
            del self._keys[bisect.bisect_left(self._keys, key)]

    # -- queries -----------------------------------------------------------------

    def _default_matches(self, lo: float | None, hi: float | None) -> bool:
        d = self.default
        return d is not None and (lo is None or d >= lo) and (hi is None or d <= hi)

    def _span(self, lo: float | None, hi: float | None) -> tuple[int, int]:
        """Positions in the sorted keys of the buckets that may hold values in ``[lo, hi]``."""
        keys = self._keys
        start = 0 if lo is None else bisect.bisect_left(keys, bucket_key(lo))
        stop = len(keys) if hi is None else bisect.bisect_right(keys, bucket_key(hi))
        return start, stop

    def select(self, lo: float | None, hi: float | None, universe: BitMap) -> BitMap:
        """The items of ``universe`` whose value lies in ``[lo, hi]`` (``None``: unbounded)."""
        start, stop = self._span(lo, hi)
        keys, buckets = self._keys, self._buckets
        parts: list[BitMap] = []
        for position in range(start, stop):
            bucket = buckets[keys[position]]
            edge = (lo is not None and position == start) or (
                hi is not None and position == stop - 1
            )
            parts.append(self._check(bucket, lo, hi) if edge else bucket)
        if self._default_matches(lo, hi):
            parts.append(universe - self.present)
        if not parts:
            return BitMap()
        found = BitMap.union(*parts) if len(parts) > 1 else BitMap(parts[0])
        return found & universe

    def keep(self, candidates: BitMap, lo: float | None, hi: float | None) -> BitMap:
        """The items of ``candidates`` whose value lies in ``[lo, hi]``.

        Checks the candidates' values directly (a few ns each) unless there
        are so many that a union of the range's buckets (about a µs each) and
        one intersection costs less.
        """
        count = len(candidates)
        if count > SMALL:
            start, stop = self._span(lo, hi)
            # select ≈ 0.5 µs a bucket + two edge checks; check ≈ 7 µs + 7 ns a candidate.
            if count > CANDIDATES_PER_BUCKET * (stop - start) + 1_400:
                return self.select(lo, hi, candidates)
        return self._check(candidates, lo, hi)

    def _check(self, docs: BitMap, lo: float | None, hi: float | None) -> BitMap:
        """The items of ``docs`` whose value (or default) lies in ``[lo, hi]``."""
        if len(docs) <= SMALL:
            # A few numpy calls cost more than looking at a handful of values.
            get, default = self.values.get, self.default
            kept = BitMap()
            for doc in docs:
                value = get(doc)
                if value != value:  # NaN: no value
                    if default is None:
                        continue
                    value = default
                if (lo is None or value >= lo) and (hi is None or value <= hi):
                    kept.add(doc)
            return kept
        ids = ids_of(docs)
        values = self._values_of(ids)
        if lo is not None and hi is not None:
            mask = (values >= lo) & (values <= hi)
        elif lo is not None:
            mask = values >= lo
        elif hi is not None:
            mask = values <= hi
        else:
            mask = ~np.isnan(values)
        return to_bitmap(ids[mask])

    def values_of(self, docs: npt.NDArray[np.uint32]) -> npt.NDArray[np.float64]:
        """The value of each of ``docs`` (any order), the default where there is none, else NaN."""
        return self._with_default(self.values.take(docs))

    def _values_of(self, ids: npt.NDArray[np.uint32]) -> npt.NDArray[np.float64]:
        """:meth:`values_of` ``ids`` in ascending order (as from a bitmap)."""
        return self._with_default(self.values.take(ids, ascending=True))

    def _with_default(self, values: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        if self.default is not None:
            values[np.isnan(values)] = self.default
        return values

    def order(self, matches: BitMap, limit: int, *, descending: bool) -> list[int]:
        """The first ``limit`` of ``matches`` sorted by value, ties by id; valueless ones last.

        Walks the buckets from the top (or bottom) and sorts only those it
        needs, so a top-k over many matches costs about k, not the matches.
        """
        if limit <= 0 or not matches:
            return []
        if len(matches) <= DIRECT_CHECK_MAX:
            return self._sorted(matches, limit, descending)
        valueless = matches - self.present
        keys = list(self._keys)
        default_key = None
        if self.default is not None and valueless:
            default_key = bucket_key(self.default)
            if default_key not in self._buckets:
                bisect.insort(keys, default_key)
        out: list[int] = []
        for key in reversed(keys) if descending else keys:
            bucket = self._buckets.get(key)
            part = BitMap() if bucket is None else bucket & matches
            if key == default_key:
                part |= valueless  # they all have the default value
            if part:
                out.extend(self._sorted(part, limit - len(out), descending))
                if len(out) >= limit:
                    return out
        if self.default is None:
            out.extend(valueless[: limit - len(out)])  # no value: last, in id order
        return out

    def range_top(
        self,
        lo: float | None,
        hi: float | None,
        universe: BitMap,
        limit: int,
        *,
        descending: bool,
    ) -> tuple[list[int], int]:
        """A range sorted by its own field: (the first ``limit`` in value order, the total).

        The same as ``order(select(lo, hi, universe), …)`` with the count, for
        a ``universe`` that holds every item with a value (the whole index),
        without building the matches: the total comes from bucket sizes and
        only the buckets the top ``limit`` come from are sorted.
        """
        start, stop = self._span(lo, hi)
        keys, buckets = self._keys, self._buckets
        # The range's buckets by key; the two edge buckets checked value by value.
        parts: dict[int, BitMap] = {}
        total = 0
        for position in range(start, stop):
            bucket = buckets[keys[position]]
            edge = (lo is not None and position == start) or (
                hi is not None and position == stop - 1
            )
            part = self._check(bucket, lo, hi) if edge else bucket
            parts[keys[position]] = part
            total += len(part)
        if self._default_matches(lo, hi):
            valueless = universe - self.present
            if valueless:
                total += len(valueless)
                assert self.default is not None
                default_key = bucket_key(self.default)
                parts[default_key] = (
                    parts[default_key] | valueless if default_key in parts else valueless
                )
        out: list[int] = []
        if limit > 0:
            for key in sorted(parts, reverse=descending):
                part = parts[key]
                if part:
                    out.extend(self._sorted(part, limit - len(out), descending))
                    if len(out) >= limit:
                        break
        return out, total

    def _sorted(self, docs: BitMap, limit: int, descending: bool) -> list[int]:
        """``docs`` sorted by (value, id), NaN (no value) last; at most ``limit`` of them."""
        ids = ids_of(docs)
        keyed = self._values_of(ids)
        if descending:
            keyed = -keyed
        if len(ids) > 4 * limit:
            # Only the smallest `limit` keys matter: keep those up to the limit-th
            # one, ties included, then sort just them. (NaN compares false: dropped,
            # and it would sort last anyway, so only when fewer remain is it needed.)
            kth = np.partition(keyed, limit - 1)[limit - 1]
            if kth == kth:  # not NaN
                near = keyed <= kth
                ids, keyed = ids[near], keyed[near]
        # A stable sort keeps ties in id order (ids are ascending); NaN sorts last.
        order = np.argsort(keyed, kind="stable")
        result: list[int] = ids[order[:limit]].tolist()
        return result
