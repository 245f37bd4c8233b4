"""RankerActor: answers ``recommend`` from live state, the current model and the surface policies.

It owns the model being served (hot-swapped when ``matchlight train``
writes a new artifact) and the decision log writer. Requests run
concurrently on their callers' tasks, as the stages of :mod:`ranker.pipeline`:

1. *gather* — read the user's live state (straight from an active
   UserActor, past its mailbox, so reads never queue behind writes;
   otherwise one round trip that activates it) and, on a two-sided surface,
   the job's; everything ranking needs is copied out before the next
   checkpoint;
2. *retrieve, score, apply rules* — fill the surface's retrieval template
   from the request's context and the user's favourite terms, AND the
   request's ``filter`` and the surface's filter rules → retrieve up to
   ``candidates`` items, without those the user already interacted with (or
   only dismissed ones, if the surface allows repeats) → score (LightFM with
   the user folded in from live state, blended with popularity, recency and
   affinity; a heuristic blend while no model exists) → boost/bury rules;
3. on a reciprocal surface, ask the suppliers' actors and score two-sided:
   the job's fit and the suppliers' willingness (:mod:`ranker.two_sided`;
   the job's terms also narrow retrieval there);
4. *rerank* — diversity → exploration → the top ``k`` (on a stochastic surface,
   diversity → a Plackett-Luce draw, see :mod:`ranker.stochastic`);

and then hand the decision to the log writer through a bounded channel.

Use :func:`open_ranker`.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import trio
from opentelemetry import trace

from actors import ActorSystem, ItemState, RateLimitedLog
from index import unparse
from ranker import pipeline, stages
from ranker.decisions import DecisionLog
from ranker.errors import ModelError, RequestError
from ranker.model import Model, current_version, load_model
from ranker.pipeline import Candidates, Live, Recommendation, RecommendRequest, Reranked, Tiers
from ranker.policy import Surface, Surfaces
from ranker.serving import ServingModel, serving_model

log = logging.getLogger(__name__)
#: The process's OpenTelemetry tracer (a no-op until the server sets a provider).
_TRACER = trace.get_tracer("matchlight.ranker")

DEFAULT_POLL_S: Final = 2.0
#: Decisions waiting for the writer; a full queue makes requests wait (backpressure).
DECISION_QUEUE: Final = 10_000
DECISION_BATCH: Final = 4096


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

        The stages of :mod:`ranker.pipeline`: :meth:`_gather` (every read of the
        user's live state, then nothing of it is read again) → :meth:`_candidates`
        (retrieve, score, rules; no awaits) → on a two-sided surface,
        :meth:`_two_sided` (asks the suppliers' actors) → rerank → the items,
        and the decision queued for the log.

        Raises:
            RequestError: the request's filter names an unknown field, or a
                context value does not fit the surface's template.
        """
        started = time.perf_counter()
        request_id = uuid.uuid4().hex
        policy = self.surfaces.get(request.surface)
        k = request.k or policy.k
        system = self.system
        index = system.index
        live = await self._gather(policy, request)
        # What the ranking reads from here on is the projections as of this log position
        # (and the popular tiers as of theirs): recorded, so `matchlight explain` can
        # rebuild them.
        seq, applying = system.observed_seq, system.applying
        tiers = self._popular.get(index, system.signals, time.monotonic(), seq)
        replay: dict[str, Any] = {
            "log_seq": seq,
            "now": live.now,
            "config": self.surfaces.digest,
            # Past 4,096 items; and, rarely, what makes a replay inexact (see ranker.replay).
            **({"tiers_seq": self._popular.seq} if tiers else {}),
            **({"applying": True} if applying else {}),
        }
        candidates, served = self._candidates(policy, request, k, live, tiers)
        if live.job is not None and len(candidates.docs):
            # The one checkpoint between the ranking stages. The user's state was copied
            # into ``live`` before it; the index and item signals may move on meanwhile,
            # and the stages after it read them as they are then.
            candidates = await self._two_sided(policy, live.job, candidates, live.now)
            if system.observed_seq != seq or system.applying:
                replay["moved"] = True
        with _TRACER.start_as_current_span("ranker.rerank"):
            reranked = pipeline.rerank(index, policy, request, k, candidates, served, live.seq)
        result = pipeline.recommendation(
            index, policy, request, candidates, served, live, reranked, request_id
        )
        self._requests += 1
        await self._record(
            _decision(
                request,
                result,
                reranked,
                started,
                replay=replay,
            )
        )
        return result

    async def _gather(self, policy: Surface, request: RecommendRequest) -> Live:
        """Read what the request needs from live state: every await before ranking starts.

        A checkpoint (asks the job's actor on a two-sided surface, and the
        user's actor if it is not active).

        Raises:
            RequestError: on a two-sided surface, the context does not name the job.
        """
        system = self.system
        # On a two-sided surface, the job the request is about (asked before the user's view).
        job = await self._job(policy, request)
        state = await system.get_user_view(request.user)
        # The view is only valid until the next checkpoint: everything is taken from it
        # here, without awaiting, and the state itself does not leave this method.
        # The stream's clock, but never ahead of the wall clock by more than the allowed
        # skew (a log written before event times were checked may hold later stamps).
        clock = min(system.signals.clock, time.time() + system.config.clock_skew_s)
        return pipeline.live(
            system.index,
            system.cooccurrence,
            state,
            policy,
            now=max(clock, state.updated),
            serving=self._serving,
            job=job,
        )

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

    def _candidates(
        self, policy: Surface, request: RecommendRequest, k: int, live: Live, tiers: Tiers
    ) -> tuple[Candidates, ServingModel | None]:
        """:func:`pipeline.candidates`, keeping a grown copy of the model as the one served.

        Not a checkpoint.

        Raises:
            RequestError: the request's filter names an unknown field, or a
                context value does not fit the surface's template.
        """
        system = self.system
        found, served = pipeline.candidates(
            system.index, system.signals, tiers, policy, request, k, live
        )
        current = self._serving
        if (
            served is not live.serving
            and served is not None
            and current is not None
            and current.model is served.model
        ):
            self._serving = served
        return found, served

    async def _two_sided(
        self, policy: Surface, job: ItemState, candidates: Candidates, now: float
    ) -> Candidates:
        """The candidates with the best ones' scores replaced by their two-sided score.

        See :mod:`ranker.two_sided`. A checkpoint (asks the suppliers' actors).
        """
        chosen, ids = pipeline.considered(self.system.index, policy, job, candidates)
        suppliers = await self.system.get_users(ids)
        return pipeline.with_two_sided(policy, candidates, chosen, suppliers, now)

    async def _record(self, decision: dict[str, Any]) -> None:
        """Queue a decision for the log (waits while the queue is full: backpressure)."""
        try:
            await self._send.send(decision)
        except trio.ClosedResourceError:  # a request finishing while the ranker shuts down
            self._decisions_lost += 1
            log.warning("decision %s not recorded: the ranker is closing", decision["request_id"])

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


