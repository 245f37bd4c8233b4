"""One ``recommend`` request as named stages over a :class:`Candidates` value.

:meth:`ranker.actor.RankerActor.recommend` runs them in order::

    gather (the only awaits: the job's and the user's state, read into a Live value: live)
      → candidates (retrieve → score → apply_rules)
      → (two-sided: considered → ask the suppliers' actors → with_two_sided)
      → rerank (diversity, exploration) → recommendation (items, explanations)

and :class:`ranker.replay.Replay` runs the same ones over projections rebuilt
from the log, to rank a past decision again.

Every stage here is synchronous and pure apart from reading the index, the
item signals and co-occurrence (a request reads them as they are when the
stage runs); :mod:`ranker.stages` and :mod:`ranker.two_sided` hold the
arithmetic. A stage takes the candidates and returns a new value: nothing
mutates one in place, so what the two-sided step or an explanation reads is
what the stage before it produced.
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Mapping, Sequence
from typing import Any, Final

import attrs
import numpy as np
import numpy.typing as npt
from opentelemetry import trace
from pyroaring import BitMap

from actors import ItemSignals, ItemState, UserState, user
from actors.cooccurrence import CoOccurrence
from index import EVERYTHING, AllOf, Index, Query, QueryError
from ranker import stages, stochastic, two_sided
from ranker.errors import RequestError
from ranker.policy import DEFAULT_BLEND, HEURISTIC_BLEND, Blend, Surface
from ranker.serving import ServingModel, model_scores
from ranker.stages import Docs, Floats
from ranker.stochastic import Slate
from ranker.template import TOP_VALUES, fill

log = logging.getLogger(__name__)
#: The process's OpenTelemetry tracer (a no-op until the server sets a provider).
_TRACER = trace.get_tracer("matchlight.ranker")

#: The generator passed to explore() on surfaces without exploration (it draws nothing then).
_NEVER_DRAWN: Final = np.random.default_rng(0)

Favourites = Sequence[tuple[str, str, float]]
Rules = list[tuple[str, str, Query, float]]
#: The tiers of the most popular items a request looks in first (:class:`stages.PopularTiers`).
Tiers = Sequence[BitMap]


@attrs.frozen(kw_only=True)
class RecommendRequest:
    user: str
    surface: str = "default"
    #: Items wanted; ``None`` for the surface's default.
    k: int | None = None
    context: Mapping[str, Any] = attrs.field(factory=dict)
    filter: Query | None = None
    explain: bool = False
    #: An item to look for among the candidates: the result says whether it was retrieved
    #: (how an evaluation measures retrieval recall; it changes nothing served).
    probe: str | None = None
    #: False when the answer is not what the user is shown as it is (a shadow comparison, or
    #: one side of an interleaved list): its decision record says so, and an off-policy
    #: estimate leaves it out.
    shown: bool = True


@attrs.frozen(kw_only=True)
class Recommendation:
    #: ``{"id", "score"}`` per item, best first, plus ``"reasons"`` when explained.
    items: list[dict[str, Any]]
    source: str
    #: The model version used, ``None`` for the heuristic ranker.
    model: str | None
    ranker: str
    #: The policy that served (``default`` for an unknown surface).
    surface: str
    request_id: str
    #: Items matching the retrieval query (not already seen), and how many were scored.
    matched: int
    candidates: int
    #: Whether the request's ``probe`` item was among the candidates (``None``: no probe).
    retrieved: bool | None = None

    def view(self) -> dict[str, Any]:
        """The ``recommend`` result map of the contract (plus ranker, surface, counts)."""
        probed = {} if self.retrieved is None else {"retrieved": self.retrieved}
        return {
            "items": self.items,
            "source": self.source,
            "model": self.model,
            "request_id": self.request_id,
            "ranker": self.ranker,
            "surface": self.surface,
            "matched": self.matched,
            "candidates": self.candidates,
        } | probed


@attrs.frozen(kw_only=True, eq=False)
class Live:
    """What a request read from live state, all of it taken before its next checkpoint.

    The user's state is a view that is only valid until then (see
    :meth:`actors.ActorSystem.get_user_view`): everything ranking needs from
    it is copied out here, and the state itself is not kept.
    """

    #: The user's state sequence number (seeds exploration: same state, same draws).
    seq: int
    #: The ranking's clock (the stream's, bounded by the wall clock and the user's last event).
    now: float
    #: The user's term affinity as of ``now``, strongest first.
    affinity: Mapping[str, float]
    #: Their strongest positive terms (:func:`stages.favourites`).
    favourites: Favourites
    #: The items not to recommend (seen, or only dismissed on a surface allowing repeats).
    exclude: BitMap
    #: The latest engagements and their weights (:func:`stages.recent_engagements`).
    engaged: tuple[Docs, Floats]
    #: The items co-occurring with them, ``(docs, scores)`` sorted by id.
    related: tuple[Docs, Floats]
    #: The model served when the request started; ``None`` for the heuristic ranker.
    serving: ServingModel | None
    #: On a two-sided surface, the job the request is about.
    job: ItemState | None

    @property
    def top_values(self) -> dict[str, list[str]]:
        """Per term field, the user's favourite values (for ``$user.top.FIELD``), best first."""
        top: dict[str, list[str]] = {}
        for field, value, _ in self.favourites:
            values = top.setdefault(field, [])
            if len(values) < TOP_VALUES:
                values.append(value)
        return top


