"""How many requests interleaving needs for a verdict, against a 50/50 A/B split, when the
users' preference between two rankers is known.

The simulation runs on the synthetic marketplace (:mod:`matchlight.evaluation.synthetic`):
its pros, with their hidden style and quality, and consumers drawn as the
generator draws them (a city, a style, a need). A request asks for ``k`` pros
for the consumer's need in their city. The consumer scans the list top down
(the cascade model of Craswell et al., 2008): at each position they give up
with probability ``1 - PATIENCE``, else hire the pro with its *attraction*,
``ATTRACTION * quality * (4 if the styles match, else 1)`` (the generator's
own odds of choosing a pro), and stop there. So each request ends in one hire
or none, and which ranking earns more hires is known exactly
(:func:`hire_rate`).

Two rankers per scenario:

- ``legacy``: the batch ranking, by quality alone (it never saw the user's style);
- ``real time``: by quality and the style its live state reveals; for every user
  (``real time knows every style``), one user in four (``... one in four``), or
  a ranking in random order (``real time is broken``);
- ``no difference``: two rankings by quality times independent noise, the two
  names drawn by a coin per request, so neither can be better.

Both methods get the same requests and the same stopping rule: the
beta-binomial mixture sequential test of :mod:`legacy_adapter.interleaving`
at ``alpha``, checked after every request. Interleaving serves the team-draft
merge and tests the team of each hire; A/B serves one ranking, by a fair coin
per request (more favourable to A/B than a split by user, whose requests are
correlated), and tests which arm each hiring request had: under equal hire
rates that arm is a fair coin too, so the same test is exact for both.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable, Sequence
from typing import Any, Final

import attrs

from legacy_adapter.interleaving import LEGACY, REALTIME, log_evidence, team_draft
from matchlight.evaluation.synthetic import CATEGORIES, CITIES, STYLES, MarketplaceConfig, pros_of

K: Final = 10
#: The chance of looking at the next position of a list.
PATIENCE: Final = 0.85
#: Scales the generator's choice weights into the chance of hiring an examined pro.
ATTRACTION: Final = 0.05
CONSUMERS: Final = 3000
SCENARIOS: Final = (
    "real time knows every style",
    "real time knows one style in four",
    "real time is broken",
    "no difference",
)


@attrs.frozen(kw_only=True)
class _Consumer:
    #: Each pro of their need and city with its chance of being hired when examined.
    attraction: dict[str, float]
    legacy: tuple[str, ...]
    realtime: tuple[str, ...]


@attrs.frozen(kw_only=True)
class Outcome:
    """One run of one method: the verdict (a team, or None within the budget) and when."""

    verdict: str | None
    requests: int


@attrs.frozen(kw_only=True)
class MethodResult:
    method: str
    runs: int
    right: int
    wrong: int
    undecided: int
    #: Requests to a verdict, over the runs that reached one.
    median_requests: float | None
    p90_requests: float | None

    def view(self) -> dict[str, Any]:
        return attrs.asdict(self)


@attrs.frozen(kw_only=True)
class ScenarioResult:
    scenario: str
    #: Hires per request of each ranker over the consumers, exactly.
    hire_rates: dict[str, float]
    #: The team the users prefer, or None when they have no preference.
    truth: str | None
    budget: int
    interleaving: MethodResult
    ab: MethodResult

    def view(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "hire_rates": self.hire_rates,
            "truth": self.truth,
            "budget": self.budget,
            "interleaving": self.interleaving.view(),
            "ab": self.ab.view(),
        }


def consumers(scenario: str, *, count: int = CONSUMERS, seed: int = 1) -> list[_Consumer]:
    """The simulated consumers of a scenario, each with both rankings of their pool.

    Raises:
        ValueError: an unknown scenario.
    """
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (one of {', '.join(SCENARIOS)})")
    rng = random.Random(seed)
    by_need: dict[tuple[str, str], list[Any]] = {}
    for pro in pros_of(MarketplaceConfig(seed=seed)):
        by_need.setdefault((pro.category, pro.city), []).append(pro)
    out: list[_Consumer] = []
    while len(out) < count:
        city, style, need = rng.choice(CITIES), rng.randrange(STYLES), rng.choice(CATEGORIES)
        pool = by_need.get((need, city), [])
        if len(pool) < K:
            continue
        fit = {p.id: p.quality * (4.0 if p.style == style else 1.0) for p in pool}
        quality = {p.id: p.quality for p in pool}
        if scenario == "no difference":
            legacy = _by(quality, lambda: rng.lognormvariate(0.0, 0.5))
            realtime = _by(quality, lambda: rng.lognormvariate(0.0, 0.5))
        else:
            legacy = _by(quality)
            knows = scenario == "real time knows every style" or (
                scenario == "real time knows one style in four" and rng.random() < 0.25
            )
            if scenario == "real time is broken":
                realtime = tuple(rng.sample(sorted(fit), K))
            else:
                realtime = _by(fit) if knows else legacy
        out.append(
            _Consumer(
                attraction={i: min(0.95, ATTRACTION * f) for i, f in fit.items()},
                legacy=legacy,
                realtime=realtime,
            )
        )
    return out


def _by(scores: dict[str, float], noise: Callable[[], float] | None = None) -> tuple[str, ...]:
    """The top K ids by score (times a noise draw per id, if given); ties by id."""
    noisy = {i: s * (noise() if noise else 1.0) for i, s in sorted(scores.items())}
    return tuple(sorted(noisy, key=lambda i: (-noisy[i], i))[:K])


def hire_rate(people: Sequence[_Consumer], team: str) -> float:
    """Hires per request of ``team``'s rankings, exactly, under the cascade model."""
    total = 0.0
    for consumer in people:
        ranking = consumer.realtime if team == REALTIME else consumer.legacy
        reach, hired = 1.0, 0.0
        for item in ranking:
            reach *= PATIENCE
            hired += reach * consumer.attraction[item]
            reach *= 1.0 - consumer.attraction[item]
        total += hired
    return total / len(people)