def _decision(
    request: RecommendRequest,
    result: Recommendation,
    reranked: Reranked,
    started: float,
    *,
    replay: dict[str, Any],
) -> dict[str, Any]:
    """The decision log's record of a response (``started``: its ``perf_counter`` start).

    ``replay`` is what :mod:`ranker.replay` needs besides the request to rebuild it: the
    log position and clock the ranking read, the surfaces config's digest and the
    position of the popular tiers it used (if any); and ``applying`` if a commit was
    still being applied as it read, ``moved`` if the log moved on while a two-sided
    request asked the suppliers' actors (a replay may then differ). The request's
    ``k``, ``context`` and ``filter`` are kept only when given, and ``shown: False``
    only for an answer the user is not shown as it is (a shadow, an interleaved side).
    """
    explored = reranked.explored
    asked: dict[str, Any] = {}
    if request.k is not None:
        asked["k"] = request.k
    if request.context:
        asked["context"] = dict(request.context)
    if request.filter is not None:
        asked["filter"] = unparse(request.filter)
    if not request.shown:
        asked["shown"] = False
    return {
        "request_id": result.request_id,
        "ts": time.time(),
        "surface": result.surface,
        "requested_surface": request.surface,
        "user": request.user,
        **asked,
        "items": [item["id"] for item in result.items],
        "scores": [item["score"] for item in result.items],
        "propensities": [explored.propensity[p] for p in explored.positions],
        "model": result.model,
        "source": "realtime",
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        **replay,
    } | _slate_propensities(reranked)


def _slate_propensities(reranked: Reranked) -> dict[str, Any]:
    """On a stochastic surface, each slot's exact ``P(item at slot)`` (over every prefix) and
    ``P(item at slot | the slots before)``; nothing on other surfaces."""
    if reranked.slate is None:
        return {}
    return {
        "position_propensities": reranked.slate.marginal,
        "conditional_propensities": reranked.slate.conditional,
    }


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