def live(
    index: Index,
    cooccurrence: CoOccurrence,
    state: UserState,
    policy: Surface,
    *,
    now: float,
    serving: ServingModel | None,
    job: ItemState | None,
) -> Live:
    """What a request takes from the user's ``state`` as of ``now`` (the ranking's clock).

    Not a checkpoint: ``state`` may be a live view (see :class:`Live`).
    """
    affinity = user.affinity_at(state, now)
    # The user's latest engagements: sources of co-occurrence and of the fold-in.
    engaged = stages.recent_engagements(state.recent, index.doc_of)
    return Live(
        seq=state.seq,
        now=now,
        affinity=affinity,
        favourites=stages.favourites(affinity),
        # Every item of the user's whole history (cached in the state, brought up to
        # date here); on a surface that allows repeats, only their latest dismissals.
        exclude=user.excluded_docs(state, index.doc_of, dismissed_only=policy.allow_repeats),
        engaged=engaged,
        related=cooccurrence.scores(zip(*engaged, strict=True), now),
        serving=serving,
        job=job,
    )


@attrs.frozen(kw_only=True, eq=False)
class Candidates:
    """The request's candidates and what each stage learnt about them (aligned arrays)."""

    #: Internal ids, sorted.
    docs: Docs
    #: Items matching the retrieval query (not excluded), of which ``docs`` were kept.
    matched: int
    #: The blended score's weighted parts (empty before scoring).
    parts: Mapping[str, Floats] = attrs.field(factory=dict)
    #: The score ranked by: the blend, then rules, then the two-sided score.
    score: Floats = attrs.field(factory=lambda: np.zeros(0))
    #: Per position, the rules that moved it.
    effects: Mapping[int, list[str]] = attrs.field(factory=dict)
    #: Per position, the two-sided score's parts (on a two-sided surface).
    two_sided: Mapping[int, Mapping[str, float]] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True, eq=False)
class Reranked:
    """The served positions in slot order, and what diversity and exploration noted."""

    #: On a stochastic surface, ``propensity`` is the probability of being served at all.
    explored: stages.Explored
    #: Per position, why diversity skipped it or how similar an MMR pick was.
    notes: Mapping[int, str]
    #: On a stochastic surface, the slate drawn and its exact probabilities per slot.
    slate: Slate | None = None


# -- retrieval ------------------------------------------------------------------------


def query(index: Index, policy: Surface, request: RecommendRequest, live: Live, k: int) -> Query:
    """The retrieval query: the surface's template and filter rules, filled, AND the
    request's filter; on a two-sided surface narrowed to the job's terms.

    Raises:
        RequestError: the request's filter names an unknown field, or a context
            value does not fit the surface's template.
    """
    top_values = live.top_values
    parts = [fill(policy.retrieval, request.context, top_values, "retrieval")]
    for rule in policy.rules:
        if rule.action == "filter":
            parts.append(fill(rule.query, request.context, top_values, rule.name))
    if request.filter is not None:
        try:
            index.check(request.filter)
        except QueryError as exc:
            raise RequestError(f"filter: {exc}") from None
        parts.append(request.filter)
    parts = [p for p in parts if p != EVERYTHING]
    whole: Query = EVERYTHING
    if parts:
        whole = parts[0] if len(parts) == 1 else AllOf(tuple(parts))
    if live.job is None:
        return whole
    return two_sided.narrowed_query(index, policy, whole, live.job, live.exclude, k)


