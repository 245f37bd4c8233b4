"""RankerActor: answers ``recommend`` from live state, the current model and the surface policies.

It owns the model being served (hot-swapped when ``matchlight train``
writes a new artifact) and the decision log writer. Requests run
concurrently on their callers' tasks: each reads the user's live state
(straight from an active UserActor, past its mailbox, so reads never queue
behind writes; otherwise one round trip that activates it), then runs the
pure stages of
:mod:`ranker.stages` on the index and item signals (no awaits), and hands
the decision to the log writer through a bounded channel.

Per request: fill the surface's retrieval template from the request's
context and the user's favourite terms, AND the request's ``filter`` and
the surface's filter rules → retrieve up to ``candidates`` items, without
those the user already interacted with (or only dismissed ones, if the
surface allows repeats) → score (LightFM with the user folded in from live
state, blended with popularity, recency and affinity; a heuristic blend
while no model exists) → boost/bury rules → on a reciprocal surface, the
job's fit and the suppliers' willingness (the job's terms also narrow
retrieval there) → diversity → exploration → the top ``k``.

Use :func:`open_ranker`.
"""

from __future__ import annotations

import logging
import time
import uuid
import zlib
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import numpy as np
import numpy.typing as npt
import trio
from opentelemetry import trace
from pyroaring import BitMap

from actors import ActorSystem, ItemState, RateLimitedLog, UserState, decay, user
from index import EVERYTHING, AllOf, Index, Query, QueryError
from ranker import stages
from ranker.decisions import DecisionLog
from ranker.errors import ModelError, RequestError
from ranker.model import Model, current_version, learned_blend, load_model
from ranker.policy import DEFAULT_BLEND, HEURISTIC_BLEND, Blend, Surface, Surfaces
from ranker.template import TOP_VALUES, fill

log = logging.getLogger(__name__)
#: The process's OpenTelemetry tracer (a no-op until the server sets a provider).
_TRACER = trace.get_tracer("matchlight.ranker")

DEFAULT_POLL_S: Final = 2.0
#: Decisions waiting for the writer; a full queue makes requests wait (backpressure).
DECISION_QUEUE: Final = 10_000
DECISION_BATCH: Final = 4096
#: On a reciprocal surface, suppliers' willingness is computed for this many times k.
RECIPROCAL_DEPTH: Final = 10
#: Weight of the recently engaged items' embeddings in the live user vector (0: off).
RECENT_ITEMS_WEIGHT: Final = 1.0
#: The generator passed to explore() on surfaces without exploration (it draws nothing then).
_NEVER_DRAWN: Final = np.random.default_rng(0)


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
class ServingModel:
    """A model and its item representations, aligned with the index's internal ids."""

    model: Model
    vectors: npt.NDArray[np.float32]
    biases: npt.NDArray[np.float32]
    #: Which rows are computed; others are filled on first use.
    ready: npt.NDArray[np.bool_]
    #: The index's term version of each row when it was computed (stale when it differs).
    versions: npt.NDArray[np.uint32]
    #: The blend ``matchlight train`` learned with the model, if it did.
    blend: Blend | None = None


@attrs.frozen(kw_only=True)
class RankerStatistics:
    requests: int
    model: str | None
    model_swaps: int
    model_failures: int
    decisions_written: int
    decisions_kept: int
    #: Decisions that could not be written (a failing disk, or shutdown).
    decisions_lost: int


def serving_model(model: Model, index: Index, count: int) -> ServingModel:
    """Item representations for the first ``count`` internal ids. Blocking (a worker thread).

    Reads the index from another thread: documents are immutable once put,
    and the list slots read are replaced atomically.
    """
    capacity = max(count, 1024)
    vectors = np.zeros((capacity, model.components), dtype=np.float32)
    biases = np.zeros(capacity, dtype=np.float32)
    ready = np.zeros(capacity, dtype=bool)
    versions = np.zeros(capacity, dtype=np.uint32)
    serving = ServingModel(
        model=model,
        vectors=vectors,
        biases=biases,
        ready=ready,
        versions=versions,
        blend=learned_blend(model),
    )
    _fill_rows(serving, index, np.arange(count, dtype=np.uint32))
    return serving


