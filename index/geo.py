"""A geo field: one point (lat, lon) per item, a grid of roaring bitmaps for ``near``.

Points are filed into cells of a latitude/longitude grid at several sizes
(8° down to 1/8°, about 14 km). A ``near`` query picks the finest grid on
which the circle's bounding box spans at most :data:`MAX_CELLS` cells, takes
the cells wholly inside the circle as they are and checks the points of the
cells on its edge one by one (vectorised great-circle distance). A cell is
"wholly inside" only by a conservative bound (the triangle inequality through
the cell's centre, with a margin), so the exact check decides every doubtful
point and the result equals a brute-force distance filter. Within an ``all``,
cells are intersected with what the other parts matched before any point is
checked.

Coordinates are kept in two columns (:class:`~index.column.Column`), sparse
while few items have a point, so a field costs memory in proportion to its points.
"""

from __future__ import annotations

import functools
import math
from typing import Final

import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

from index.column import Column
from index.numeric import group_by_key, ids_of, to_bitmap

EARTH_RADIUS_KM: Final = 6371.0088
KM_PER_DEGREE: Final = math.pi * EARTH_RADIUS_KM / 180.0
#: Cell sizes in degrees, coarse to fine.
CELL_DEGREES: Final = (8.0, 2.0, 0.5, 0.125)
MAX_CELLS: Final = 64
#: The cell budget when at most FILTERED_MAX candidates are left by other filters.
FILTERED_MAX_CELLS: Final = 16
FILTERED_MAX: Final = 20_000
#: Up to this many candidates, check their distances directly.
DIRECT_CHECK: Final = 256


def distance_km(
    lat: float, lon: float, lats: npt.NDArray[np.float64], lons: npt.NDArray[np.float64]
) -> npt.NDArray[np.float64]:
    """Great-circle (haversine) distances from one point to many, in km."""
    phi1 = math.radians(lat)
    phi2 = np.radians(lats)
    half_dphi = (phi2 - phi1) / 2.0
    half_dlambda = np.radians(lons - lon) / 2.0
    h = np.sin(half_dphi) ** 2 + math.cos(phi1) * np.cos(phi2) * np.sin(half_dlambda) ** 2
    distances: npt.NDArray[np.float64] = (
        2.0 * EARTH_RADIUS_KM * np.arcsin(np.sqrt(np.minimum(h, 1.0)))
    )
    return distances


def _columns(size: float) -> int:
    return round(360.0 / size)


def _cell(size: float, lat: float, lon: float) -> tuple[int, int]:
    """(row, column) of a point; longitude wraps, so 180° is in the column of -180°."""
    return math.floor((lat + 90.0) / size), math.floor((lon + 180.0) / size) % _columns(size)