def retrieve(
    index: Index,
    signals: ItemSignals,
    popular: Tiers,
    policy: Surface,
    query: Query,
    live: Live,
) -> Candidates:
    """Up to the surface's ``candidates`` items matching ``query`` (:func:`stages.retrieve`;
    ``popular``: the tiers to look in first).

    None when the surface's own template or rules name a field no item has (yet).
    """
    try:
        with _TRACER.start_as_current_span("index.query"):
            docs, matched = stages.retrieve(
                index,
                signals,
                query,
                limit=policy.candidates,
                exclude=live.exclude,
                favourite_terms=[(f, v) for f, v, _ in live.favourites],
                popular=popular,
                related=live.related,
            )
    except QueryError as exc:
        log.warning("surface %s: %s; nothing to recommend", policy.name, exc)
        docs, matched = np.empty(0, np.uint32), 0
    return Candidates(docs=docs, matched=matched)


# -- scoring --------------------------------------------------------------------------


def candidates(
    index: Index,
    signals: ItemSignals,
    popular: Tiers,
    policy: Surface,
    request: RecommendRequest,
    k: int,
    live: Live,
) -> tuple[Candidates, ServingModel | None]:
    """Retrieve, score and apply the rules; and the model that scored (``live.serving``, or a
    grown copy of it with the rows it computed: the caller may keep it). Not a checkpoint.

    Raises:
        RequestError: the request's filter names an unknown field, or a
            context value does not fit the surface's template.
    """
    found = retrieve(index, signals, popular, policy, query(index, policy, request, live, k), live)
    with _TRACER.start_as_current_span("ranker.score"):
        served, scores = live.serving, None
        if served is not None and len(found.docs):
            scores, served = model_scores(
                served, index, found.docs, request.user, live.affinity, live.engaged
            )
        found = score(index, signals, found, blend(policy, served), live, scores)
        found = apply_rules(index, policy, request, live, found)
    return found, served


def blend(policy: Surface, served: ServingModel | None) -> Blend:
    """The surface's pinned blend, else the one learned with the model, else a default."""
    if policy.blend_pinned:
        return policy.blend if served is not None else policy.blend.heuristic()
    if served is None:
        return HEURISTIC_BLEND
    return served.blend or DEFAULT_BLEND


def score(
    index: Index,
    signals: ItemSignals,
    candidates: Candidates,
    blend: Blend,
    live: Live,
    model_scores: Floats | None,
) -> Candidates:
    """The candidates scored by ``blend`` (:func:`stages.score`); parts the blend gives no
    weight are not computed."""
    docs, now, favourites = candidates.docs, live.now, live.favourites
    unused = np.zeros(len(docs))
    popularity = signals.popularity(docs, now) if blend.popularity or blend.trending else unused
    affinity = (
        stages.affinity_part(index, docs, favourites)
        if blend.affinity or blend.trending
        else unused
    )
    scored = stages.score(
        docs,
        blend,
        model_scores=model_scores,
        popularity=popularity,
        last_interaction=signals.last_interaction(docs) if blend.recency else unused,
        affinity=affinity,
        now=now,
        cooccurrence=stages.related_part(docs, live.related) if blend.cooccurrence else None,
        trending=stages.trending_part(popularity, affinity, sum(a for _, _, a in favourites))
        if blend.trending
        else None,
    )
    return attrs.evolve(candidates, parts=scored.parts, score=scored.score)


def apply_rules(
    index: Index, policy: Surface, request: RecommendRequest, live: Live, candidates: Candidates
) -> Candidates:
    """The candidates with the surface's boost and bury rules applied to their score.

    A rule whose placeholders are all unfilled is skipped; a rule naming a
    field no item has skips them all (logged).
    """
    rules: Rules = []
    top_values = live.top_values
    for rule in policy.rules:
        if rule.action != "filter":
            filled = fill(rule.query, request.context, top_values, rule.name)
            if filled != EVERYTHING:
                rules.append((rule.name, rule.action, filled, rule.weight))
    score = candidates.score.copy()
    try:
        effects = stages.apply_rules(index, candidates.docs, score, rules)
    except QueryError as exc:
        log.warning("surface %s: a rule %s; rules skipped", policy.name, exc)
        effects = {}
    return attrs.evolve(candidates, score=score, effects=effects)


def considered(
    index: Index, policy: Surface, job: ItemState, candidates: Candidates
) -> tuple[two_sided.Considered, list[str]]:
    """On a two-sided surface, the candidates to score two-sided (:func:`two_sided.consider`)
    and their ids: the suppliers whose states :func:`with_two_sided` needs."""
    docs = candidates.docs
    chosen = two_sided.consider(index, policy, job, docs, candidates.score)
    return chosen, index.external(docs[chosen.top].tolist())


