"""Comparison metrics for shadow reads: how alike are two ranked lists, and is that alike enough?

Pure functions, no I/O. A *ranking* is a sequence of hashable item ids, best
first. Rankings are meant to be free of ties and repeats; should an id repeat,
every function here keeps its first occurrence only (a repeat adds nothing a
user would see).

- :func:`overlap_at_k`, :func:`jaccard_at_k`: set agreement of the top k.
- :func:`rbo`, :func:`rbo_min`: rank-biased overlap (Webber, Moffat & Zobel,
  "A similarity measure for indefinite rankings", ACM TOIS 28(4), 2010),
  top-weighted and defined for lists of different lengths and contents.
- :func:`kendall_tau`: rank correlation of the items both lists contain.
- :func:`percentile`, :func:`summary`: distribution summaries.
- :func:`noise_floor`: RBO of the real-time path against itself (A/A), the
  normal run-to-run variation a real-time vs legacy difference is judged by.
- :class:`Thresholds`, :class:`SurfaceStats`, :func:`verdict`: "ready for
  canary", "investigate" or "not enough data" for one surface, with reasons.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Final

import attrs

DEFAULT_P: Final = 0.9

READY: Final = "ready for canary"
INVESTIGATE: Final = "investigate"
NOT_ENOUGH_DATA: Final = "not enough data"


def _distinct(ranking: Iterable[Hashable], limit: int | None = None) -> list[Hashable]:
    """The first occurrence of each id, in order, at most ``limit`` of them."""
    seen: set[Hashable] = set()
    out: list[Hashable] = []
    for item in ranking:
        if limit is not None and len(out) >= limit:
            break
        if item not in seen:
            seen.add(item)
            out.append(item)
    return out


def _check_k(k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")


def overlap_at_k(a: Sequence[Hashable], b: Sequence[Hashable], k: int) -> float:
    """Overlap@k: ``|top_k(a) ∩ top_k(b)| / k``, in [0, 1].

    ``top_k`` is the first ``k`` distinct ids. The divisor is ``k`` even when a
    list is shorter than ``k``: a list that comes up short *is* a difference a
    user sees (fewer slots filled alike), so two identical 3-item lists score
    0.3 at k = 10. Use :func:`jaccard_at_k` for agreement relative to what the
    lists hold.

    Raises:
        ValueError: ``k`` is below 1.
    """
    _check_k(k)
    return len(set(_distinct(a, k)) & set(_distinct(b, k))) / k


def jaccard_at_k(a: Sequence[Hashable], b: Sequence[Hashable], k: int) -> float:
    """Jaccard@k: ``|A & B| / |A | B|`` of the top-k sets ``A``, ``B``, in [0, 1].

    Intersection over union: agreement relative to what the two lists hold.
    1.0 when both are empty.

    Raises:
        ValueError: ``k`` is below 1.
    """
    _check_k(k)
    top_a, top_b = set(_distinct(a, k)), set(_distinct(b, k))
    union = top_a | top_b
    return len(top_a & top_b) / len(union) if union else 1.0


def _check_p(p: float) -> None:
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must lie strictly between 0 and 1, got {p}")


def _overlaps(a: Sequence[Hashable], b: Sequence[Hashable]) -> tuple[list[int], int, int]:
    """``X_d`` for d = 1..l (index d - 1), with ``s``, ``l`` the shorter and longer length.

    ``X_d = |S_{:d} ∩ L_{:d}|``, where past the end of the shorter list ``S``
    its prefix is the whole of ``S`` (Webber et al. 2010, section 4.2).
    """
    short, long_ = (a, b) if len(a) <= len(b) else (b, a)
    seen_short: set[Hashable] = set()
    seen_long: set[Hashable] = set()
    overlaps: list[int] = []
    x = 0
    for d in range(len(long_)):
        item_long = long_[d]
        if d < len(short):
            item_short = short[d]
            if item_short == item_long:
                x += 1
            else:
                x += (item_short in seen_long) + (item_long in seen_short)
            seen_short.add(item_short)
        else:
            x += item_long in seen_short
        seen_long.add(item_long)
        overlaps.append(x)
    return overlaps, len(short), len(long_)


def rbo(a: Sequence[Hashable], b: Sequence[Hashable], p: float = DEFAULT_P) -> float:
    """Extrapolated rank-biased overlap ``RBO_ext`` of two rankings, in [0, 1].

    Webber, Moffat & Zobel (2010), equation 32, which covers lists of uneven
    length. With ``S`` the shorter list (length ``s``), ``L`` the longer
    (length ``l``) and ``X_d`` the overlap of the depth-``d`` prefixes
    (``|S_{:d} ∩ L_{:d}|``, where ``S_{:d}`` is all of ``S`` once ``d > s``)::

        RBO_ext = (1-p)/p * ( sum_{d=1..l} X_d/d * p^d
                              + sum_{d=s+1..l} X_s * (d-s) / (s*d) * p^d )
                  + ( (X_l - X_s)/l + X_s/s ) * p^l

    It extrapolates the agreement seen at the end of the lists to all deeper
    ranks, so the point estimate lies between :func:`rbo_min` and ``RBO_max``.
    For lists of equal length ``k`` this is ``(1-p)/p * sum X_d/d p^d + X_k/k p^k``
    (equation 30). Identical lists score 1, disjoint lists 0, and a list that
    is a prefix of the other scores 1 (its unseen tail is assumed to keep
    agreeing). ``p`` sets the top-weighting: the first ``d`` ranks carry
    ``1 - p^(d-1) + (1-p)/p * d * (ln(1/(1-p)) - sum_{i<d} p^i / i)`` of the
    weight; at p = 0.9 the top 10 carry about 86%.

    Conventions for empty lists (undefined in the paper): two empty lists are
    identical (1.0); an empty list against a non-empty one shares nothing (0.0).

    Raises:
        ValueError: ``p`` is not strictly between 0 and 1.
    """
    _check_p(p)
    a, b = _distinct(a), _distinct(b)
    if not a or not b:
        return 1.0 if not a and not b else 0.0
    x, short, long_ = _overlaps(a, b)  # s and l in the formula
    x_s, x_l = x[short - 1], x[long_ - 1]
    total = sum(x[d - 1] / d * p**d for d in range(1, long_ + 1))
    total += sum(x_s * (d - short) / (short * d) * p**d for d in range(short + 1, long_ + 1))
    value = (1 - p) / p * total + ((x_l - x_s) / long_ + x_s / short) * p**long_
    return min(1.0, max(0.0, value))  # float rounding only


def rbo_min(a: Sequence[Hashable], b: Sequence[Hashable], p: float = DEFAULT_P) -> float:
    """The lower bound ``RBO_min``: the RBO if nothing past the seen ranks ever agrees.

    Webber et al. (2010), equation 11, evaluated at the depth ``l`` of the
    longer list with the uneven-length prefixes of :func:`rbo`::

        RBO_min = (1-p)/p * ( sum_{d=1..l} (X_d - X_l) * p^d / d  -  X_l * ln(1-p) )

    (``-ln(1-p) = sum_{d>=1} p^d/d`` is the weight of an agreement held at
    every depth). Always at most :func:`rbo`; below 1 even for identical
    finite lists, because their unseen continuations might differ. Empty
    lists follow :func:`rbo`'s conventions.

    Raises:
        ValueError: ``p`` is not strictly between 0 and 1.
    """
    _check_p(p)
    a, b = _distinct(a), _distinct(b)
    if not a or not b:
        return 1.0 if not a and not b else 0.0
    x, _, long_ = _overlaps(a, b)
    x_l = x[long_ - 1]
    total = sum((x[d - 1] - x_l) * p**d / d for d in range(1, long_ + 1))
    return min(1.0, max(0.0, (1 - p) / p * (total - x_l * math.log(1 - p))))


def kendall_tau(a: Sequence[Hashable], b: Sequence[Hashable]) -> float | None:
    """Kendall's tau of the items both rankings contain, in their relative orders; in [-1, 1].

    Over the ``n`` shared items, a pair is concordant when both lists order it
    the same way, discordant otherwise; ``tau = (C - D) / (n (n-1) / 2)``
    (Kendall 1938, tau-a; a ranking has no ties, so tau-a equals tau-b).
    It ignores items only one list has: it answers "where the paths agree on
    *what* to show, do they agree on the *order*?", and complements RBO.

    Returns:
        None when fewer than two items are shared (no pair to compare).
    """
    position = {item: rank for rank, item in enumerate(_distinct(b))}
    ranks = [position[item] for item in _distinct(a) if item in position]
    n = len(ranks)
    if n < 2:
        return None
    score = 0
    for i in range(n):
        for j in range(i + 1, n):
            score += 1 if ranks[i] < ranks[j] else -1
    return score / (n * (n - 1) / 2)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0 ≤ q ≤ 100) with linear interpolation between closest ranks.

    The same as ``numpy.percentile(values, q)`` with its default ("linear",
    Hyndman & Fan 1996 definition 7): sorted ``v``, position
    ``h = (n - 1) * q / 100``, value ``v[⌊h⌋] + (h - ⌊h⌋) * (v[⌊h⌋+1] - v[⌊h⌋])``.

    Raises:
        ValueError: ``values`` is empty or ``q`` is outside [0, 100].
    """
    if not values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"q must lie in [0, 100], got {q}")
    ordered = sorted(values)
    h = (len(ordered) - 1) * q / 100.0
    low = math.floor(h)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (h - low) * (ordered[high] - ordered[low])


