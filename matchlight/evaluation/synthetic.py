"""A synthetic home-services marketplace, deterministic by seed, in time order.

Consumers browse and hire pros. What makes it look like real traffic:

- a long tail: most consumers have a handful of events, a few have hundreds
  (log-normal activity);
- tastes: each consumer wants one to three service categories, mostly in
  their own city, and has a style the pros they like share (a latent factor
  that only co-occurrence reveals, not the pros' terms);
- sessions: a consumer's events come in bursts about one need (a category),
  so the last few events say a lot about the next;
- drift: a third of consumers switch their main need halfway through;
- growth: a fifth of the pros join during the period (upserted when they do);
- quality: pros differ in how often they are chosen (Zipf-like);
- two sides: consumers post jobs, and the pros near each job accept the kinds
  they do and decline the others (pros are users too, under their own id).

:func:`generate` returns the item upserts and interaction events merged in
time order, as plain maps in the RPC contract's shape.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from typing import Any, Final

import attrs

CATEGORIES: Final = (
    "gardening",
    "plumbing",
    "electrical",
    "cleaning",
    "painting",
    "moving",
    "roofing",
    "handyman",
    "hvac",
    "pest_control",
    "flooring",
    "locksmith",
)
CITIES: Final = ("austin", "denver", "boston", "seattle", "miami", "chicago")
CITY_COORDS: Final = {
    "austin": (30.27, -97.74),
    "denver": (39.74, -104.99),
    "boston": (42.36, -71.06),
    "seattle": (47.61, -122.33),
    "miami": (25.76, -80.19),
    "chicago": (41.88, -87.63),
}
STYLES: Final = 6
DAY: Final = 86_400.0
#: Event types of a consumer looking at a pro, and how likely each is for a good match.
TYPE_ODDS: Final = (("view", 0.55), ("click", 0.15), ("like", 0.14), ("save", 0.06), ("hire", 0.04))
POSITIVE: Final = frozenset({"like", "save", "hire"})


@attrs.frozen(kw_only=True)
class MarketplaceConfig:
    consumers: int = 3000
    pros: int = 1500
    #: Jobs posted over the period; pros near each accept or decline it.
    jobs: int = 800
    days: float = 60.0
    #: Mean and spread of log(events per consumer).
    activity_mu: float = 1.6
    activity_sigma: float = 1.1
    max_events_per_consumer: int = 400
    start_ts: float = 1_767_225_600.0  # 2026-01-01T00:00:00Z
    seed: int = 7


@attrs.frozen(kw_only=True)
class Marketplace:
    """Item upserts and events in time order: ``("item", map)`` or ``("event", map)``."""

    records: list[tuple[str, dict[str, Any]]]
    config: MarketplaceConfig

    def events(self) -> Iterator[dict[str, Any]]:
        return (r for kind, r in self.records if kind == "event")

    def items(self) -> Iterator[dict[str, Any]]:
        return (r for kind, r in self.records if kind == "item")


@attrs.frozen
class Pro:
    """A pro as the generator knows it: ``style`` and ``quality`` are hidden from the records
    (only co-occurrence and choice frequency reveal them)."""

    id: str
    category: str
    city: str
    style: int
    quality: float
    joined: float


@attrs.define
class _Timeline:
    """Records as they are made, each with its time and its place in the making (for ties)."""

    entries: list[tuple[float, int, str, dict[str, Any]]] = attrs.field(factory=list)

    def add_item(self, ts: float, body: dict[str, Any]) -> None:
        self.entries.append((ts, len(self.entries), "item", body))

    def add_event(self, ts: float, kind: str, user: str, item: str) -> None:
        """An event of type ``kind``; its id is ``ev-N``, N its place in the making."""
        seq = len(self.entries)
        body = {"id": f"ev-{seq}", "type": kind, "user": user, "item": item, "ts": ts}
        self.entries.append((ts, seq, "event", body))

    def in_time_order(self) -> list[tuple[str, dict[str, Any]]]:
        """The records by time; at the same time, in the order they were made."""
        ordered = sorted(self.entries, key=lambda r: (r[0], r[1]))
        return [(kind, body) for _, _, kind, body in ordered]


def generate(config: MarketplaceConfig | None = None) -> Marketplace:
    """The marketplace's records in time order. Deterministic for a config.

    Made in stages, each drawing from the same random stream in turn (so the
    order of the stages is part of what a seed means): the pros, their item
    records, each consumer's events, then the jobs (on a stream of their own).
    """
    config = config or MarketplaceConfig()
    rng = random.Random(config.seed)
    pros = _pros(config, rng)
    timeline = _Timeline()
    for pro in pros:
        timeline.add_item(pro.joined, _pro_item(pro, rng))
    by_need: dict[tuple[str, str], list[Pro]] = {}
    for pro in pros:
        by_need.setdefault((pro.category, pro.city), []).append(pro)
    for c in range(config.consumers):
        _consumer_events(config, rng, f"consumer-{c}", by_need, timeline)
    _jobs(config, pros, timeline)
    return Marketplace(records=timeline.in_time_order(), config=config)


def pros_of(config: MarketplaceConfig | None = None) -> list[Pro]:
    """The pros of the marketplace ``config`` makes (the first stage of :func:`generate`)."""
    config = config or MarketplaceConfig()
    return _pros(config, random.Random(config.seed))


def _pros(config: MarketplaceConfig, rng: random.Random) -> list[Pro]:
    """The pros: a category, a city, a style, a Zipf-like quality; a fifth join later."""
    end = config.start_ts + config.days * DAY
    pros = []
    for n in range(config.pros):
        joins_later = rng.random() < 0.2
        pros.append(
            Pro(
                id=f"pro-{n}",
                category=rng.choice(CATEGORIES),
                city=rng.choice(CITIES),
                style=rng.randrange(STYLES),
                quality=1.0 / (1 + rng.paretovariate(1.5)),
                joined=rng.uniform(config.start_ts, end) if joins_later else config.start_ts,
            )
        )
    return pros


def _pro_item(pro: Pro, rng: random.Random) -> dict[str, Any]:
    """A pro's item upsert: its terms, a rate, and a location near its city."""
    lat, lon = CITY_COORDS[pro.city]
    return {
        "id": pro.id,
        "kind": "pro",
        "terms": {"category": pro.category, "city": pro.city},
        "numbers": {
            "rate": float(rng.randrange(40, 200)),
            "loc.lat": lat + rng.uniform(-0.3, 0.3),
            "loc.lon": lon + rng.uniform(-0.3, 0.3),
        },
    }


