"""The workload of ``matchlight bench index``: the synthetic catalogue and the query instances.

A synthetic marketplace catalogue, deterministic for a ``--seed``:
``--items`` pros (``item-0``, ``item-1``, …) with one Zipf-distributed topic
(of 200) and city (of 100, each with a centre; an item's location is
jittered up to 30 km from its city's centre), 1 to 3 Zipf-distributed tags (of
300), a price (unique: no ties when sorting by it) and a heavy-tailed like
counter (0 to 5,000, mostly 0). Every engine is loaded with the same catalogue,
in item order; :meth:`Catalogue.terms` and :meth:`Catalogue.numbers` are an
item's fields as Matchlight stores them.

Six query classes, each with ``--queries`` random instances mixing popular and
rare values (see :data:`CLASSES`). One query is what ``search`` answers: the
count of every match and the ids of the first :data:`LIMIT` (in item order, or
by price for the sorted class). A :class:`Case` carries both the query as a
client sends it (``wire``) and its values, for the peers that speak SQL or
Tantivy's query API.
"""

from __future__ import annotations

import json
import math
import random
import sys
from collections.abc import Callable
from typing import Any, Final

import attrs

from matchlight.bench.harness import zipf_cum

LIMIT: Final = 100
TOPICS: Final = 200
CITIES: Final = 100
TAGS: Final = 300
NEAR_KM: Final = 25.0
JITTER_KM: Final = 30.0
KM_PER_DEGREE_LAT: Final = 111.0  # a little under the true 111.19: boxes err on the wide side
#: The ``kind`` of every item.
KIND: Final = "pro"

#: Query classes: name -> what one instance asks.
CLASSES: Final = {
    "term": "topic = T",
    "two_terms": "topic = T and city = C",
    "term_likes": "city = C and like >= N (live counter)",
    "price_sorted": "price in [a, b], top 100 by price desc",
    "any_not": "(tag A or tag B) and not city = C",
    "geo": "within 25 km of a city centre and topic = T",
}

Result = tuple[int, list[str]]
Runner = Callable[["Case"], Result]


def note(message: str) -> None:
    """Progress on stderr (stdout carries the report)."""
    print(message, file=sys.stderr, flush=True)


class BenchError(Exception):
    """Engines disagree, or a peer cannot be set up; the message says which and how."""


# -- the catalogue ----------------------------------------------------------------------------


@attrs.define(kw_only=True)
class Catalogue:
    """The synthetic items, as columns indexed by ``ord`` (the item's position)."""

    names: list[str]
    topics: list[str]
    cities: list[str]
    tags: list[tuple[str, ...]]
    prices: list[float]
    lats: list[float]
    lons: list[float]
    likes: list[int]
    #: City name -> (lat, lon) of its centre.
    centres: dict[str, tuple[float, float]]
    #: Cumulative Zipf weights over the topic, city and tag vocabularies.
    zipf: dict[str, list[float]]

    def __len__(self) -> int:
        return len(self.names)

    def terms(self, ord_: int) -> dict[str, tuple[str, ...]]:
        """The item's term fields as Matchlight stores them."""
        return {
            "topic": (self.topics[ord_],),
            "city": (self.cities[ord_],),
            "tags": self.tags[ord_],
        }

    def numbers(self, ord_: int) -> dict[str, float]:
        """The item's numeric fields as Matchlight stores them (``loc`` is a geo point)."""
        return {"price": self.prices[ord_], "loc.lat": self.lats[ord_], "loc.lon": self.lons[ord_]}


def _jitter(rng: random.Random, lat: float, lon: float, km: float) -> tuple[float, float]:
    """A point uniformly spread over the disc of radius ``km`` around (lat, lon)."""
    r = km * math.sqrt(rng.random())
    bearing = rng.uniform(0.0, 2.0 * math.pi)
    dlat = r * math.cos(bearing) / 111.195
    dlon = r * math.sin(bearing) / (111.195 * math.cos(math.radians(lat)))
    return lat + dlat, lon + dlon


def make_catalogue(items: int, seed: int) -> Catalogue:
    """``items`` synthetic pros; the same ``seed`` gives the same catalogue."""
    rng = random.Random(f"catalogue-{seed}")
    zipf = {
        "topic": zipf_cum(TOPICS, 1.0),
        "city": zipf_cum(CITIES, 1.0),
        "tag": zipf_cum(TAGS, 1.0),
    }
    city_names = [f"city{k:03d}" for k in range(CITIES)]
    centres = {c: (rng.uniform(26.0, 48.0), rng.uniform(-122.0, -71.0)) for c in city_names}
    topic_pick = rng.choices(range(TOPICS), cum_weights=zipf["topic"], k=items)
    city_pick = rng.choices(range(CITIES), cum_weights=zipf["city"], k=items)
    cat = Catalogue(
        names=[f"item-{i}" for i in range(items)],
        topics=[f"topic{k:03d}" for k in topic_pick],
        cities=[city_names[k] for k in city_pick],
        tags=[],
        prices=[],
        lats=[],
        lons=[],
        likes=[],
        centres=centres,
        zipf=zipf,
    )
    for i in range(items):
        wanted = rng.randint(1, 3)
        chosen: set[int] = set()
        while len(chosen) < wanted:
            chosen.add(rng.choices(range(TAGS), cum_weights=zipf["tag"])[0])
        cat.tags.append(tuple(sorted(f"tag{k:03d}" for k in chosen)))
        # Whole cents plus a unique part below a tenth of a cent: no two prices tie.
        cents = min(500_000, max(1_000, round(math.exp(rng.gauss(math.log(150.0), 0.8)) * 100)))
        cat.prices.append(cents / 100.0 + i * 1e-9)
        lat, lon = _jitter(rng, *centres[cat.cities[i]], JITTER_KM)
        cat.lats.append(lat)
        cat.lons.append(lon)
        liked = rng.random() >= 0.45
        cat.likes.append(min(5_000, int(rng.paretovariate(0.7))) if liked else 0)
    return cat