def summary(values: Iterable[float]) -> dict[str, float | int | None]:
    """``count``, ``mean``, ``min``, ``p10``, ``p50``, ``p90``, ``p99``, ``max`` of ``values``.

    JSON-ready; every statistic but ``count`` is None when there are no values.
    """
    data = [float(v) for v in values]
    if not data:
        empty: dict[str, float | int | None] = {"count": 0}
        empty.update(dict.fromkeys(("mean", "min", "p10", "p50", "p90", "p99", "max")))
        return empty
    return {
        "count": len(data),
        "mean": math.fsum(data) / len(data),
        "min": min(data),
        "p10": percentile(data, 10),
        "p50": percentile(data, 50),
        "p90": percentile(data, 90),
        "p99": percentile(data, 99),
        "max": max(data),
    }


def noise_floor(
    pairs: Iterable[tuple[Sequence[Hashable], Sequence[Hashable]]], p: float = DEFAULT_P
) -> dict[str, float | int | None]:
    """The A/A noise floor: the distribution of RBO between two real-time answers to one request.

    ``pairs`` holds (first answer, repeated answer) for the same request, made
    right after each other. Their RBO is how much the real-time path varies on
    its own (exploration, ties broken by time, fresh events); a real-time vs
    legacy RBO is only meaningful against it. Returns :func:`summary` of the
    RBO values (``count``, ``median`` as ``p50``, ``p10``, …) plus ``median``.
    """
    stats = summary(rbo(first, again, p) for first, again in pairs)
    return stats | {"median": stats["p50"]}