class GeoField:
    """One geo field's points and grid. Not thread-safe; no I/O."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.lats = Column()
        self.lons = Column()
        self.present = BitMap()
        # One grid per cell size: (row, column) -> items in that cell.
        self._grids: list[dict[tuple[int, int], BitMap]] = [{} for _ in CELL_DEGREES]

    def __len__(self) -> int:
        return len(self.present)

    def get(self, doc: int) -> tuple[float, float] | None:
        if doc in self.present:
            return self.lats.get(doc), self.lons.get(doc)
        return None

    # -- maintenance -----------------------------------------------------------

    def load(
        self,
        docs: npt.NDArray[np.uint32],
        lats: npt.NDArray[np.float64],
        lons: npt.NDArray[np.float64],
    ) -> None:
        """Place many items that have no point yet at once (a bulk :meth:`set`)."""
        if not len(docs):
            return
        if self.present.intersection_cardinality(to_bitmap(docs)):
            raise ValueError(f"geo field {self.name!r}: load() of items that already have a point")
        self.lats.load(docs, lats)
        self.lons.load(docs, lons)
        for size, grid in zip(CELL_DEGREES, self._grids, strict=True):
            # The same arithmetic as _cell, elementwise, so cells agree exactly.
            span = _columns(size)
            rows = np.floor((lats + 90.0) / size).astype(np.int64)
            columns = np.floor((lons + 180.0) / size).astype(np.int64) % span
            for key, bitmap in group_by_key(rows * span + columns, docs):
                cell = (key // span, key % span)
                bucket = grid.get(cell)
                if bucket is None:
                    grid[cell] = bitmap
                else:
                    bucket |= bitmap
        self.present |= to_bitmap(docs)

    def set(self, doc: int, lat: float, lon: float) -> None:
        """Place ``doc`` at (lat, lon); degrees, lat in [-90, 90], lon in [-180, 180]."""
        if doc in self.present:
            if self.lats.get(doc) == lat and self.lons.get(doc) == lon:
                return
            self.unset(doc)
        for size, grid in zip(CELL_DEGREES, self._grids, strict=True):
            cell = _cell(size, lat, lon)
            bucket = grid.get(cell)
            if bucket is None:
                bucket = grid[cell] = BitMap()
            bucket.add(doc)
        self.lats.set(doc, lat)
        self.lons.set(doc, lon)
        self.present.add(doc)

    def unset(self, doc: int) -> None:
        if doc not in self.present:
            return
        lat, lon = self.lats.get(doc), self.lons.get(doc)
        for size, grid in zip(CELL_DEGREES, self._grids, strict=True):
            cell = _cell(size, lat, lon)
            bucket = grid[cell]
            bucket.discard(doc)
            if not bucket:
                del grid[cell]
        self.lats.unset(doc)
        self.lons.unset(doc)
        self.present.discard(doc)

    # -- queries -----------------------------------------------------------------

    def keep(self, candidates: BitMap, lat: float, lon: float, km: float) -> BitMap:
        """The items of ``candidates`` within ``km`` of (lat, lon)."""
        if len(candidates) <= DIRECT_CHECK:
            return self._check(candidates & self.present, lat, lon, km)
        return self._near(lat, lon, km, candidates)

    def select(self, lat: float, lon: float, km: float) -> BitMap:
        """Every item within ``km`` of (lat, lon)."""
        return self._near(lat, lon, km, None)

    def _near(self, lat: float, lon: float, km: float, within: BitMap | None) -> BitMap:
        dlat = km / KM_PER_DEGREE
        # Half the circle's east-west span is at most dlat / cos(its most poleward latitude).
        poleward = abs(lat) + dlat
        dlon = dlat / math.cos(math.radians(poleward)) if poleward < 89.0 else 360.0
        if dlon >= 180.0:  # near a pole, or a huge circle: check every point
            docs = self.present if within is None else self.present & within
            return self._check(docs, lat, lon, km)
        # Each cell costs a few µs to classify; each doubtful point ~15 ns to check.
        # With other filters narrowing the points, fewer and larger cells win.
        budget = MAX_CELLS if within is None or len(within) > FILTERED_MAX else FILTERED_MAX_CELLS
        level = 0
        for level_index, size in enumerate(CELL_DEGREES):
            rows = math.floor((lat + dlat + 90.0) / size) - math.floor((lat - dlat + 90.0) / size)
            columns = math.floor((lon + dlon + 180.0) / size) - math.floor(
                (lon - dlon + 180.0) / size
            )
            if (rows + 1) * (columns + 1) > budget:
                break
            level = level_index
        size, grid = CELL_DEGREES[level], self._grids[level]
        columns_total = _columns(size)
        # Unwrapped columns (they may run past either end); each is taken modulo the total.
        col_lo = math.floor((lon - dlon + 180.0) / size)
        col_hi = math.floor((lon + dlon + 180.0) / size)
        # A cell lies wholly inside if its centre is within km of the point by
        # more than the cell's reach: the distance from its centre to its corner
        # nearer the equator, its farthest point for cells this small. (Scalar
        # math: for a few dozen cells numpy's per-call cost is the larger part.)
        phi = math.radians(lat)
        cos_phi = math.cos(phi)
        inside: list[BitMap] = []
        edge: list[BitMap] = []
        for row in range(
            math.floor((lat - dlat + 90.0) / size), math.floor((lat + dlat + 90.0) / size) + 1
        ):
            centre_phi = math.radians((row + 0.5) * size - 90.0)
            north_south = math.sin((centre_phi - phi) / 2.0) ** 2
            east_west = cos_phi * math.cos(centre_phi)
            reach = self._row_reach(level, row)
            for column in range(col_lo, col_hi + 1):
                wrapped = column % columns_total
                bucket = grid.get((row, wrapped))
                if bucket is None:
                    continue
                half_dlambda = math.radians((wrapped + 0.5) * size - 180.0 - lon) / 2.0
                h = min(1.0, north_south + east_west * math.sin(half_dlambda) ** 2)
                gap = 2.0 * EARTH_RADIUS_KM * math.asin(math.sqrt(h))
                (inside if gap + reach < km else edge).append(bucket)
        found = BitMap.union(*inside) if inside else BitMap()
        if within is not None:
            found &= within
        if edge:
            doubtful = BitMap.union(*edge)
            if within is not None:
                doubtful &= within
            found |= self._check(doubtful, lat, lon, km)
        return found

    @staticmethod
    @functools.cache
    def _row_reach(level: int, row: int) -> float:
        """How far (km, with a safety margin) any point of a cell in this row is from its centre."""
        size = CELL_DEGREES[level]
        centre_lat = (row + 0.5) * size - 90.0
        corner_lat = centre_lat - math.copysign(size / 2.0, centre_lat)
        reach = distance_km(centre_lat, 0.0, np.array([corner_lat]), np.array([size / 2.0]))[0]
        return float(reach) * (1.0 + 1e-6) + 1e-9

    def _check(self, docs: BitMap, lat: float, lon: float, km: float) -> BitMap:
        ids = ids_of(docs)
        if not len(ids):
            return BitMap()
        distances = distance_km(
            lat, lon, self.lats.take(ids, ascending=True), self.lons.take(ids, ascending=True)
        )
        return to_bitmap(ids[distances <= km])