def with_two_sided(
    policy: Surface,
    candidates: Candidates,
    chosen: two_sided.Considered,
    suppliers: Sequence[UserState],
    now: float,
) -> Candidates:
    """The candidates with the considered ones' scores replaced by their two-sided score
    (:func:`two_sided.two_sided_scores`; ``suppliers``: their states, in order)."""
    assert policy.reciprocal is not None
    score, details = two_sided.two_sided_scores(
        chosen, suppliers, policy.reciprocal, len(candidates.docs), now
    )
    return attrs.evolve(candidates, score=score, two_sided=details)


# -- reranking ------------------------------------------------------------------------


def rerank(
    index: Index,
    policy: Surface,
    request: RecommendRequest,
    k: int,
    candidates: Candidates,
    serving: ServingModel | None,
    seq: int,
) -> Reranked:
    """Diversity (:func:`stages.select`), then exploration (:func:`stages.explore`): the
    ``k`` positions to serve. On a stochastic surface, diversity then a Plackett-Luce
    draw (:func:`rerank_stochastic`)."""
    if policy.stochastic is not None:
        return rerank_stochastic(index, policy, request, k, candidates, serving, seq)
    docs, score = candidates.docs, candidates.score
    order = stages.ranked(docs, score)
    exploration = policy.exploration
    exploit_k = k - min(int(exploration.share * k + 0.5), k)
    count = exploit_k if exploration.share else k
    chosen, notes = _select(index, policy, count, candidates, serving, order)
    successes = trials = np.zeros(len(docs))
    rng = _NEVER_DRAWN  # making a seeded generator costs more than the rest of explore
    if exploration.share:
        successes = sum((index.values(t, docs) for t in stages.SUCCESS_TYPES), np.zeros(len(docs)))
        trials = index.values(stages.TRIAL_TYPE, docs)
        # Seeded by the user's state: the same request on the same state explores alike.
        rng = np.random.default_rng([exploration.seed, _crc(request.user), seq, _crc(policy.name)])
    explored = stages.explore(order, chosen, k, exploration, successes, trials, rng)
    return Reranked(explored=explored, notes=notes)


def rerank_stochastic(
    index: Index,
    policy: Surface,
    request: RecommendRequest,
    k: int,
    candidates: Candidates,
    serving: ServingModel | None,
    seq: int,
) -> Reranked:
    """Diversity chooses the pool (or ``k`` if more), then :func:`stochastic.serve` draws
    the slate, seeded like exploration: the same request on the same state draws alike.

    Any subset of what diversity chose keeps its ``max_per_value`` cap, so the
    slate does too.
    """
    assert policy.stochastic is not None
    order = stages.ranked(candidates.docs, candidates.score)
    count = max(k, policy.stochastic.pool)
    chosen, notes = _select(index, policy, count, candidates, serving, order)
    rng = np.random.default_rng(
        [policy.stochastic.seed, _crc(request.user), seq, _crc(policy.name)]
    )
    slate = stochastic.serve(chosen, k, candidates.score, policy.stochastic, rng)
    explored = stages.Explored(
        positions=slate.positions,
        propensity={p: slate.served(p) for p in slate.positions},
        draws={},
    )
    return Reranked(explored=explored, notes=notes, slate=slate)


def slot_marginals(
    index: Index, policy: Surface, k: int, candidates: Candidates, serving: ServingModel | None
) -> stochastic.Marginals:
    """``P(candidate at slot j)`` for every candidate ``policy`` could serve in its ``k`` slots.

    What an off-policy replay weighs a logged slate by: run over the
    candidates rebuilt for a logged request (scored by the policy's blend
    and rules), a candidate policy's probability of each logged item at its
    slot is ``marginals.of(position)[slot]``; rows are candidate positions
    (``index.external(candidates.docs[list(marginals.positions)].tolist())``
    names them). Pure: draws nothing.

    Raises:
        ValueError: the policy explores (Thompson propensities are estimated, not exact).
    """
    if policy.exploration.share:
        raise ValueError(
            f"surface {policy.name!r} explores: its slots' probabilities are estimated, not exact"
        )
    count = k if policy.stochastic is None else max(k, policy.stochastic.pool)
    order = stages.ranked(candidates.docs, candidates.score)
    chosen, _ = _select(index, policy, count, candidates, serving, order)
    return stochastic.position_marginals(chosen, k, candidates.score, policy.stochastic)


