"""How a candidate surfaces config would have done on the decisions the server logged.

:func:`evaluate_candidate` walks the decision log (``DATA/decisions``) in log
order beside a :class:`ranker.replay.Replay` of the event log. At each
decision's position it rebuilds the request's candidates and asks both the
candidate config and the logged one for each item's probability at each slot
(:meth:`~ranker.replay.Replay.slot_probabilities`). A slot's reward is 1 when
the user engaged with its item after the decision: by an event naming the
decision in ``props.request_id``, or within ``window_s``
(:func:`legacy_adapter.interleaving.engaged`). The slates then go to the
item-position estimators of :mod:`matchlight.evaluation.off_policy`: IPS,
self-normalised IPS and doubly robust (its reward model: each slot's mean
engagement in the log), each with a confidence interval and effective sample
size, refused with the reason where the log cannot support the candidate.

Which decisions count: those the user was shown as ranked (not a shadow
comparison, not one side of an interleaved list), on the surface asked for,
recorded with what a replay needs. A surface that explores is left out: its
propensities are estimated, not exact. A surface without a ``stochastic``
table logs probability 1 for each slot's item, so it supports only candidates
that would have served the same lists; a stochastic one
(``[surfaces.NAME.stochastic]``) supports every candidate that keeps to its
pool.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any, Final

import attrs
import numpy as np

from actors import EventStore, LmdbEventStore
from legacy_adapter.interleaving import (
    DEFAULT_WINDOW_S,
    Impression,
    Interaction,
    engaged,
    read_histories,
)
from matchlight.evaluation.off_policy import (
    ESTIMATORS,
    Estimate,
    LoggedSlate,
    estimate,
    slate_rounds,
)
from ranker import load_model, load_surfaces
from ranker.configs import config_at
from ranker.decisions import iter_records
from ranker.model import Model
from ranker.policy import Surfaces
from ranker.replay import REPLAY_FIELDS, Replay, request_of
from ranker.serving import ServingModel

#: Decisions replayed between two progress reports.
PROGRESS_EVERY: Final = 500


class CandidateError(Exception):
    """The evaluation cannot run: no decision or event log, or nothing to evaluate."""


@attrs.frozen(kw_only=True)
class Evaluation:
    """A candidate config's estimates against what the logged policy earned."""

    surface: str | None
    candidate: str
    #: Decisions weighed, and those left out by reason.
    decisions: int
    skipped: Mapping[str, int]
    #: The logged policy's own engagement per slate (the mean, with its interval).
    logged: Estimate
    estimates: Sequence[Estimate]

    def view(self) -> dict[str, Any]:
        return {
            "surface": self.surface,
            "candidate": self.candidate,
            "decisions": self.decisions,
            "skipped": dict(self.skipped),
            "logged": _finite(self.logged.view()),
            "estimates": [_finite(e.view()) for e in self.estimates],
        }


def _finite(view: dict[str, Any]) -> dict[str, Any]:
    """NaN (a refused estimate) as None, for JSON."""
    return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in view.items()}


@attrs.frozen(kw_only=True)
class _Decision:
    record: dict[str, Any]
    logged: Sequence[float]


def evaluate_candidate(
    data: str | os.PathLike[str],
    candidate_path: str | os.PathLike[str],
    *,
    surface: str | None = None,
    model: str | None = None,
    since: float | None = None,
    window_s: float = DEFAULT_WINDOW_S,
    engagement_types: frozenset[str] | None = None,
    confidence: float = 0.95,
    progress: Callable[[str], None] | None = None,
) -> Evaluation:
    """Estimate the engagement per slate the config at ``candidate_path`` would have earned on
    the decisions logged in ``data`` (see the module docstring). ``model``: rank with that
    model version instead of each decision's own. Blocking; read-only, beside a server.

    Raises:
        CandidateError: ``data`` has no decision or event log, or no decision to weigh.
        ConfigError: the candidate config (or a logged one) cannot be read.
        ModelError: a model artifact is gone or does not load.
        StoreError, RankerError, ReplayError: a log cannot be read.
    """
    data = Path(data)
    if not (data / "decisions" / "data.mdb").is_file():
        raise CandidateError(f"no decision log in {data / 'decisions'}: serve requests first")
    if not (data / "events" / "data.mdb").is_file():
        raise CandidateError(f"no event log in {data / 'events'}")
    candidate = load_surfaces(Path(candidate_path))
    kept = _Kept(data)
    chosen, skipped = _choose(data, kept, surface, since)
    with LmdbEventStore(data / "events", readonly=True) as store:
        histories = read_histories(store, {d.record["user"] for d in chosen})
        rewards = _rewards(chosen, histories, window_s, engagement_types)
        slates = _slates(store, chosen, rewards, candidate, kept, model, progress)
    rounds = slate_rounds(_with_slot_model(slates))
    return Evaluation(
        surface=surface,
        candidate=str(candidate_path),
        decisions=len(chosen),
        skipped=skipped,
        logged=_on_policy(rewards, confidence),
        estimates=[estimate(rounds, name, confidence=confidence) for name in ESTIMATORS],
    )


class _Kept:
    """The surfaces configs and models the decisions name, each read from ``data`` once."""

    def __init__(self, data: Path) -> None:
        self.data = data
        self._configs: dict[str, Surfaces] = {}
        self._models: dict[str, Model] = {}

    def config(self, digest: str) -> Surfaces:
        if digest not in self._configs:
            self._configs[digest] = config_at(self.data, digest)
        return self._configs[digest]

    def serving(self, version: str | None, replay: Replay) -> ServingModel | None:
        if version is None:
            return None
        if version not in self._models:
            self._models[version] = load_model(self.data, version)
        return replay.serving(self._models[version])