def _consumer_events(
    config: MarketplaceConfig,
    rng: random.Random,
    user: str,
    by_need: dict[tuple[str, str], list[Pro]],
    timeline: _Timeline,
) -> None:
    """One consumer's events: sessions about one need at a time, mostly in their own city,
    with the pros of their style chosen more often; a third drift to another need halfway."""
    end = config.start_ts + config.days * DAY
    city = rng.choice(CITIES)
    style = rng.randrange(STYLES)
    needs = rng.sample(CATEGORIES, rng.choice((1, 1, 2, 2, 3)))
    drifted = rng.sample(CATEGORIES, 1)[0]
    drifts = rng.random() < 0.33
    count = min(
        config.max_events_per_consumer,
        max(1, int(math.exp(rng.gauss(config.activity_mu, config.activity_sigma)))),
    )
    t = rng.uniform(config.start_ts, end - DAY)
    span = rng.uniform(0.5, 1.0) * (end - t)
    step = span / count
    need = rng.choice(needs)
    for e in range(count):
        if drifts and e == count // 2:
            needs = [drifted]
        if rng.random() < 0.25:  # a new session, maybe another need
            need = rng.choice(needs)
            t += rng.expovariate(1.0 / step) * 2
        else:
            t += rng.expovariate(1.0 / 120.0)  # seconds apart within a session
        if t > end:
            break  # the period is over
        here = city if rng.random() < 0.85 else rng.choice(CITIES)
        pool = [p for p in by_need.get((need, here), ()) if p.joined <= t]
        if not pool:
            continue
        weights = [p.quality * (4.0 if p.style == style else 1.0) for p in pool]
        pro = rng.choices(pool, weights=weights, k=1)[0]
        timeline.add_event(t, _event_type(rng, good=pro.style == style), user, pro.id)


def _jobs(config: MarketplaceConfig, pros: list[Pro], timeline: _Timeline) -> None:
    """Jobs posted over the period, and the pros who answer them.

    A pro takes jobs of its own category and of one other it also does; it
    declines the rest most of the time. Pros act as users under their own id
    (``accept``/``decline`` events on job items): the two-sided surfaces learn
    who is willing from them. Its own random stream, so the consumers' events
    are the same whatever the number of jobs.
    """
    rng = random.Random(config.seed * 7919 + 1)
    also = {pro.id: rng.choice(CATEGORIES) for pro in pros}
    by_city: dict[str, list[Pro]] = {}
    for pro in pros:
        by_city.setdefault(pro.city, []).append(pro)
    end = config.start_ts + config.days * DAY
    for j in range(config.jobs):
        ts = rng.uniform(config.start_ts, end)
        category, city = rng.choice(CATEGORIES), rng.choice(CITIES)
        job = f"job-{j}"
        timeline.add_item(
            ts, {"id": job, "kind": "job", "terms": {"category": category, "city": city}}
        )
        nearby = [p for p in by_city.get(city, ()) if p.joined <= ts]
        for pro in rng.sample(nearby, min(len(nearby), 6)):
            willing = category in (pro.category, also[pro.id])
            kind = (
                "accept" if (willing and rng.random() < 0.9) or rng.random() < 0.05 else "decline"
            )
            ts += rng.expovariate(1 / 600.0)
            timeline.add_event(ts, kind, pro.id, job)


def _event_type(rng: random.Random, *, good: bool) -> str:
    if not good and rng.random() < 0.12:
        return "dismiss"
    roll = rng.random() * (1.0 if good else 0.8)  # poor matches rarely end in a like or hire
    for kind, odds in TYPE_ODDS:
        roll -= odds
        if roll < 0:
            return kind
    return "view"
