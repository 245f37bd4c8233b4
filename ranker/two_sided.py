"""Two-sided matching: suppliers ranked by the consumer's interest and their own willingness.

On a reciprocal surface (:class:`~ranker.policy.Reciprocal`) a request is
about a job (an item named in its context), and the candidates are
suppliers. Retrieval is narrowed to the suppliers carrying the job's terms
while enough remain (:func:`narrowed_query`); after scoring, the best
:data:`RECIPROCAL_DEPTH` times ``k`` candidates (:func:`consider`) get a
two-sided score from the consumer's interest and the suppliers' willingness,
read from their accept/decline history (:func:`two_sided_scores`). Pure
functions, no Trio and no I/O: :class:`~ranker.actor.RankerActor` fetches
the job's and the suppliers' states between them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Final

import attrs
import numpy as np
import numpy.typing as npt
from pyroaring import BitMap

from actors import ItemState, UserState, decay, user
from index import AllOf, AnyOf, Index, Query, QueryError, Term, to_bitmap
from ranker import stages
from ranker.policy import Reciprocal, Surface
from ranker.stages import Docs, Floats

#: On a reciprocal surface, suppliers' willingness is computed for this many times k.
RECIPROCAL_DEPTH: Final = 10


def willingness(
    affinities: Sequence[Mapping[str, float]], job_terms: Sequence[str], policy: Reciprocal
) -> Floats:
    """Each supplier's probability of wanting a job with ``job_terms`` (``field=value`` keys).

    The logistic of the prior's log-odds plus ``strength`` times the mean of
    the supplier's time-decayed affinity over the job's terms: accepting jobs
    with those terms raises it, declining them lowers it, and a supplier
    without history gets the prior.
    """
    prior = math.log(policy.prior / (1.0 - policy.prior))
    out = np.empty(len(affinities))
    n = max(len(job_terms), 1)
    for i, affinity in enumerate(affinities):
        evidence = sum(affinity.get(term, 0.0) for term in job_terms) / n
        out[i] = prior + policy.strength * evidence
    return 1.0 / (1.0 + np.exp(-out))


def interest(score: Floats) -> Floats:
    """The consumer's interest as the score's percentile among the candidates, in (0, 1]."""
    n = len(score)
    if n == 0:
        return score
    ranks = np.empty(n)
    ranks[np.argsort(score, kind="stable")] = np.arange(1, n + 1)
    return ranks / n


def harmonic_mean(a: Floats, b: Floats) -> Floats:
    total = a + b
    return np.where(total > 0, 2.0 * a * b / np.where(total > 0, total, 1.0), 0.0)


def reciprocal(
    interest: Floats, willingness: Floats, fit: Floats | None = None, weight: float = 0.0
) -> Floats:
    """The two-sided score: ``weight * fit`` plus the harmonic mean of interest and willingness.

    Fit (:func:`job_fit`) and the harmonic mean both lie in [0, 1]: at
    ``weight`` 1 or more, a supplier fitting the job fully ranks above one
    fitting it not at all, whatever their interest and willingness, as when
    retrieval kept only those carrying the job's terms (:func:`job_query`).
    """
    both = harmonic_mean(interest, willingness)
    if fit is None or not weight:
        return both
    out: Floats = both + weight * fit
    return out


def job_led(docs: Docs, score: Floats, fit: Floats | None, weight: float) -> npt.NDArray[np.intp]:
    """Candidate positions best first by ``weight * fit`` plus the score's percentile.

    The score alone (as :func:`stages.ranked`) without ``fit``. At ``weight`` 1, a
    full fit comes before no fit whatever the scores, equal fits by score,
    and a partial fit is weighed against the score.
    """
    order = stages.ranked(docs, score)
    if fit is None or not weight or not len(fit) or fit.min() == fit.max():
        return order
    n = len(docs)
    percentile = np.empty(n)
    percentile[order] = np.arange(n, 0, -1) / n  # ties in score stay first seen first
    return stages.ranked(docs, weight * fit + percentile)


def _carrying(index: Index, field: str, values: Sequence[str]) -> BitMap:
    """The items carrying any of ``values`` under term field ``field``. Do not mutate it.

    For one value, the index's own postings (copying them would cost more than the rest).
    """
    if len(values) == 1:
        return index.term_postings(field, values[0])
    return BitMap.union(BitMap(), *(index.term_postings(field, v) for v in values))


def job_fit(index: Index, docs: Docs, job_terms: Mapping[str, Sequence[str]]) -> Floats:
    """How well each candidate's terms fit a job's terms (``field -> values``), in [0, 1].

    The weighted share of the job's term fields on which the candidate
    carries one of the job's values. A field weighs ``log(n / m)`` when ``m``
    of the ``n`` candidates match it: a rare match (the job's category)
    counts more than a common one, and a field every candidate matches (the
    city the surface already filters on), or none does (a field only jobs
    have), weighs nothing. All ones when no field tells the candidates apart.
    """
    n = len(docs)
    total = np.zeros(n)
    if n == 0 or not job_terms:
        return np.ones(n)
    within = to_bitmap(docs)
    weights = 0.0
    for field, values in job_terms.items():
        hits = _carrying(index, field, values) & within
        if 0 < len(hits) < n:
            weight = math.log(n / len(hits))
            total[np.searchsorted(docs, stages.to_docs(hits))] += weight
            weights += weight
    if not weights:
        return np.ones(n)
    out: Floats = total / weights
    return out


def job_query(
    index: Index,
    query: Query,
    job_terms: Mapping[str, Sequence[str]],
    *,
    exclude: BitMap,
    at_least: int,
) -> Query:
    """``query`` narrowed to the items carrying the job's terms, while ``at_least`` remain.

    The job's fields are tried rarest match first; each one that keeps at
    least ``at_least`` matches (not in ``exclude``) joins the query as
    ``any`` of the job's values for it, the others are left out. With too few
    matches on every field, ``query`` itself (every supplier, ranked by
    :func:`job_fit` then).

    Raises:
        QueryError: ``query`` names a field the index does not have.
    """
    matches = index.match(query)
    if exclude:
        matches -= exclude
    carrying = {f: _carrying(index, f, values) for f, values in job_terms.items() if values}
    narrowed: list[Query] = []
    for field in sorted(carrying, key=lambda f: matches.intersection_cardinality(carrying[f])):
        kept = matches & carrying[field]
        if at_least <= len(kept) < len(matches):
            matches = kept
            terms = tuple(Term(field, v) for v in sorted(job_terms[field]))
            narrowed.append(terms[0] if len(terms) == 1 else AnyOf(terms))
    return AllOf((query, *narrowed)) if narrowed else query


def narrowed_query(
    index: Index, policy: Surface, query: Query, job: ItemState, exclude: BitMap, k: int
) -> Query:
    """The retrieval query narrowed to suppliers carrying the job's terms while ``k`` remain.

    See :func:`job_query`; unchanged when the policy's ``fit`` is 0.
    """
    assert policy.reciprocal is not None
    if not policy.reciprocal.fit or not job.terms:
        return query
    try:
        return job_query(index, query, job.terms, exclude=exclude, at_least=k)
    except QueryError:
        return query  # an unknown field: retrieval reports it


@attrs.frozen(kw_only=True)
class Considered:
    """The candidates a two-sided score is computed for, and what is known before asking
    their suppliers' actors."""

    #: The considered candidates' positions, the first by :func:`job_led`.
    top: npt.NDArray[np.intp]
    #: The job's terms as ``field=value`` keys.
    job_terms: list[str]
    #: Each considered candidate's score percentile among the considered.
    interest: Floats
    #: Every candidate's fit to the job (:func:`job_fit`); ``None`` when it does not count.
    fit: Floats | None


def consider(
    index: Index, policy: Surface, job: ItemState, docs: Docs, score: Floats
) -> Considered:
    """The ``RECIPROCAL_DEPTH * k`` candidates to score two-sided: the first by :func:`job_led`."""
    reciprocal = policy.reciprocal
    assert reciprocal is not None
    fit = job_fit(index, docs, job.terms) if reciprocal.fit else None
    depth = RECIPROCAL_DEPTH * max(policy.k, 10)
    top = job_led(docs, score, fit, reciprocal.fit)[:depth]
    return Considered(
        top=top,
        job_terms=[
            user.term_key(field, value) for field, values in job.terms.items() for value in values
        ],
        interest=interest(score[top]),  # the percentile among the considered
        fit=fit,
    )


def two_sided_scores(
    considered: Considered,
    suppliers: Sequence[UserState],
    policy: Reciprocal,
    candidates: int,
    now: float,
) -> tuple[Floats, dict[int, dict[str, float]]]:
    """Every candidate's two-sided score (:func:`reciprocal`), and its parts per position.

    ``suppliers`` are the considered candidates' states, in order. The
    policy's ``fit`` times how well a supplier's terms fit the job's, plus
    the harmonic mean of the consumer's interest and the supplier's
    willingness (their accept/decline history on the job's terms, the prior
    without any). Candidates beyond the considered ones score -1, below
    every considered one.
    """
    job_terms, top, fit = considered.job_terms, considered.top, considered.fit
    affinities = [_affinity_of(s, job_terms, now) for s in suppliers]
    willing = willingness(affinities, job_terms, policy)
    combined = reciprocal(
        considered.interest, willing, None if fit is None else fit[top], policy.fit
    )
    out = np.full(candidates, -1.0)
    out[top] = combined
    details = {
        int(p): {"interest": float(i), "willingness": float(w)}
        for p, i, w in zip(top.tolist(), considered.interest, willing, strict=True)
    }
    if fit is not None:
        for p in details:
            details[p]["fit"] = float(fit[p])
    return out, details


def _affinity_of(state: UserState, terms: Sequence[str], now: float) -> dict[str, float]:
    masses = state.affinity
    return {t: decay.value_at(masses[t], state.landmark, now) for t in terms if t in masses}