def _fill_rows(serving: ServingModel, index: Index, docs: npt.NDArray[np.uint32]) -> None:
    """Compute the rows of ``docs`` from the items' current kind and terms."""
    model = serving.model
    # Versions first: a change while computing leaves an older version, so the row is redone.
    serving.versions[docs] = index.term_versions(docs)
    for doc in docs.tolist():
        document = index.document(doc)
        if document is None:
            continue  # not searchable now: filled when it is a candidate
        kind, terms = document
        (item_id,) = index.external([doc])
        vector, bias = model.item_representation(item_id, kind, terms)
        serving.vectors[doc] = vector
        serving.biases[doc] = bias
        serving.ready[doc] = True


def ensure_rows(serving: ServingModel, index: Index, docs: npt.NDArray[np.uint32]) -> ServingModel:
    """``serving`` with the rows of ``docs`` (sorted) computed where new since the model or
    where the item's terms changed; a grown copy if a doc lies beyond its rows."""
    top = int(docs[-1])
    if top >= len(serving.ready):
        serving = _grown(serving, top + 1)
    # Rows never computed, or computed before the item's terms last changed.
    missing = docs[~serving.ready[docs] | (serving.versions[docs] != index.term_versions(docs))]
    if len(missing):
        _fill_rows(serving, index, missing)
    return serving


def _grown(serving: ServingModel, size: int) -> ServingModel:
    capacity = max(size, 2 * len(serving.ready))
    vectors = np.zeros((capacity, serving.model.components), dtype=np.float32)
    biases = np.zeros(capacity, dtype=np.float32)
    ready = np.zeros(capacity, dtype=bool)
    versions = np.zeros(capacity, dtype=np.uint32)
    n = len(serving.ready)
    vectors[:n], biases[:n], ready[:n] = serving.vectors, serving.biases, serving.ready
    versions[:n] = serving.versions
    return ServingModel(
        model=serving.model,
        vectors=vectors,
        biases=biases,
        ready=ready,
        versions=versions,
        blend=serving.blend,
    )