def _choose(
    data: Path, kept: _Kept, surface: str | None, since: float | None
) -> tuple[list[_Decision], dict[str, int]]:
    """The decisions to weigh, in log order, and how many were left out by reason.

    Raises:
        CandidateError: there is none.
    """
    skipped: dict[str, int] = {}
    chosen: list[_Decision] = []
    for record in iter_records(data / "decisions"):
        why = _left_out(record, surface, since, REPLAY_FIELDS)
        if why is None:
            policy = kept.config(record["config"]).get(record["requested_surface"])
            if policy.exploration.share:
                why = "its surface explores (estimated propensities)"
        if why is not None:
            skipped[why] = skipped.get(why, 0) + 1
            continue
        logging = record.get("position_propensities") or [1.0] * len(record["items"])
        chosen.append(_Decision(record=record, logged=logging))
    if not chosen:
        left = "; ".join(f"{n} {why}" for why, n in skipped.items()) or "the log is empty"
        raise CandidateError(f"no decision to weigh ({left})")
    chosen.sort(key=lambda d: d.record["log_seq"])
    return chosen, skipped


def _slates(
    store: EventStore,
    chosen: Sequence[_Decision],
    rewards: Sequence[Sequence[float]],
    candidate: Surfaces,
    kept: _Kept,
    model: str | None,
    progress: Callable[[str], None] | None,
) -> list[LoggedSlate[str]]:
    """Each decision as a logged slate: replayed at its log position, with the candidate's
    and the logged config's probability of each item at each slot."""
    tiers_at = [d.record["tiers_seq"] for d in chosen if "tiers_seq" in d.record]
    replay = Replay(store, tiers_at=tiers_at)
    slates = []
    for n, decision in enumerate(chosen):
        record = decision.record
        tiers = replay.popular_tiers(record["tiers_seq"]) if "tiers_seq" in record else []
        replay.advance_to(record["log_seq"])
        request, now, version = request_of(record), record["now"], record.get("model")
        target = replay.slot_probabilities(
            request, candidate, kept.serving(model or version, replay), now=now, tiers=tiers
        )
        logged = replay.slot_probabilities(
            request,
            kept.config(record["config"]),
            kept.serving(version, replay),
            now=now,
            tiers=tiers,
        )
        slates.append(
            LoggedSlate(
                items=record["items"],
                logging=decision.logged,
                reward=rewards[n],
                target=target,
                logged=logged,
            )
        )
        if progress is not None and (n + 1) % PROGRESS_EVERY == 0:
            progress(f"replayed {n + 1:,} of {len(chosen):,} decisions")
    return slates


def _left_out(
    record: Mapping[str, Any], surface: str | None, since: float | None, needed: Iterable[str]
) -> str | None:
    """Why a decision record is not weighed, or None."""
    if surface is not None and surface not in (
        record.get("surface"),
        record.get("requested_surface"),
    ):
        return "another surface"
    if since is not None and not record.get("ts", 0.0) >= since:
        return "before --since"
    if record.get("shown") is False:
        return "not shown as ranked (a shadow, or one side of an interleaved list)"
    if any(name not in record for name in needed):
        return "recorded without what a replay needs (an older server)"
    return None


def _rewards(
    chosen: Sequence[_Decision],
    histories: Mapping[str, Sequence[Interaction]],
    window_s: float,
    engagement_types: frozenset[str] | None,
) -> list[list[float]]:
    """Per decision, 1 at each slot whose item the user engaged with after it, else 0."""
    shown = [
        Impression(
            request_id=d.record["request_id"],
            user=d.record["user"],
            ts=d.record["ts"],
            teams=dict.fromkeys(d.record["items"], "served"),
        )
        for d in chosen
    ]
    engagements = [
        interaction
        for history in histories.values()
        for interaction in history
        if interaction.engages(engagement_types)
    ]
    found = engaged(shown, engagements, window_s=window_s)
    return [
        [1.0 if item in found[d.record["request_id"]] else 0.0 for item in d.record["items"]]
        for d in chosen
    ]


def _with_slot_model(slates: Sequence[LoggedSlate[str]]) -> list[LoggedSlate[str]]:
    """The slates with DR's reward model: each slot's mean engagement in the log, whatever
    the item (a model need not be right for DR to be unbiased, only for it to help)."""
    slots = max(len(s.items) for s in slates)
    totals, counts = np.zeros(slots), np.zeros(slots)
    for s in slates:
        n = len(s.items)
        totals[:n] += s.reward
        counts[:n] += 1
    per_slot = np.divide(totals, counts, out=np.zeros(slots), where=counts > 0)
    out = []
    for s in slates:
        items = set(s.target) | set(s.logged or {}) | set(s.items)
        out.append(attrs.evolve(s, model=dict.fromkeys(items, per_slot)))
    return out


def _on_policy(rewards: Sequence[Sequence[float]], confidence: float) -> Estimate:
    """The logged policy's engagement per slate: the mean and its normal interval."""
    totals = np.array([sum(r) for r in rewards], dtype=float)
    n = len(totals)
    mean = float(totals.mean())
    half = 0.0
    if n > 1:
        z = NormalDist().inv_cdf(0.5 + confidence / 2)
        half = z * float(totals.std(ddof=1)) / math.sqrt(n)
    return Estimate(
        estimator="logged",
        value=mean,
        ci_low=mean - half,
        ci_high=mean + half,
        confidence=confidence,
        ess=float(n),
        rounds=n,
    )