def _non_negative(_: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value >= 0:
        raise ValueError(f"{attribute.name} must be at least 0, got {value}")


def _share(_: object, attribute: attrs.Attribute[float], value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{attribute.name} must lie in [0, 1], got {value}")


@attrs.frozen(kw_only=True)
class Thresholds:
    """When a surface is ready for canary traffic. Every rule is a reason to investigate.

    - ``min_requests``: fewer comparisons than this is "not enough data".
    - ``max_error_rate``: share of comparisons whose real-time answer failed
      (errors other than "absent").
    - ``max_fallback_rate``: share of served requests answered by the fallback.
    - ``max_p99_ms``: the real-time path's p99 latency in the comparisons.
    - ``min_rbo_vs_noise``: the median RBO(real time, legacy) must be at least
      this fraction of the A/A noise floor's median RBO(real time, real time).
      The real-time path is *expected* to differ from yesterday's batch (that
      is its point: fresher state), so a low RBO alone is no fault. But its
      answers also vary on their own from one call to the next; a difference
      from legacy far beyond that run-to-run variation points at a bug or a
      mis-set surface (wrong retrieval template, filters, rules) rather than
      at fresher data. With a noise-floor median of 0 the rule always passes.
    - ``min_noise_samples``: fewer A/A pairs than this cannot establish the
      noise floor, so the RBO rule cannot be judged ("not enough data"). At 0,
      a surface without A/A pairs skips the RBO rule.
    """

    min_requests: int = attrs.field(default=100, validator=_non_negative)
    max_error_rate: float = attrs.field(default=0.01, validator=_share)
    max_fallback_rate: float = attrs.field(default=0.02, validator=_share)
    max_p99_ms: float = attrs.field(default=50.0, validator=_non_negative)
    min_rbo_vs_noise: float = attrs.field(default=0.5, validator=_non_negative)
    min_noise_samples: int = attrs.field(default=20, validator=_non_negative)


DEFAULT_THRESHOLDS: Final = Thresholds()


@attrs.frozen(kw_only=True)
class SurfaceStats:
    """What :func:`verdict` judges for one surface (None: not measured)."""

    comparisons: int
    realtime_errors: int
    served: int
    fallbacks: int
    realtime_p99_ms: float | None
    rbo_median: float | None
    noise_median: float | None
    noise_samples: int


def _percent(value: float) -> str:
    return f"{100 * value:.2f}%"


#: A rule's finding: ``(PROBLEM | SHORTFALL | PASSED, what it says)``.
_Finding = tuple[str, str]
_PROBLEM: Final = "problem"
_SHORTFALL: Final = "shortfall"
_PASSED: Final = "passed"


def verdict(
    stats: SurfaceStats, thresholds: Thresholds = DEFAULT_THRESHOLDS
) -> tuple[str, list[str]]:
    """ "ready for canary", "investigate" or "not enough data", with the reasons.

    Any broken rule of ``thresholds`` gives "investigate" (an error rate is
    judged even on few requests: errors are worth a look at any volume); its
    reasons are the broken rules, followed by any shortfall of data. Else a
    shortfall (too few comparisons or A/A pairs, no comparison where both
    paths answered) gives "not enough data". Else "ready for canary", whose
    reasons say which rules passed.
    """
    findings = [
        *_volume_rule(stats, thresholds),
        *_rate_rules(stats, thresholds),
        *_latency_rule(stats, thresholds),
        *_agreement_rule(stats, thresholds),
    ]
    problems, shortfalls, passed = (
        [text for found, text in findings if found == kind]
        for kind in (_PROBLEM, _SHORTFALL, _PASSED)
    )
    if problems:
        return INVESTIGATE, problems + shortfalls
    if shortfalls:
        return NOT_ENOUGH_DATA, shortfalls
    return READY, passed


def _at_most(text: str, value: float, limit: float, shown_limit: str) -> _Finding:
    """``text`` judged by ``value ≤ limit`` (a problem above it)."""
    if value > limit:
        return _PROBLEM, f"{text} above {shown_limit}"
    return _PASSED, f"{text} ≤ {shown_limit}"


def _volume_rule(stats: SurfaceStats, t: Thresholds) -> list[_Finding]:
    if stats.comparisons < t.min_requests:
        text = f"only {stats.comparisons} comparisons (at least {t.min_requests})"
        return [(_SHORTFALL, text)]
    return []


def _rate_rules(stats: SurfaceStats, t: Thresholds) -> list[_Finding]:
    """The real-time error rate (of comparisons) and the fallback rate (of served requests)."""
    findings = []
    if stats.comparisons:
        rate = stats.realtime_errors / stats.comparisons
        text = f"real-time error rate {_percent(rate)}"
        findings.append(_at_most(text, rate, t.max_error_rate, _percent(t.max_error_rate)))
    if stats.served:
        rate = stats.fallbacks / stats.served
        text = f"fallback rate {_percent(rate)}"
        findings.append(_at_most(text, rate, t.max_fallback_rate, _percent(t.max_fallback_rate)))
    return findings


def _latency_rule(stats: SurfaceStats, t: Thresholds) -> list[_Finding]:
    if stats.realtime_p99_ms is not None:
        text = f"real-time p99 {stats.realtime_p99_ms:.1f} ms"
        return [_at_most(text, stats.realtime_p99_ms, t.max_p99_ms, f"{t.max_p99_ms:g} ms")]
    if stats.comparisons:
        return [(_SHORTFALL, "no real-time latency measured")]
    return []


def _agreement_rule(stats: SurfaceStats, t: Thresholds) -> list[_Finding]:
    """The median RBO against legacy, judged against the A/A noise floor."""
    if stats.rbo_median is None:
        return [(_SHORTFALL, "no comparison where both paths answered")]
    if stats.noise_samples < t.min_noise_samples:
        text = (
            f"only {stats.noise_samples} A/A samples for the noise floor "
            f"(at least {t.min_noise_samples})"
        )
        return [(_SHORTFALL, text)]
    if stats.noise_median is None:  # none required (min_noise_samples = 0), none there
        return [(_PASSED, "no A/A noise floor: the RBO rule was not applied")]
    floor = t.min_rbo_vs_noise * stats.noise_median
    text = f"median RBO vs legacy {stats.rbo_median:.3f}, A/A noise floor {stats.noise_median:.3f}"
    if stats.rbo_median < floor:
        return [
            (
                _PROBLEM,
                f"{text}: below {t.min_rbo_vs_noise:g} times the floor ({floor:.3f}), a "
                "difference beyond normal variation",
            )
        ]
    return [(_PASSED, f"{text}: at least {t.min_rbo_vs_noise:g} times the floor")]