class RankerActor:
    def __init__(
        self,
        system: ActorSystem,
        surfaces: Surfaces | None = None,
        *,
        data_dir: Path | None = None,
        decisions: DecisionLog | None = None,
        poll_s: float = DEFAULT_POLL_S,
        require_model: bool = False,
    ) -> None:
        self.system = system
        #: A current model that does not load at start is an error (not logged and skipped).
        self.require_model = require_model
        self.surfaces = surfaces or Surfaces()
        self.data_dir = data_dir
        self.decisions = decisions
        self.poll_s = poll_s
        self._serving: ServingModel | None = None
        self._failed_versions: set[str] = set()
        self._send, self._receive = trio.open_memory_channel[dict[str, Any]](DECISION_QUEUE)
        self._drained = trio.Event()
        self._popular = stages.PopularTiers()
        self._requests = 0
        self._swaps = 0
        self._failures = 0
        self._decisions_lost = 0
        #: Failures that repeat per request (a full disk) are logged once a minute.
        self._log_errors = RateLimitedLog(log)

    # -- the model ----------------------------------------------------------------

    @property
    def model(self) -> Model | None:
        return None if self._serving is None else self._serving.model

    async def use_model(self, model: Model) -> None:
        """Serve ``model`` from now on. A checkpoint (item vectors are built on a worker thread)."""
        index = self.system.index
        count = index.statistics().ids
        serving = await trio.to_thread.run_sync(serving_model, model, index, count)
        self._serving = serving  # one assignment: a request sees the old or the new model
        self._swaps += 1
        log.info("serving model %s", model.version)

    async def reload_model(self, *, strict: bool = False) -> bool:
        """Swap in the data dir's current model if it is new. A checkpoint.

        Returns whether a new model is now served. A model that fails to load
        is logged and skipped (the previous one keeps serving) until a newer
        version appears; with ``strict`` it raises :class:`ModelError` instead.
        """
        if self.data_dir is None:
            return False
        version = await trio.to_thread.run_sync(current_version, self.data_dir)
        if version is None or version in self._failed_versions:
            return False
        if self._serving is not None and self._serving.model.version == version:
            return False
        try:
            model = await trio.to_thread.run_sync(load_model, self.data_dir, version)
        except ModelError as exc:
            if strict:
                raise
            self._failed_versions.add(version)
            self._failures += 1
            log.error("cannot load model %s; keeping the previous one: %s", version, exc)
            return False
        await self.use_model(model)
        return True

    # -- running --------------------------------------------------------------------

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Load the current model, then watch for new ones and write decisions until closed.

        Raises:
            ModelError: with ``require_model``, the current model does not load.
        """
        await self.reload_model(strict=self.require_model)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write_decisions)
            watcher = trio.CancelScope()
            nursery.start_soon(self._watch_models, watcher)
            task_status.started()
            # _write_decisions returns once aclose() closed the channel and it drained.
            await self._drained.wait()
            watcher.cancel()

    async def _watch_models(self, scope: trio.CancelScope) -> None:
        with scope:
            while True:
                await trio.sleep(self.poll_s)
                try:
                    await self.reload_model()
                except Exception as exc:  # e.g. an unreadable models dir: retry later
                    self._log_errors.error(
                        "models",
                        "looking for a new model failed; the current one keeps serving",
                        exc=exc,
                    )

    async def _write_decisions(self) -> None:
        try:
            async with self._receive:
                async for first in self._receive:
                    batch = [first]
                    while len(batch) < DECISION_BATCH:
                        try:
                            batch.append(self._receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    if self.decisions is not None:
                        try:
                            await trio.to_thread.run_sync(self.decisions.write, batch)
                        except Exception as exc:
                            self._decisions_lost += len(batch)
                            self._log_errors.error(
                                "decisions",
                                "lost %d decision records (%d lost in all)",
                                len(batch),
                                self._decisions_lost,
                                exc=exc,
                            )
        finally:
            self._drained.set()

    async def aclose(self) -> None:
        """Stop taking decisions; :meth:`run` returns once the queued ones are written."""
        await self._send.aclose()

    # -- recommend ------------------------------------------------------------------

    async def recommend(self, request: RecommendRequest) -> Recommendation:
        """Rank items for ``request``. A checkpoint (asks the user's actor).

        Raises:
            RequestError: the request's filter names an unknown field, or a
                context value does not fit the surface's template.
        """
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        policy = self.surfaces.get(request.surface)
        k = request.k or policy.k
        system, index, signals = self.system, self.system.index, self.system.signals
        # On a two-sided surface, the job the request is about (asked before the user's view).
        job = await self._job(policy, request)
        # The live state, read only until the next checkpoint (see get_user_view):
        # everything taken from it is taken before the first await below.
        state = await system.get_user_view(request.user)
        state_seq = state.seq
        serving = self._serving
        # The stream's clock, but never ahead of the wall clock by more than the allowed
        # skew (a log written before event times were checked may hold later stamps).
        now = max(min(signals.clock, time.time() + system.config.clock_skew_s), state.updated)
        affinity = user.affinity_at(state, now)
        favourites = stages.favourites(affinity)

        top_values = _top_values(favourites)
        query = self._query(policy, request, top_values)
        exclude = self._excluded(index, state, policy)
        if job is not None:
            query = _job_led(index, policy, query, job, exclude, k)
        # The user's latest engagements: sources of co-occurrence and of the fold-in.
        engaged = stages.recent_engagements(state.recent, index.doc_of)
        related = system.cooccurrence.scores(zip(*engaged, strict=True), now)
        try:
            with _TRACER.start_as_current_span("index.query"):
                docs, matched = stages.retrieve(
                    index,
                    signals,
                    query,
                    limit=policy.candidates,
                    exclude=exclude,
                    favourite_terms=[(f, v) for f, v, _ in favourites],
                    popular=self._popular.get(index, signals, time.monotonic()),
                    related=related,
                )
        except QueryError as exc:
            # The surface's own template or rules name a field no item has (yet).
            log.warning("surface %s: %s; nothing to recommend", policy.name, exc)
            docs, matched = np.empty(0, np.uint32), 0

        with _TRACER.start_as_current_span("ranker.score"):
            model_scores = None
            if serving is not None and len(docs):
                serving = self._ensure_rows(serving, index, docs)
                u = self._user_vector(serving, index, request.user, affinity, engaged)
                model_scores = (serving.vectors[docs] @ u + serving.biases[docs]).astype(np.float64)
            blend = self._blend(policy, serving)
            unused = np.zeros(len(docs))  # parts the blend gives no weight are not computed
            popularity = (
                signals.popularity(docs, now) if blend.popularity or blend.trending else unused
            )
            affinity_part = (
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
                affinity=affinity_part,
                now=now,
                cooccurrence=stages.related_part(docs, related) if blend.cooccurrence else None,
                trending=stages.trending_part(
                    popularity, affinity_part, sum(a for _, _, a in favourites)
                )
                if blend.trending
                else None,
            )
            score = scored.score.copy()
            rules = self._rules(policy, request, top_values)
            try:
                effects = stages.apply_rules(index, docs, score, rules)
            except QueryError as exc:
                log.warning("surface %s: a rule %s; rules skipped", policy.name, exc)
                effects = {}

        two_sided: dict[int, dict[str, float]] = {}
        if job is not None and len(docs):
            score, two_sided = await self._reciprocal(policy, job, docs, score, now)

        with _TRACER.start_as_current_span("ranker.rerank"):
            order = stages.ranked(docs, score)
            exploit_k = k - min(int(policy.exploration.share * k + 0.5), k)
            chosen, notes = stages.select(
                order,
                exploit_k if policy.exploration.share else k,
                policy.diversity,
                _values_of(index, docs, policy.diversity.field),
                score=score,
                embeddings=None
                if serving is None or not policy.diversity.mmr
                else serving.vectors[docs],
            )
            successes = trials = np.zeros(len(docs))
            if policy.exploration.share:
                successes = sum(
                    (index.values(t, docs) for t in stages.SUCCESS_TYPES), np.zeros(len(docs))
                )
                trials = index.values(stages.TRIAL_TYPE, docs)
            explored = stages.explore(
                order,
                chosen,
                k,
                policy.exploration,
                successes,
                trials,
                # Seeded by the user's state: the same request on the same state explores alike.
                np.random.default_rng(
                    [policy.exploration.seed, _crc(request.user), state_seq, _crc(policy.name)]
                )
                if policy.exploration.share
                else _NEVER_DRAWN,  # making a seeded generator costs more than the rest of explore
            )
        ids = index.external(docs[explored.positions].tolist()) if explored.positions else []
        items = []
        for item_id, p in zip(ids, explored.positions, strict=True):
            entry: dict[str, Any] = {"id": item_id, "score": round(float(score[p]), 6)}
            if request.explain:
                entry["reasons"] = self._reasons(
                    index, docs, p, scored, favourites, effects, notes, explored, two_sided
                )
            items.append(entry)
        self._requests += 1
        model_version = None if serving is None else serving.model.version
        result = Recommendation(
            items=items,
            source="realtime",
            model=model_version,
            ranker="heuristic" if serving is None else "lightfm",
            surface=policy.name,
            request_id=request_id,
            matched=matched,
            candidates=len(docs),
            retrieved=None if request.probe is None else _among(index, docs, request.probe),
        )
        await self._record(
            {
                "request_id": request_id,
                "ts": time.time(),
                "surface": policy.name,
                "requested_surface": request.surface,
                "user": request.user,
                "items": ids,
                "scores": [item["score"] for item in items],
                "propensities": [explored.propensity[p] for p in explored.positions],
                "model": model_version,
                "source": "realtime",
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )
        return result

    @staticmethod
    def _blend(policy: Surface, serving: ServingModel | None) -> Blend:
        """The surface's pinned blend, else the one learned with the model, else a default."""
        if policy.blend_pinned:
            return policy.blend if serving is not None else policy.blend.heuristic()
        if serving is None:
            return HEURISTIC_BLEND
        return serving.blend or DEFAULT_BLEND

    async def _record(self, decision: dict[str, Any]) -> None:
        """Queue a decision for the log (waits while the queue is full: backpressure)."""
        try:
            await self._send.send(decision)
        except trio.ClosedResourceError:  # a request finishing while the ranker shuts down
            self._decisions_lost += 1
            log.warning("decision %s not recorded: the ranker is closing", decision["request_id"])

    def _query(
        self, policy: Surface, request: RecommendRequest, top_values: Mapping[str, list[str]]
    ) -> Query:
        parts = [fill(policy.retrieval, request.context, top_values, "retrieval")]
        for rule in policy.rules:
            if rule.action == "filter":
                parts.append(fill(rule.query, request.context, top_values, rule.name))
        if request.filter is not None:
            try:
                self.system.index.check(request.filter)
            except QueryError as exc:
                raise RequestError(f"filter: {exc}") from None
            parts.append(request.filter)
        parts = [p for p in parts if p != EVERYTHING]
        if not parts:
            return EVERYTHING
        return parts[0] if len(parts) == 1 else AllOf(tuple(parts))

    @staticmethod
    def _rules(
        policy: Surface, request: RecommendRequest, top_values: Mapping[str, list[str]]
    ) -> list[tuple[str, str, Query, float]]:
        """The boost and bury rules, filled; one whose placeholders are all unfilled is skipped."""
        rules: list[tuple[str, str, Query, float]] = []
        for rule in policy.rules:
            if rule.action != "filter":
                query = fill(rule.query, request.context, top_values, rule.name)
                if query != EVERYTHING:
                    rules.append((rule.name, rule.action, query, rule.weight))
        return rules

    def _user_vector(
        self,
        serving: ServingModel,
        index: Index,
        user_id: str,
        affinity: Mapping[str, float],
        engaged: tuple[npt.NDArray[np.uint32], npt.NDArray[np.float64]],
    ) -> npt.NDArray[np.float32]:
        """The user folded in from live state: features, plus the items just engaged with.

        The LightFM representation from the user's identity (if trained) and
        current favourite terms, plus ``RECENT_ITEMS_WEIGHT`` times the
        weighted mean embedding of their latest engagements
        (:func:`stages.recent_engagements`), scaled to the same length.
        """
        u, _ = serving.model.user_representation(user_id, affinity)
        docs, weights = engaged
        if not RECENT_ITEMS_WEIGHT or not len(docs):
            return u
        serving = self._ensure_rows(serving, index, np.unique(docs))
        return stages.fold_in(u, serving.vectors[docs], weights, RECENT_ITEMS_WEIGHT)

    @staticmethod
    def _excluded(index: Index, state: UserState, policy: Surface) -> BitMap:
        # Every item of the user's whole history (cached in the state, brought up to
        # date here); on a surface that allows repeats, only their latest dismissals.
        return user.excluded_docs(state, index.doc_of, dismissed_only=policy.allow_repeats)

    def _ensure_rows(
        self, serving: ServingModel, index: Index, docs: npt.NDArray[np.uint32]
    ) -> ServingModel:
        """:func:`ensure_rows`, keeping a grown copy as the model served."""
        grown = ensure_rows(serving, index, docs)
        served = self._serving
        if grown is not serving and served is not None and served.model is serving.model:
            self._serving = grown
        return grown

    async def _job(self, policy: Surface, request: RecommendRequest) -> ItemState | None:
        """The job a request on a two-sided surface is about; ``None`` on other surfaces.

        A checkpoint on a two-sided surface (asks the job's actor).

        Raises:
            RequestError: the context does not name the job.
        """
        if policy.reciprocal is None:
            return None
        job = request.context.get(policy.reciprocal.job)
        if not isinstance(job, str) or not job:
            raise RequestError(
                f"surface {policy.name!r} is two-sided: context.{policy.reciprocal.job} must "
                "name the job item"
            )
        return await self.system.get_item(job)

    async def _reciprocal(
        self,
        policy: Surface,
        job: ItemState,
        docs: npt.NDArray[np.uint32],
        score: npt.NDArray[np.float64],
        now: float,
    ) -> tuple[npt.NDArray[np.float64], dict[int, dict[str, float]]]:
        """Replace the best candidates' scores by their two-sided score (:func:`stages.reciprocal`).

        The policy's ``fit`` times how well a supplier's terms fit the job's
        (:func:`stages.job_fit`), plus the harmonic mean of the consumer's
        interest (the score's percentile) and the supplier's willingness (their
        accept/decline history on the job's terms, the prior without any).
        The ``RECIPROCAL_DEPTH * k`` considered are the first by
        :func:`stages.job_led`. A checkpoint (asks the suppliers' actors).
        """
        reciprocal = policy.reciprocal
        assert reciprocal is not None
        index = self.system.index
        job_terms = [
            user.term_key(field, value) for field, values in job.terms.items() for value in values
        ]
        fit = stages.job_fit(index, docs, job.terms) if reciprocal.fit else None
        depth = RECIPROCAL_DEPTH * max(policy.k, 10)
        top = stages.job_led(docs, score, fit, reciprocal.fit)[:depth]
        interest = stages.interest(score[top])  # the percentile among the considered
        suppliers = await self.system.get_users(index_ids(index, docs[top]))
        affinities = [_affinity_of(s, job_terms, now) for s in suppliers]
        willing = stages.willingness(affinities, job_terms, reciprocal)
        combined = stages.reciprocal(
            interest, willing, None if fit is None else fit[top], reciprocal.fit
        )
        # Candidates beyond the considered ones rank below every considered one.
        out = np.full(len(docs), -1.0)
        out[top] = combined
        details = {
            int(p): {"interest": float(i), "willingness": float(w)}
            for p, i, w in zip(top.tolist(), interest, willing, strict=True)
        }
        if fit is not None:
            for p in details:
                details[p]["fit"] = float(fit[p])
        return out, details

    def _reasons(
        self,
        index: Index,
        docs: npt.NDArray[np.uint32],
        p: int,
        scored: stages.Scored,
        favourites: Sequence[tuple[str, str, float]],
        effects: Mapping[int, list[str]],
        notes: Mapping[int, str],
        explored: stages.Explored,
        two_sided: Mapping[int, Mapping[str, float]],
    ) -> dict[str, Any]:
        document = index.document(int(docs[p]))
        terms = {} if document is None else document[1]
        liked = {(f, v) for f, v, _ in favourites}
        reasons: dict[str, Any] = {
            "parts": {name: round(float(part[p]), 4) for name, part in scored.parts.items()},
            "matched": sorted(
                f"{field}={value}"
                for field, values in terms.items()
                for value in values
                if (field, value) in liked
            ),
            "rules": list(effects.get(p, [])),
        }
        if p in notes:
            reasons["diversity"] = notes[p]
        if p in explored.draws:
            reasons["exploration"] = {
                "slot": "explore",
                "draw": round(explored.draws[p], 4),
                "propensity": explored.propensity[p],
            }
        else:
            reasons["exploration"] = {"slot": "exploit", "propensity": 1.0}
        if p in two_sided:
            # interest and willingness; fit (of the supplier's terms to the job's) when it counts
            reasons["reciprocal"] = {name: round(v, 4) for name, v in two_sided[p].items()}
        return reasons

    def statistics(self) -> RankerStatistics:
        written = kept = 0
        if self.decisions is not None:
            s = self.decisions.statistics()
            written, kept = s.written, s.kept
        return RankerStatistics(
            requests=self._requests,
            model=None if self._serving is None else self._serving.model.version,
            model_swaps=self._swaps,
            model_failures=self._failures,
            decisions_written=written,
            decisions_kept=kept,
            decisions_lost=self._decisions_lost,
        )


def index_ids(index: Index, docs: npt.NDArray[np.uint32]) -> list[str]:
    return index.external(docs.tolist())


def _top_values(favourites: Sequence[tuple[str, str, float]]) -> dict[str, list[str]]:
    """Per term field, the user's favourite values (for ``$user.top.FIELD``), best first."""
    top: dict[str, list[str]] = {}
    for field, value, _ in favourites:
        values = top.setdefault(field, [])
        if len(values) < TOP_VALUES:
            values.append(value)
    return top


def _affinity_of(state: UserState, terms: Sequence[str], now: float) -> dict[str, float]:
    masses = state.affinity
    return {t: decay.value_at(masses[t], state.landmark, now) for t in terms if t in masses}


def _job_led(
    index: Index, policy: Surface, query: Query, job: ItemState, exclude: BitMap, k: int
) -> Query:
    """The retrieval query narrowed to suppliers carrying the job's terms while ``k`` remain.

    See :func:`stages.job_query`; unchanged when the policy's ``fit`` is 0.
    """
    assert policy.reciprocal is not None
    if not policy.reciprocal.fit or not job.terms:
        return query
    try:
        return stages.job_query(index, query, job.terms, exclude=exclude, at_least=k)
    except QueryError:
        return query  # an unknown field: retrieval reports it


def _values_of(index: Index, docs: npt.NDArray[np.uint32], field: str | None) -> Any:
    def values_of(p: int) -> Sequence[str]:
        if field is None:
            return ()
        document = index.document(int(docs[p]))
        return () if document is None else tuple(document[1].get(field, ()))

    return values_of


def _among(index: Index, docs: stages.Docs, item: str) -> bool:
    """Whether ``item`` is one of ``docs`` (sorted internal ids)."""
    doc = index.doc_of(item)
    if doc is None or not len(docs):
        return False
    at = int(np.searchsorted(docs, doc))
    return at < len(docs) and int(docs[at]) == doc


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


@asynccontextmanager
async def open_ranker(
    system: ActorSystem,
    surfaces: Surfaces | None = None,
    *,
    data_dir: Path | None = None,
    decisions: DecisionLog | None = None,
    poll_s: float = DEFAULT_POLL_S,
    require_model: bool = False,
) -> AsyncIterator[RankerActor]:
    """Run a ranker over ``system`` for the block: current model loaded, watcher and log running.

    On exit the queued decisions are written before it returns.

    Raises:
        ModelError: with ``require_model``, the current model does not load.
    """
    ranker = RankerActor(
        system,
        surfaces,
        data_dir=data_dir,
        decisions=decisions,
        poll_s=poll_s,
        require_model=require_model,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(ranker.run)
        try:
            yield ranker
        finally:
            with trio.CancelScope(shield=True):
                await ranker.aclose()