# -- the queries ------------------------------------------------------------------------------


@attrs.frozen(kw_only=True)
class Case:
    """One query instance; fields a class does not use keep their defaults."""

    kind: str
    topic: str = ""
    city: str = ""
    tags: tuple[str, ...] = ()
    min_likes: int = 0
    lo: float = 0.0
    hi: float = 0.0
    lat: float = 0.0
    lon: float = 0.0
    km: float = 0.0
    #: The query as a client sends it (msgpack-RPC ``search`` ``filter``).
    wire: Any = None
    #: (lat_lo, lat_hi, lon_lo, lon_hi): a box holding every point within ``km``.
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def describe(self) -> str:
        return f"{self.kind} {json.dumps(self.wire)}"


def _box(lat: float, lon: float, km: float) -> tuple[float, float, float, float]:
    dlat = km / KM_PER_DEGREE_LAT * 1.01
    dlon = dlat / math.cos(math.radians(min(89.0, abs(lat) + dlat)))
    return lat - dlat, lat + dlat, lon - dlon, lon + dlon


def make_cases(cat: Catalogue, per_class: int, seed: int) -> dict[str, list[Case]]:
    """``per_class`` instances of each class; half the values Zipf-drawn, half uniform."""
    draw = _Draw(cat=cat, rng=random.Random(f"queries-{seed}"))
    prices = sorted(cat.prices)
    cases: dict[str, list[Case]] = {kind: [] for kind in CLASSES}
    for _ in range(per_class):
        # One of each class in turn: the order of the draws is what a seed reproduces.
        cases["term"].append(_term_case(draw))
        cases["two_terms"].append(_two_terms_case(draw))
        cases["term_likes"].append(_term_likes_case(draw))
        cases["price_sorted"].append(_price_sorted_case(draw.rng, prices))
        cases["any_not"].append(_any_not_case(draw))
        cases["geo"].append(_geo_case(draw))
    return cases


@attrs.frozen(kw_only=True)
class _Draw:
    """Draws query values: half the time by the catalogue's Zipf weights, half uniformly."""

    cat: Catalogue
    rng: random.Random

    def pick(self, vocabulary: str, n: int, fmt: str) -> str:
        if self.rng.random() < 0.5:
            k = self.rng.choices(range(n), cum_weights=self.cat.zipf[vocabulary])[0]
        else:
            k = self.rng.randrange(n)
        return fmt.format(k)

    def topic(self) -> str:
        return self.pick("topic", TOPICS, "topic{:03d}")

    def city(self) -> str:
        return self.pick("city", CITIES, "city{:03d}")

    def tag(self) -> str:
        return self.pick("tag", TAGS, "tag{:03d}")


def _term_case(draw: _Draw) -> Case:
    t = draw.topic()
    return Case(kind="term", topic=t, wire={"term": ["topic", t]})


def _two_terms_case(draw: _Draw) -> Case:
    t, c = draw.topic(), draw.city()
    return Case(
        kind="two_terms",
        topic=t,
        city=c,
        wire={"all": [{"term": ["topic", t]}, {"term": ["city", c]}]},
    )


def _term_likes_case(draw: _Draw) -> Case:
    c, n = draw.city(), draw.rng.choice((10, 50, 50, 50, 200))
    return Case(
        kind="term_likes",
        city=c,
        min_likes=n,
        wire={"all": [{"term": ["city", c]}, {"range": ["like", n, None]}]},
    )


def _price_sorted_case(rng: random.Random, prices: list[float]) -> Case:
    """A price range from a few items to about half the catalogue, bounds in whole cents."""
    width = max(1, round(len(prices) * math.exp(rng.uniform(math.log(0.0005), math.log(0.5)))))
    start = rng.randrange(max(1, len(prices) - width))
    lo = round(prices[start], 2)
    hi = round(prices[min(len(prices) - 1, start + width)], 2)
    lo, hi = min(lo, hi), max(lo, hi)
    return Case(kind="price_sorted", lo=lo, hi=hi, wire={"range": ["price", lo, hi]})


def _any_not_case(draw: _Draw) -> Case:
    a = draw.tag()
    b = a
    while b == a:
        b = draw.tag()
    c = draw.city()
    return Case(
        kind="any_not",
        tags=(a, b),
        city=c,
        wire={
            "all": [
                {"any": [{"term": ["tags", a]}, {"term": ["tags", b]}]},
                {"not": {"term": ["city", c]}},
            ]
        },
    )


def _geo_case(draw: _Draw) -> Case:
    t = draw.topic()
    lat, lon = draw.cat.centres[draw.city()]
    return Case(
        kind="geo",
        topic=t,
        lat=lat,
        lon=lon,
        km=NEAR_KM,
        box=_box(lat, lon, NEAR_KM),
        wire={"all": [{"term": ["topic", t]}, {"near": ["loc", lat, lon, NEAR_KM]}]},
    )
