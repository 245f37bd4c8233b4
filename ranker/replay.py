"""Replaying the log to rank again as the server did: what ``matchlight explain`` runs on.

:class:`Replay` keeps the server's projections of a log (:class:`actors.Projections`)
as of a position that only moves forward (:meth:`Replay.advance_to`), and
ranks a request there with the ranker's own stages (:mod:`ranker.pipeline`,
in :class:`~ranker.actor.RankerActor`'s order), given what a decision record
says the ranking read besides the log: the ranking's clock, the popular tiers
(:meth:`Replay.popular_tiers` at their position), the surfaces config and the
model. One pass can serve many decisions in log order (advance, rank, advance
further), which is how a candidate config can be evaluated over a decision log.

:func:`rebuild` does it for one decision record; :func:`compare` says how the
list it gives differs from the one served. Blocking, no Trio.

A decision records the log position its process had *dispatched* to its
projections when it read them. With a commit still being applied at that
moment (a server under ingest), an entity could lag behind that position; on a
two-sided surface the log may move on while the suppliers' actors are asked.
The record says so (``applying``, ``moved``; :func:`caveats`), and the replay
may then differ in what those events changed.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
from pyroaring import BitMap

from actors import EventStore, Projections
from index import parse
from ranker import pipeline, stages
from ranker.configs import config_at
from ranker.errors import ReplayError
from ranker.model import Model, load_model
from ranker.pipeline import Candidates, Live, Recommendation, RecommendRequest, Reranked, Tiers
from ranker.policy import Surface, Surfaces
from ranker.serving import ServingModel, serving_model
from ranker.stages import Floats

READ_PAGE: Final = 10_000
#: What a decision record must hold to be replayed (older records lack them).
REPLAY_FIELDS: Final = ("log_seq", "now", "config")


class Replay:
    """The projections of ``store``'s log as of :attr:`seq` (0: nothing applied yet).

    ``tiers_at``: the positions whose popular tiers will be wanted (the decisions'
    ``tiers_seq``); passing one, :meth:`advance_to` computes and keeps them, so a
    pass over many decisions can still give a decision tiers from behind its position.
    """

    def __init__(self, store: EventStore, *, tiers_at: Iterable[int] = ()) -> None:
        self.store = store
        self.projections = Projections()
        self.seq = 0
        self._serving: dict[str, ServingModel] = {}
        self._wanted = sorted(set(tiers_at), reverse=True)
        self._tiers: dict[int, list[BitMap]] = {}

    def advance_to(self, seq: int) -> None:
        """Apply the log's events up to ``seq``. Blocking.

        Raises:
            ReplayError: ``seq`` is behind :attr:`seq` or beyond the log's end.
            StoreError: the store cannot be read.
            CodecError: an event cannot be decoded.
        """
        if seq < self.seq:
            raise ReplayError(f"the replay is at log position {self.seq}, past {seq}")
        while self._wanted and self._wanted[-1] <= seq:
            self._apply_until(self._wanted.pop())
            self._tiers[self.seq] = self._compute_tiers()
        self._apply_until(seq)

    def _apply_until(self, seq: int) -> None:
        apply = self.projections.apply
        while self.seq < seq:
            page = self.store.read_all(after=self.seq, limit=min(READ_PAGE, seq - self.seq))
            if not page:
                raise ReplayError(f"the log ends at position {self.seq}, before {seq}")
            for stored in page:
                apply(stored)
            self.seq = page[-1].seq

    def popular_tiers(self, seq: int) -> list[BitMap]:
        """The popular tiers (:func:`stages.popular_tiers`) as of ``seq``: advances there if
        it lies ahead. Blocking.

        Raises:
            ReplayError: ``seq`` is behind :attr:`seq` and was not in ``tiers_at``.
        """
        kept = self._tiers.get(seq)
        if kept is not None:
            return kept
        self.advance_to(seq)
        return self._tiers.get(seq) or self._compute_tiers()

    def _compute_tiers(self) -> list[BitMap]:
        return stages.popular_tiers(self.projections.index, self.projections.signals)

    def serving(self, model: Model) -> ServingModel:
        """``model`` as served over the index now (item rows are filled when used, from the
        items' terms then, as the ranker fills them)."""
        served = self._serving.get(model.version)
        if served is None:
            index = self.projections.index
            served = serving_model(model, index, index.statistics().ids)
            self._serving[model.version] = served
        return served

    def recommend(
        self,
        request: RecommendRequest,
        surfaces: Surfaces,
        serving: ServingModel | None,
        *,
        now: float,
        tiers: Tiers,
        request_id: str,
    ) -> tuple[Recommendation, Reranked]:
        """Rank ``request`` as :meth:`ranker.RankerActor.recommend` does, on the projections
        as of :attr:`seq`, at the ranking clock ``now``, looking in ``tiers`` first.

        Raises:
            RequestError: as ``recommend`` would have.
        """
        index = self.projections.index
        policy, k, live, candidates, served = self._candidates(
            request, surfaces, serving, now=now, tiers=tiers
        )
        reranked = pipeline.rerank(index, policy, request, k, candidates, served, live.seq)
        result = pipeline.recommendation(
            index, policy, request, candidates, served, live, reranked, request_id
        )
        return result, reranked

    def slot_probabilities(
        self,
        request: RecommendRequest,
        surfaces: Surfaces,
        serving: ServingModel | None,
        *,
        now: float,
        tiers: Tiers,
    ) -> dict[str, Floats]:
        """Each item ``surfaces``' policy could serve for ``request`` here, with its probability
        at each of the request's slots (:func:`ranker.pipeline.slot_marginals`): what an
        off-policy estimate weighs a logged slate by. Draws nothing.

        Raises:
            RequestError: as ``recommend`` would have.
            ValueError: the policy explores (its probabilities are estimated, not exact).
        """
        index = self.projections.index
        policy, k, _, candidates, served = self._candidates(
            request, surfaces, serving, now=now, tiers=tiers
        )
        marginals = pipeline.slot_marginals(index, policy, k, candidates, served)
        ids = index.external(candidates.docs[list(marginals.positions)].tolist())
        return dict(zip(ids, marginals.probability, strict=True))

    def _candidates(
        self,
        request: RecommendRequest,
        surfaces: Surfaces,
        serving: ServingModel | None,
        *,
        now: float,
        tiers: Tiers,
    ) -> tuple[Surface, int, Live, Candidates, ServingModel | None]:
        """The stages before the rerank: the policy, ``k``, the live state read, the scored
        candidates (two-sided on a reciprocal surface) and the model that scored them."""
        p = self.projections
        index, signals = p.index, p.signals
        policy = surfaces.get(request.surface)
        k = request.k or policy.k
        job = None
        if policy.reciprocal is not None:
            job_id = request.context.get(policy.reciprocal.job)
            job = p.item(job_id) if isinstance(job_id, str) and job_id else None
        state = p.user(request.user)
        live = pipeline.live(
            index, p.cooccurrence, state, policy, now=now, serving=serving, job=job
        )
        candidates, served = pipeline.candidates(index, signals, tiers, policy, request, k, live)
        if job is not None and len(candidates.docs):
            chosen, ids = pipeline.considered(index, policy, job, candidates)
            suppliers = [p.user(supplier) for supplier in ids]
            candidates = pipeline.with_two_sided(policy, candidates, chosen, suppliers, now)
        return policy, k, live, candidates, served


def request_of(record: Mapping[str, Any]) -> RecommendRequest:
    """The request a decision record answered (explained, so the items carry reasons)."""
    raw_filter = record.get("filter")
    return RecommendRequest(
        user=record["user"],
        surface=record["requested_surface"],
        k=record.get("k"),
        context=record.get("context") or {},
        filter=None if raw_filter is None else parse(raw_filter),
        explain=True,
    )


def rebuild(
    data: str | os.PathLike[str], record: Mapping[str, Any], replay: Replay
) -> Recommendation:
    """Rank a decision again: ``replay`` (of ``data``'s log, not past the decision's
    position, and told of its ``tiers_seq`` if it is) is advanced to it, with the config
    and model it was ranked under. Blocking.

    Raises:
        ReplayError: the record lacks what a replay needs, or the log is too short.
        ConfigError: its surfaces config is not kept in ``data``.
        ModelError: its model's artifact is gone or does not load.
    """
    missing = [name for name in REPLAY_FIELDS if name not in record]
    if missing:
        raise ReplayError(
            f"decision {record.get('request_id')} was recorded without {', '.join(missing)} "
            "(by a server from before decisions kept what a replay needs)"
        )
    surfaces = config_at(data, record["config"])
    version = record.get("model")
    model = None if version is None else load_model(Path(data), version)
    tiers: Sequence[BitMap] = []
    if "tiers_seq" in record:
        tiers = replay.popular_tiers(record["tiers_seq"])
    replay.advance_to(record["log_seq"])
    result, _ = replay.recommend(
        request_of(record),
        surfaces,
        None if model is None else replay.serving(model),
        now=record["now"],
        tiers=tiers,
        request_id=record["request_id"],
    )
    return result


def caveats(record: Mapping[str, Any]) -> list[str]:
    """Why a replay of ``record`` may not be exact, in words (none: it is)."""
    out = []
    if record.get("applying"):
        out.append(
            "a commit was still being applied when it read the state, so an entity may "
            f"have lagged log position {record['log_seq']}"
        )
    if record.get("moved"):
        out.append("the log moved on while it asked the suppliers (two-sided)")
    return out


@attrs.frozen(kw_only=True)
class Difference:
    """How a replayed list differs from the one served, position by position."""

    #: ``(position, served id or None, served score, replayed id or None, replayed score)``
    #: for every position that differs in item or score.
    positions: tuple[tuple[int, str | None, float | None, str | None, float | None], ...]

    @property
    def identical(self) -> bool:
        return not self.positions


def compare(record: Mapping[str, Any], result: Recommendation) -> Difference:
    """Position by position, the served items and scores against the replayed ones."""
    served = list(zip(record["items"], record["scores"], strict=True))
    replayed = [(item["id"], item["score"]) for item in result.items]
    out = []
    for n in range(max(len(served), len(replayed))):
        a = served[n] if n < len(served) else (None, None)
        b = replayed[n] if n < len(replayed) else (None, None)
        if a != b:
            out.append((n + 1, a[0], a[1], b[0], b[1]))
    return Difference(positions=tuple(out))