def _select(
    index: Index,
    policy: Surface,
    count: int,
    candidates: Candidates,
    serving: ServingModel | None,
    order: npt.NDArray[np.intp],
) -> tuple[list[int], dict[int, str]]:
    """:func:`stages.select` of ``count`` positions in ``order`` under the surface's diversity
    policy."""
    docs, score = candidates.docs, candidates.score
    return stages.select(
        order,
        count,
        policy.diversity,
        _values_of(index, docs, policy.diversity.field),
        score=score,
        embeddings=None if serving is None or not policy.diversity.mmr else serving.vectors[docs],
    )


def _values_of(index: Index, docs: Docs, field: str | None) -> Any:
    def values_of(p: int) -> Sequence[str]:
        if field is None:
            return ()
        document = index.document(int(docs[p]))
        return () if document is None else tuple(document[1].get(field, ()))

    return values_of


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


# -- serving --------------------------------------------------------------------------


def items(
    index: Index,
    request: RecommendRequest,
    candidates: Candidates,
    live: Live,
    reranked: Reranked,
) -> list[dict[str, Any]]:
    """``{"id", "score"}`` per served item in slot order, with ``"reasons"`` if asked."""
    positions = reranked.explored.positions
    ids = index.external(candidates.docs[positions].tolist()) if positions else []
    out = []
    for item_id, p in zip(ids, positions, strict=True):
        entry: dict[str, Any] = {"id": item_id, "score": round(float(candidates.score[p]), 6)}
        if request.explain:
            entry["reasons"] = _reasons(index, p, candidates, live.favourites, reranked)
        out.append(entry)
    return out


def recommendation(
    index: Index,
    policy: Surface,
    request: RecommendRequest,
    candidates: Candidates,
    served: ServingModel | None,
    live: Live,
    reranked: Reranked,
    request_id: str,
) -> Recommendation:
    """The response: the served items (:func:`items`) and what ranked them."""
    return Recommendation(
        items=items(index, request, candidates, live, reranked),
        source="realtime",
        model=None if served is None else served.model.version,
        ranker="heuristic" if served is None else "lightfm",
        surface=policy.name,
        request_id=request_id,
        matched=candidates.matched,
        candidates=len(candidates.docs),
        retrieved=None if request.probe is None else among(index, candidates.docs, request.probe),
    )


def _reasons(
    index: Index, p: int, candidates: Candidates, favourites: Favourites, reranked: Reranked
) -> dict[str, Any]:
    """Why position ``p`` was served: its score's parts, the user's terms it carries, the
    rules that moved it, diversity's note, its slot and its two-sided parts."""
    document = index.document(int(candidates.docs[p]))
    terms = {} if document is None else document[1]
    liked = {(f, v) for f, v, _ in favourites}
    reasons: dict[str, Any] = {
        "parts": {name: round(float(part[p]), 4) for name, part in candidates.parts.items()},
        "matched": sorted(
            f"{field}={value}"
            for field, values in terms.items()
            for value in values
            if (field, value) in liked
        ),
        "rules": list(candidates.effects.get(p, [])),
    }
    if p in reranked.notes:
        reasons["diversity"] = reranked.notes[p]
    explored, slate = reranked.explored, reranked.slate
    if slate is not None:
        slot = slate.positions.index(p)
        reasons["exploration"] = {
            "slot": "stochastic",
            "propensity": explored.propensity[p],
            "position_propensity": slate.marginal[slot],
            "conditional_propensity": slate.conditional[slot],
        }
    elif p in explored.draws:
        reasons["exploration"] = {
            "slot": "explore",
            "draw": round(explored.draws[p], 4),
            "propensity": explored.propensity[p],
        }
    else:
        reasons["exploration"] = {"slot": "exploit", "propensity": 1.0}
    if p in candidates.two_sided:
        # interest and willingness; fit (of the supplier's terms to the job's) when it counts
        reasons["reciprocal"] = {name: round(v, 4) for name, v in candidates.two_sided[p].items()}
    return reasons


def among(index: Index, docs: Docs, item: str) -> bool:
    """Whether ``item`` is one of ``docs`` (sorted internal ids)."""
    doc = index.doc_of(item)
    if doc is None or not len(docs):
        return False
    at = int(np.searchsorted(docs, doc))
    return at < len(docs) and int(docs[at]) == doc
