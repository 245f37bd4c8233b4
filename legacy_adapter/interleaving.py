"""Team-draft interleaving: one list from two, engagement credited to the list it came from,
and a test of which list users prefer that teams may look at as often as they like.

The ``interleave`` migration mode (:mod:`legacy_adapter.router`) serves each
user in the experiment one list merged from the real-time and the legacy
answers by :func:`team_draft` (Radlinski, Kurup and Joachims, 2008): the two
lists take turns, the one with fewer picks first and a coin on a tie, each
adding its best item not yet taken. The decision record keeps which list
contributed each position (its *team*).

:func:`credit` then finds the engagement each served list earned: an
interaction naming the decision (``props.request_id``) is credited to it;
one that names none goes to the user's latest interleaved decision listing
that item within ``window_s`` before it. An impression is a *win* for real
time when more of its engaged items came from the real-time team, a *loss*
when more came from legacy, and a *tie* otherwise (no engagement included).

:func:`judge` tests the preference on the impressions that were not ties.
Under "no difference" the coin makes each of them a win with probability
exactly 1/2, whatever the user. The confidence sequence for that
probability (the win share) is the set of values whose beta-binomial mixture
likelihood ratio stays below ``1/alpha``: a nonnegative martingale under each
value, so by Ville's inequality the sequence covers the truth at *every*
number of impressions at once with probability ``1 - alpha``. Looking every
hour and stopping at the first verdict is therefore allowed, unlike a
fixed-sample test (Robbins 1970; Howard et al. 2021).
"""

from __future__ import annotations

import bisect
import math
import random
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

import attrs

from actors import USER, EventStore, InteractionRecorded

REALTIME: Final = "realtime"
LEGACY: Final = "legacy"
TEAMS: Final = (REALTIME, LEGACY)

#: Verdicts of :func:`judge`.
PREFER_REALTIME: Final = "real time preferred"
PREFER_LEGACY: Final = "legacy preferred"
UNDECIDED: Final = "no difference shown yet"
NO_DATA: Final = "not enough data"

#: The mixing prior of the win share is Beta(a, a): a = 50 (standard deviation 0.05) makes
#: the test most sensitive to win shares within a few points of 1/2, the effects interleaving
#: is for. Any a keeps the guarantee; it only moves where the sequence is tightest.
PRIOR: Final = 50.0
#: Interaction types that are not engagement: seeing an item, or turning it down.
NOT_ENGAGEMENT: Final = frozenset({"view", "impression", "dismiss", "skip", "decline"})
#: How long after a decision an interaction that does not name it is still credited to it.
DEFAULT_WINDOW_S: Final = 1800.0
#: An interaction may carry a time up to this much before the decision's (clocks differ).
CLOCK_SKEW_S: Final = 5.0


def team_draft(
    realtime: Sequence[str], legacy: Sequence[str], k: int, rng: random.Random
) -> tuple[list[str], list[str]]:
    """Merge two rankings into at most ``k`` items; the team (``realtime``/``legacy``) of each.

    The team with fewer picks picks next (a coin decides ties); it adds its
    highest-ranked item not already taken. When one list runs out, the other
    fills the rest.
    """
    lists = {REALTIME: realtime, LEGACY: legacy}
    cursor = {REALTIME: 0, LEGACY: 0}
    picks = {REALTIME: 0, LEGACY: 0}
    taken: set[str] = set()
    items: list[str] = []
    teams: list[str] = []

    def next_of(team: str) -> str | None:
        ranked = lists[team]
        while cursor[team] < len(ranked) and ranked[cursor[team]] in taken:
            cursor[team] += 1
        return ranked[cursor[team]] if cursor[team] < len(ranked) else None

    while len(items) < k:
        if picks[REALTIME] != picks[LEGACY]:
            first = REALTIME if picks[REALTIME] < picks[LEGACY] else LEGACY
        else:
            first = REALTIME if rng.random() < 0.5 else LEGACY
        second = LEGACY if first == REALTIME else REALTIME
        for team in (first, second):
            item = next_of(team)
            if item is not None:
                break
        else:
            break  # both lists are used up
        taken.add(item)
        items.append(item)
        teams.append(team)
        picks[team] += 1
    return items, teams


@attrs.frozen(kw_only=True)
class Impression:
    """A list as served: by whom, when, and each item with its team (the list it came from;
    any one label for a list not interleaved)."""

    request_id: str
    user: str
    ts: float
    teams: Mapping[str, str]


@attrs.frozen(kw_only=True)
class Interaction:
    """A user's interaction as the event log holds it, with the decision it names if any."""

    user: str
    item: str
    type: str
    ts: float
    #: The decision the client named (``props.request_id``), if any.
    request_id: str | None = None

    def engages(self, types: frozenset[str] | None) -> bool:
        """Whether it counts as engagement: its type is in ``types``, or (``None``) is not
        in :data:`NOT_ENGAGEMENT`."""
        return self.type not in NOT_ENGAGEMENT if types is None else self.type in types


