"""``near`` through the index (antimeridian, poles, many candidates) and the GeoField
underneath, against a brute-force distance filter."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyroaring import BitMap

from index import Index, distance_km
from index.geo import EARTH_RADIUS_KM, GeoField
from index.numeric import DIRECT_CHECK_MAX
from tests.index.helpers import at, ids, put

# Padding with DIRECT_CHECK_MAX items gives more candidates than any direct-check threshold
# (numbers' and geo's, which is lower), so queries take the bucket and grid paths.

# -- near, through the index -------------------------------------------------------------


def test_near_finds_points_within_the_distance() -> None:
    index = Index()
    put(index, "downtown", numbers=at(30.2672, -97.7431))
    put(index, "round-rock", numbers=at(30.5083, -97.6789))  # ~27 km north
    put(index, "houston", numbers=at(29.7604, -95.3698))
    put(index, "no-place", kind="pro")
    assert ids(index, {"near": ["loc", 30.2672, -97.7431, 10]}) == ["downtown"]
    assert ids(index, {"near": ["loc", 30.2672, -97.7431, 30]}) == ["downtown", "round-rock"]
    assert ids(index, {"near": ["loc", 30.2672, -97.7431, 0]}) == ["downtown"]
    assert ids(index, {"not": {"near": ["loc", 30.2672, -97.7431, 30]}}) == ["houston", "no-place"]


def test_near_needs_both_coordinates_on_the_map() -> None:
    index = Index()
    put(index, "ok", numbers=at(0.0, 0.0))
    put(index, "no-lon", numbers={"loc.lat": 0.0})
    put(index, "off-map", numbers=at(90.5, 0.0))
    put(index, "bad-lon", numbers=at(0.0, -180.5))
    put(index, "nameless", numbers={".lat": 0.0, ".lon": 0.0})
    assert ids(index, {"near": ["loc", 0, 0, 20_000]}) == ["ok"]
    assert index.statistics().geo_fields == 1


def test_moving_a_point_moves_it_out_of_the_old_neighbourhood() -> None:
    index = Index()
    put(index, "a", numbers=at(30.27, -97.74))
    put(index, "a", numbers=at(39.74, -104.99))
    assert ids(index, {"near": ["loc", 30.27, -97.74, 50]}) == []
    assert ids(index, {"near": ["loc", 39.74, -104.99, 50]}) == ["a"]


def padded_index(padding: int) -> Index:
    """An index of ``padding`` points far from the points a test asks about."""
    index = Index()
    for n in range(padding):
        put(index, f"far-{n}", numbers=at(45.0, 10.0))
    return index


def antimeridian_index(padding: int = 0) -> Index:
    index = padded_index(padding)
    put(index, "east", numbers=at(0.0, 179.95))
    put(index, "west", numbers=at(0.0, -179.95))
    put(index, "minus-180", numbers=at(0.0, -180.0))
    put(index, "inland", numbers=at(0.0, 179.0))
    return index


@pytest.mark.parametrize("lon", [180.0, -180.0, 179.99, -179.99])
def test_near_the_antimeridian_finds_points_on_both_sides(lon: float) -> None:
    index = antimeridian_index()
    assert ids(index, {"near": ["loc", 0.0, lon, 15]}) == ["east", "west", "minus-180"]


def test_near_the_antimeridian_among_many_candidates_finds_points_on_both_sides() -> None:
    index = antimeridian_index(padding=DIRECT_CHECK_MAX)
    near = {"near": ["loc", 0.0, -179.99, 15]}
    assert ids(index, near) == ["east", "west", "minus-180"]


def pole_index(padding: int = 0) -> Index:
    index = padded_index(padding)
    for lon in (0.0, 90.0, 180.0, -90.0):
        put(index, f"top-{lon:g}", numbers=at(89.99, lon))
    put(index, "pole", numbers=at(90.0, 0.0))
    put(index, "lower", numbers=at(89.0, 0.0))
    return index


@pytest.mark.parametrize("padding", [0, DIRECT_CHECK_MAX])
def test_near_a_pole_finds_points_at_every_longitude(padding: int) -> None:
    index = pole_index(padding)
    tops = ["top-0", "top-90", "top-180", "top--90", "pole"]
    assert ids(index, {"near": ["loc", 90.0, 0.0, 5]}) == tops
    assert ids(index, {"near": ["loc", 89.99, 0.0, 3]}) == tops
    assert ids(index, {"near": ["loc", 90.0, 123.0, 200]}) == [*tops, "lower"]


def test_near_among_many_candidates_finds_a_point_at_lon_plus_180() -> None:
    index = padded_index(DIRECT_CHECK_MAX)
    put(index, "plus-180", numbers=at(0.0, 180.0))
    put(index, "minus-180", numbers=at(0.0, -180.0))
    assert ids(index, {"near": ["loc", 0.0, 179.99, 5]}) == ["plus-180", "minus-180"]


def test_near_a_pole_among_many_candidates_finds_points_at_other_longitudes() -> None:
    index = padded_index(DIRECT_CHECK_MAX)
    put(index, "here", numbers=at(89.95, 0.0))
    put(index, "ten-east", numbers=at(89.95, 10.0))  # 0.97 km away
    assert ids(index, {"near": ["loc", 89.95, 0.0, 1.1]}) == ["here", "ten-east"]


# -- GeoField -------------------------------------------------------------------------------


def test_a_geo_field_sets_moves_and_unsets_points() -> None:
    geo = GeoField("loc")
    geo.set(2, 30.27, -97.74)
    geo.set(2, 30.27, -97.74)
    geo.set(2000, 39.74, -104.99)  # beyond the initial arrays
    assert geo.get(2) == (30.27, -97.74)
    assert geo.get(2000) == (39.74, -104.99)
    assert geo.get(3) is None
    geo.set(2, 40.0, -105.0)
    assert list(geo.select(30.27, -97.74, 50.0)) == []
    assert list(geo.select(39.74, -104.99, 50.0)) == [2, 2000]
    geo.unset(2)
    geo.unset(2)
    assert len(geo) == 1
    assert list(geo.select(39.74, -104.99, 50.0)) == [2000]


def brute_near(
    points: dict[int, tuple[float, float]], lat: float, lon: float, km: float
) -> list[int]:
    return [
        doc
        for doc, (plat, plon) in sorted(points.items())
        if distance_km(lat, lon, np.array([plat]), np.array([plon]))[0] <= km
    ]


@settings(max_examples=20, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    centre=st.sampled_from(
        [(30.27, -97.74), (0.0, 179.8), (-60.0, 0.0), (75.0, 20.0), (86.0, 100.0), (-88.0, 0.0)]
    ),
    offset=st.tuples(st.floats(-2.0, 2.0), st.floats(-2.0, 2.0)),
    km=st.sampled_from([0.0, 1.0, 10.0, 50.0, 120.0, 400.0, 900.0, 3000.0, 12_000.0])
    | st.floats(0, 1500),
)
def test_geo_select_equals_a_brute_force_distance_filter(
    seed: int, centre: tuple[float, float], offset: tuple[float, float], km: float
) -> None:
    """Points spread over a wide cap around the centre, so circles at high latitudes reach
    their widest longitudes."""
    rng = np.random.default_rng(seed)
    geo = GeoField("loc")
    points = {}
    poleward = abs(centre[0]) + 8.0
    spread_lon = 180.0 if poleward >= 85.0 else 8.0 / math.cos(math.radians(poleward))
    for doc in range(800):
        lat = min(90.0, max(-90.0, centre[0] + rng.uniform(-8.0, 8.0)))
        lon = math.remainder(centre[1] + rng.uniform(-spread_lon, spread_lon), 360.0)
        if doc % 50 == 0:
            lon = 180.0 if doc % 100 == 0 else -180.0  # on the antimeridian exactly
        points[doc] = (lat, lon)
        geo.set(doc, lat, lon)
    lat = min(90.0, max(-90.0, centre[0] + offset[0]))
    lon = math.remainder(centre[1] + offset[1], 360.0)
    expected = brute_near(points, lat, lon, km)
    assert list(geo.select(lat, lon, km)) == expected
    assert list(geo.keep(BitMap(range(900)), lat, lon, km)) == expected
    candidates = BitMap(doc for doc in points if rng.random() < 0.6)
    assert list(geo.keep(candidates, lat, lon, km)) == [d for d in expected if d in candidates]


def destination(lat: float, lon: float, km: float, bearing: float) -> tuple[float, float]:
    """The point ``km`` from (lat, lon) on the great circle leaving at ``bearing`` (radians)."""
    phi, arc = math.radians(lat), km / EARTH_RADIUS_KM
    phi2 = math.asin(
        math.sin(phi) * math.cos(arc) + math.cos(phi) * math.sin(arc) * math.cos(bearing)
    )
    dlambda = math.atan2(
        math.sin(bearing) * math.sin(arc) * math.cos(phi),
        math.cos(arc) - math.sin(phi) * math.sin(phi2),
    )
    return math.degrees(phi2), math.remainder(lon + math.degrees(dlambda), 360.0)


@settings(max_examples=30, deadline=None, database=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    lat=st.sampled_from([0.0, 30.0, -45.0, 60.0, 75.0, -82.0, 88.0, 89.95])
    | st.floats(-90.0, 90.0),
    lon=st.sampled_from([0.0, 179.9, -179.9, 180.0]) | st.floats(-180.0, 180.0),
    km=st.sampled_from([0.5, 3.0, 20.0, 100.0, 400.0, 1500.0]) | st.floats(0.1, 3000.0),
)
def test_near_decides_points_at_the_edge_of_the_circle_exactly(
    seed: int, lat: float, lon: float, km: float
) -> None:
    """Points within a percent of the radius, at every bearing: where the circle is widest in
    longitude, and in cells that only just fit inside it."""
    rng = np.random.default_rng(seed)
    geo = GeoField("loc")
    points = {}
    for doc in range(600):
        bearing = rng.uniform(0.0, 2.0 * math.pi)
        points[doc] = destination(lat, lon, km * rng.uniform(0.99, 1.01), bearing)
        geo.set(doc, *points[doc])
    expected = brute_near(points, lat, lon, km)
    assert list(geo.select(lat, lon, km)) == expected
    candidates = BitMap(doc for doc in points if rng.random() < 0.6)
    assert list(geo.keep(candidates, lat, lon, km)) == [d for d in expected if d in candidates]


# The grid sizes of index.geo (degrees); points at cell corners are the hardest to decide.
GRID_SIZES = (8.0, 2.0, 0.5, 0.125, 0.03125)


@settings(max_examples=15, deadline=None, database=None)
@given(
    lat=st.sampled_from([0.0, 30.0, -45.0, 60.0, -75.0, 85.0]) | st.floats(-88.0, 88.0),
    lon=st.sampled_from([0.0, 179.9, -179.9]) | st.floats(-180.0, 180.0),
    km=st.sampled_from([2.0, 10.0, 60.0, 250.0, 900.0, 2000.0]) | st.floats(1.0, 2500.0),
)
def test_near_decides_points_at_the_corners_of_grid_cells_exactly(
    lat: float, lon: float, km: float
) -> None:
    """Just inside each corner of every cell about the circle's edge, for every grid size."""
    dlat = km / (math.pi * EARTH_RADIUS_KM / 180.0)
    dlon = min(180.0, dlat / max(0.01, math.cos(math.radians(min(89.0, abs(lat) + dlat)))))
    geo = GeoField("loc")
    points: dict[int, tuple[float, float]] = {}
    epsilon = 1e-7
    for size in GRID_SIZES:
        rows = range(math.floor((lat - dlat) / size) - 1, math.floor((lat + dlat) / size) + 2)
        columns = range(math.floor((lon - dlon) / size) - 1, math.floor((lon + dlon) / size) + 2)
        if len(rows) * len(columns) > 1_000:
            continue
        for row in rows:
            for column in columns:
                south, west = row * size, column * size
                for corner_lat, corner_lon in (
                    (south + epsilon, west + epsilon),
                    (south + epsilon, west + size - epsilon),
                    (south + size - epsilon, west + epsilon),
                    (south + size - epsilon, west + size - epsilon),
                ):
                    if -90.0 <= corner_lat <= 90.0:
                        doc = len(points)
                        points[doc] = (corner_lat, math.remainder(corner_lon, 360.0))
                        geo.set(doc, *points[doc])
    expected = brute_near(points, lat, lon, km)
    assert list(geo.select(lat, lon, km)) == expected