def hire(ranking: Sequence[str], attraction: dict[str, float], rng: random.Random) -> int:
    """The position hired from, or -1: the cascade model."""
    for position, item in enumerate(ranking):
        if rng.random() >= PATIENCE:
            return -1
        if rng.random() < attraction[item]:
            return position
    return -1


def _lists(consumer: _Consumer, scenario: str, rng: random.Random) -> tuple[Sequence[str], ...]:
    """The (real-time, legacy) rankings served; under no difference the names are a coin's."""
    if scenario == "no difference" and rng.random() < 0.5:
        return consumer.legacy, consumer.realtime
    return consumer.realtime, consumer.legacy


class _Test:
    """The sequential test on win/loss outcomes, checked after each one."""

    def __init__(self, alpha: float) -> None:
        self.bar = math.log(1.0 / alpha)
        self.wins = self.losses = 0

    def add(self, win: bool) -> str | None:
        if win:
            self.wins += 1
        else:
            self.losses += 1
        if log_evidence(self.wins, self.losses, 0.5) < self.bar:
            return None
        return REALTIME if self.wins > self.losses else LEGACY


#: Serves one request of a consumer under a scenario: whether its hire (if any) goes to the
#: real-time side (a team for interleaving, an arm for A/B); None without a hire.
Serve = Callable[[_Consumer, str, random.Random], bool | None]


def interleaved(consumer: _Consumer, scenario: str, rng: random.Random) -> bool | None:
    """A team-draft list of both rankings; the team of the pro hired."""
    realtime, legacy = _lists(consumer, scenario, rng)
    items, teams = team_draft(realtime, legacy, K, rng)
    position = hire(items, consumer.attraction, rng)
    return None if position < 0 else teams[position] == REALTIME


def split(consumer: _Consumer, scenario: str, rng: random.Random) -> bool | None:
    """One ranking, by a coin (a 50/50 A/B split by request); the arm of a hire."""
    realtime, legacy = _lists(consumer, scenario, rng)
    arm = REALTIME if rng.random() < 0.5 else LEGACY
    position = hire(realtime if arm == REALTIME else legacy, consumer.attraction, rng)
    return None if position < 0 else arm == REALTIME


def run(
    people: Sequence[_Consumer],
    scenario: str,
    serve: Serve,
    *,
    budget: int,
    alpha: float,
    rng: random.Random,
) -> Outcome:
    """Serve random consumers' requests until the test decides on the hires or ``budget``
    requests have been served."""
    test = _Test(alpha)
    for n in range(1, budget + 1):
        consumer = people[rng.randrange(len(people))]
        won = serve(consumer, scenario, rng)
        if won is not None and (verdict := test.add(won)):
            return Outcome(verdict=verdict, requests=n)
    return Outcome(verdict=None, requests=budget)


def _summary(method: str, outcomes: Sequence[Outcome], truth: str | None) -> MethodResult:
    decided = sorted(o.requests for o in outcomes if o.verdict is not None)
    right = sum(1 for o in outcomes if o.verdict is not None and o.verdict == truth)
    return MethodResult(
        method=method,
        runs=len(outcomes),
        right=right,
        wrong=len(decided) - right,
        undecided=len(outcomes) - len(decided),
        median_requests=statistics.median(decided) if decided else None,
        p90_requests=decided[min(len(decided) - 1, int(0.9 * len(decided)))] if decided else None,
    )


def study(
    scenario: str,
    *,
    runs: int,
    budget: int,
    alpha: float = 0.05,
    seed: int = 1,
    progress: Callable[[int], None] | None = None,
) -> ScenarioResult:
    """Run both methods ``runs`` times on one scenario (each run its own random stream).

    Raises:
        ValueError: an unknown scenario, or ``runs`` or ``budget`` below 1.
    """
    if runs < 1 or budget < 1:
        raise ValueError("runs and budget must be at least 1")
    people = consumers(scenario, seed=seed)
    rates = {team: hire_rate(people, team) for team in (REALTIME, LEGACY)}
    truth = None
    if scenario != "no difference":
        truth = REALTIME if rates[REALTIME] > rates[LEGACY] else LEGACY
    else:
        rates = dict.fromkeys(rates, (rates[REALTIME] + rates[LEGACY]) / 2)  # the coin
    by_team: list[Outcome] = []
    by_arm: list[Outcome] = []
    for n in range(runs):
        for serve, outcomes, stream in ((interleaved, by_team, 1), (split, by_arm, 2)):
            rng = _rng(seed, n, stream)
            outcomes.append(run(people, scenario, serve, budget=budget, alpha=alpha, rng=rng))
        if progress is not None:
            progress(n + 1)
    return ScenarioResult(
        scenario=scenario,
        hire_rates=rates,
        truth=truth,
        budget=budget,
        interleaving=_summary("interleaving", by_team, truth),
        ab=_summary("a/b 50/50", by_arm, truth),
    )


def _rng(seed: int, run: int, method: int) -> random.Random:
    return random.Random(f"{seed}/{run}/{method}")