def read_histories(store: EventStore, users: Iterable[str]) -> dict[str, list[Interaction]]:
    """Each user's interactions in ``store``'s log, in time order, with the decision each
    names in ``props.request_id``. Blocking."""
    out = {}
    for user in users:
        found = [
            Interaction(
                user=event.user,
                item=event.item,
                type=event.type,
                ts=event.ts,
                request_id=_named(event.props),
            )
            for _, event in store.read_stream(USER, user)
            if isinstance(event, InteractionRecorded)
        ]
        found.sort(key=lambda interaction: interaction.ts)
        out[user] = found
    return out


def _named(props: Mapping[str, Any]) -> str | None:
    value = props.get("request_id")
    return value if isinstance(value, str) else None


@attrs.frozen(kw_only=True)
class Credit:
    """The engaged items of one impression, by team."""

    realtime: int = 0
    legacy: int = 0

    @property
    def outcome(self) -> str:
        """``win`` (real time contributed more engaged items), ``loss`` or ``tie``."""
        if self.realtime > self.legacy:
            return "win"
        return "loss" if self.legacy > self.realtime else "tie"


def credit(
    impressions: Iterable[Impression],
    engagements: Iterable[Interaction],
    *,
    window_s: float = DEFAULT_WINDOW_S,
) -> dict[str, Credit]:
    """Each impression's engaged items by team, by request id (every impression is present).
    The items are those :func:`engaged` finds."""
    shown = list(impressions)
    found = engaged(shown, engagements, window_s=window_s)
    out = {}
    for impression in shown:
        items = found[impression.request_id]
        realtime = sum(1 for item in items if impression.teams[item] == REALTIME)
        out[impression.request_id] = Credit(realtime=realtime, legacy=len(items) - realtime)
    return out


def engaged(
    impressions: Iterable[Impression],
    engagements: Iterable[Interaction],
    *,
    window_s: float = DEFAULT_WINDOW_S,
) -> dict[str, set[str]]:
    """The items of each impression that earned engagement, by request id (every impression
    is present). ``engagements`` are the interactions that count as engagement (see
    :meth:`Interaction.engages`).

    An engagement naming a decision counts for that decision only (if it lists
    the item; a request id of a decision not among ``impressions`` counts for
    none). One naming none counts for the user's latest impression that lists
    the item, taken at most ``window_s`` before the engagement (and at most
    :data:`CLOCK_SKEW_S` after it). An item engaged with several times counts once.
    """
    by_id: dict[str, Impression] = {}
    by_user: dict[str, list[tuple[float, str]]] = {}
    for impression in impressions:
        by_id[impression.request_id] = impression
        by_user.setdefault(impression.user, []).append((impression.ts, impression.request_id))
    for timeline in by_user.values():
        timeline.sort()
    out: dict[str, set[str]] = {request_id: set() for request_id in by_id}
    for engagement in engagements:
        target = _target(engagement, by_id, by_user, window_s)
        if target is not None:
            out[target].add(engagement.item)
    return out


def _target(
    engagement: Interaction,
    by_id: Mapping[str, Impression],
    by_user: Mapping[str, list[tuple[float, str]]],
    window_s: float,
) -> str | None:
    """The request id an engagement is credited to, if any."""
    if engagement.request_id is not None:
        named = by_id.get(engagement.request_id)
        if named is not None and engagement.item in named.teams:
            return named.request_id
        return None
    timeline = by_user.get(engagement.user)
    if not timeline:
        return None
    # The latest impression taken no later than CLOCK_SKEW_S after the engagement…
    at = bisect.bisect_right(timeline, (engagement.ts + CLOCK_SKEW_S, "\U0010ffff"))
    for ts, request_id in reversed(timeline[:at]):
        if ts < engagement.ts - window_s:
            return None  # … and no earlier than the window
        if engagement.item in by_id[request_id].teams:
            return request_id
    return None


@attrs.frozen(kw_only=True)
class Preference:
    """What :func:`judge` found: counts, the preference with its interval, and a verdict."""

    impressions: int
    wins: int
    losses: int
    ties: int
    #: (wins - losses) / (wins + losses), in [-1, 1]: positive when real time is preferred.
    preference: float | None
    #: Its confidence sequence at ``confidence``, valid at every look.
    ci: tuple[float, float] | None
    confidence: float
    verdict: str

    def view(self) -> dict[str, Any]:
        """JSON-ready, as the shadow report's ``interleaving`` section."""
        return {
            "impressions": self.impressions,
            "wins": self.wins,
            "losses": self.losses,
            "ties": self.ties,
            "preference": self.preference,
            "ci": None if self.ci is None else list(self.ci),
            "confidence": self.confidence,
            "verdict": self.verdict,
        }


def judge(
    wins: int, losses: int, ties: int, *, confidence: float = 0.95, prior: float = PRIOR
) -> Preference:
    """The preference for real time from interleaving outcomes, and a verdict.

    The verdict is :data:`PREFER_REALTIME` or :data:`PREFER_LEGACY` once the
    confidence sequence excludes 0, :data:`UNDECIDED` while it holds 0, and
    :data:`NO_DATA` with no decided impression at all.

    Raises:
        ValueError: a count is negative, ``confidence`` is not in (0, 1) or ``prior`` is not
            positive.
    """
    if min(wins, losses, ties) < 0:
        raise ValueError("counts cannot be negative")
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must lie strictly between 0 and 1, got {confidence}")
    if not prior > 0.0:
        raise ValueError(f"the prior must be positive, got {prior}")
    decided = wins + losses
    impressions = decided + ties
    if decided == 0:
        return Preference(
            impressions=impressions,
            wins=wins,
            losses=losses,
            ties=ties,
            preference=None,
            ci=None,
            confidence=confidence,
            verdict=NO_DATA,
        )
    low, high = win_share_sequence(wins, losses, 1.0 - confidence, prior)
    ci = (2.0 * low - 1.0, 2.0 * high - 1.0)
    verdict = PREFER_REALTIME if ci[0] > 0.0 else PREFER_LEGACY if ci[1] < 0.0 else UNDECIDED
    return Preference(
        impressions=impressions,
        wins=wins,
        losses=losses,
        ties=ties,
        preference=(wins - losses) / decided,
        ci=ci,
        confidence=confidence,
        verdict=verdict,
    )


def log_evidence(wins: int, losses: int, share: float, prior: float = PRIOR) -> float:
    """log of the beta-binomial mixture likelihood ratio against win share ``share`` in (0, 1).

    A nonnegative martingale with mean 1 under that share: evidence against it
    exceeds ``log(1/alpha)`` with probability at most ``alpha``, ever.
    """
    mixture = _log_beta(prior + wins, prior + losses) - _log_beta(prior, prior)
    return mixture - wins * math.log(share) - losses * math.log1p(-share)


def win_share_sequence(
    wins: int, losses: int, alpha: float, prior: float = PRIOR
) -> tuple[float, float]:
    """The win shares not rejected at level ``alpha`` after these outcomes: an interval.

    The evidence is convex in the share and at most 0 at ``wins / (wins + losses)``
    (a mixture of likelihoods is at most the largest), so each end is found by
    bisection between that share and 0 or 1.
    """
    bar = math.log(1.0 / alpha)
    observed = wins / (wins + losses)
    return (
        0.0 if wins == 0 else _edge(wins, losses, bar, prior, outside=0.0, inside=observed),
        1.0 if losses == 0 else _edge(wins, losses, bar, prior, outside=1.0, inside=observed),
    )


def _edge(
    wins: int, losses: int, bar: float, prior: float, *, outside: float, inside: float
) -> float:
    """Where the evidence crosses ``bar`` between ``outside`` (0 or 1) and ``inside``."""
    for _ in range(60):
        middle = (outside + inside) / 2.0
        if middle in (0.0, 1.0) or log_evidence(wins, losses, middle, prior) >= bar:
            outside = middle
        else:
            inside = middle
    return (outside + inside) / 2.0


def _log_beta(a: float, b: float) -> float:
    return math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)


#: A user's activity when served: interactions before the decision (the replay's buckets).
ACTIVITY: Final = ("<10", "10-50", ">50")


def activity_bucket(events_before: int) -> str:
    """The activity bucket of a user with ``events_before`` interactions."""
    if events_before < 10:
        return "<10"
    return "10-50" if events_before <= 50 else ">50"


def summarise(
    impressions: Sequence[Impression],
    histories: Mapping[str, Sequence[Interaction]],
    *,
    window_s: float = DEFAULT_WINDOW_S,
    engagement_types: frozenset[str] | None = None,
    confidence: float = 0.95,
) -> dict[str, Any]:
    """One surface's interleaving results: :meth:`Preference.view` overall, ``by_activity``
    (the same per activity bucket of the user when served) and the rules used.

    ``histories`` holds each user's interactions in time order (users missing
    have none); ``engagement_types`` as in :meth:`Interaction.engages`.
    """
    users = {impression.user for impression in impressions}
    times = {user: [interaction.ts for interaction in histories.get(user, ())] for user in users}
    engagements = [
        interaction
        for user in users
        for interaction in histories.get(user, ())
        if interaction.engages(engagement_types)
    ]
    credits = credit(impressions, engagements, window_s=window_s)
    overall: dict[str, int] = {"win": 0, "loss": 0, "tie": 0}
    by_bucket = {bucket: dict(overall) for bucket in ACTIVITY}
    for impression in impressions:
        outcome = credits[impression.request_id].outcome
        before = bisect.bisect_left(times[impression.user], impression.ts)
        overall[outcome] += 1
        by_bucket[activity_bucket(before)][outcome] += 1

    def judged(counts: Mapping[str, int]) -> dict[str, Any]:
        return judge(counts["win"], counts["loss"], counts["tie"], confidence=confidence).view()

    return {
        **judged(overall),
        "by_activity": {bucket: judged(counts) for bucket, counts in by_bucket.items()},
        "window_s": window_s,
        "engagement_types": None if engagement_types is None else sorted(engagement_types),
    }
