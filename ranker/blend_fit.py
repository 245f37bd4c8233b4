"""Learning the blend: which parts of the score predict what users engage with next.

``matchlight train`` calls :func:`learn_blend` with a model fitted on the log
*before* a cut (so the model part is judged on engagements it never saw).
It replays the whole log in order through the same projections the server
keeps (item index and signals, co-occurrence, user states), and at each
sampled engagement after the cut (a positive event on an item new to the
user) it does what a ``recommend`` would have done just before it: retrieve
the candidates and compute every part of the score over them, as of that
event's time. The blend weights then maximise the listwise likelihood of the
engaged item among its candidates (a softmax over ``weights · parts``,
weights ≥ 0, a small L2 penalty), fitted on the earlier 70% of the samples
and checked on the later 30% against the default blend; the final weights
are refitted on all of them. Whatever the data, the parts that predict get
the weight: co-occurrence on a catalogue people browse in sequence, trending
on a sparse long tail, the model where taste is stable.

The parts are plain z-scores, without the soft clip hand-set blends get
(``Blend.clip_z``): learned weights already scale an outlying part down, and
the clip flattens the top of a sparse one. So the learned blend is served
unclipped, and the "default" check here is the default weights on unclipped
parts.
"""

from __future__ import annotations

import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, Final

import attrs
import numpy as np
import numpy.typing as npt

from actors import InteractionRecorded, Projections, StoredEvent, user
from actors.store import EventStore
from index import EVERYTHING
from ranker import stages
from ranker.model import Model
from ranker.policy import BLEND_PARTS, DEFAULT_BLEND, HEURISTIC_BLEND, Blend
from ranker.serving import ServingModel, model_scores, serving_model

log = logging.getLogger(__name__)

#: Engagements sampled after the cut to learn from (their candidates' parts are kept).
MAX_SAMPLES: Final = 2000
#: Fewer samples than this: no blend is learned (the default serves).
MIN_SAMPLES: Final = 50
#: Candidates per sample (what the default surface retrieves).
CANDIDATES: Final = 1000
#: Event types that count as an engagement to predict (likes and stronger).
TARGET_WEIGHT: Final = 1.0
VALIDATION_SHARE: Final = 0.3
#: Candidates besides the engaged one in each sample's softmax while fitting.
NEGATIVES: Final = 200
L2: Final = 1e-3
STEPS: Final = 300
STEP: Final = 0.05
HIT_K: Final = 10
READ_PAGE: Final = 10_000

Progress = Callable[[str], None]
Floats = npt.NDArray[np.float64]


@attrs.frozen(kw_only=True)
class LearnedBlend:
    blend: Blend
    #: What the choice rested on (goes to the model's facts).
    facts: dict[str, Any]


def _sample_parts(
    p: Projections, serving: ServingModel | None, event: InteractionRecorded, names: list[str]
) -> tuple[tuple[npt.NDArray[np.float32], int] | None, ServingModel | None]:
    """Each candidate's standardised parts (rows) for a recommend just before ``event``,
    and the engaged item's row (``None`` if retrieval would have missed it); and
    ``serving`` with the rows it needed computed (as the ranker keeps its item vectors)."""
    state = p.users.get(event.user) or user.initial(event.user)
    index = p.index
    target = index.doc_of(event.item)
    if target is None or target not in index.live:
        return None, serving
    now = max(p.signals.clock, state.updated)
    affinity = user.affinity_at(state, now)
    favourites = stages.favourites(affinity)
    exclude = user.excluded_docs(state, index.doc_of)
    engaged = stages.recent_engagements(state.recent, index.doc_of)
    related = p.cooccurrence.scores(zip(*engaged, strict=True), now)
    docs, _ = stages.retrieve(
        index,
        p.signals,
        EVERYTHING,
        limit=CANDIDATES,
        exclude=exclude,
        favourite_terms=[(f, v) for f, v, _ in favourites],
        related=related,
    )
    at = int(np.searchsorted(docs, target))
    if at >= len(docs) or docs[at] != target:
        return None, serving
    scores = None
    if serving is not None:  # as the ranker scores them (``docs`` holds the target)
        scores, serving = model_scores(serving, index, docs, event.user, affinity, engaged)
    popularity = p.signals.popularity(docs, now)
    affinity_part = stages.affinity_part(index, docs, favourites)
    ones = Blend(**dict.fromkeys(BLEND_PARTS, 1.0), clip_z=math.inf)
    scored = stages.score(
        docs,
        ones,
        model_scores=scores,
        popularity=popularity,
        last_interaction=p.signals.last_interaction(docs),
        affinity=affinity_part,
        now=now,
        cooccurrence=stages.related_part(docs, related),
        trending=stages.trending_part(popularity, affinity_part, sum(a for *_, a in favourites)),
    )
    parts = np.stack([scored.parts.get(n, np.zeros(len(docs))) for n in names], axis=1)
    return (parts.astype(np.float32), at), serving


def learn_blend(
    store: EventStore,
    *,
    cut_ts: float,
    model: Model | None,
    seed: int = 0,
    progress: Progress | None = None,
) -> LearnedBlend | None:
    """Blend weights learned from the engagements after ``cut_ts`` (see the module docstring).

    ``model`` must not have seen them (it was fitted on the log before the
    cut); without one the model part is left out. ``None`` when there are
    too few engagements after the cut to learn from.

    Raises:
        StoreError: the store cannot be read.
    """
    say = progress or (lambda _: None)
    started = time.monotonic()
    names = [n for n in BLEND_PARTS if n != "model" or model is not None]
    targets = _count_targets(store, cut_ts)
    if targets < MIN_SAMPLES:
        say(f"blend: {targets} engagements after the cut, fewer than {MIN_SAMPLES}: not learned")
        return None
    rate = min(1.0, MAX_SAMPLES / targets)
    samples, tried, missed = _samples(store, cut_ts, model, names, rate, seed)
    say(
        f"blend: {len(samples):,} engagements after the cut sampled ({missed:,} of {tried:,} "
        f"were not among the {CANDIDATES:,} candidates) in {time.monotonic() - started:.1f} s"
    )
    if len(samples) < MIN_SAMPLES:
        return None
    split = int(len(samples) * (1.0 - VALIDATION_SHARE))
    early, late = samples[:split], samples[split:]
    fitted = _fit(early, len(names), seed)
    checks = _checks(late, fitted, names, model is not None)
    weights = _fit(samples, len(names), seed)
    top = float(weights.max())
    if not top > 0:
        return None
    blend = Blend(
        clip_z=math.inf,
        **dict.fromkeys(BLEND_PARTS, 0.0)
        | {n: round(float(w / top), 4) for n, w in zip(names, weights, strict=True)},
    )
    say(
        "blend: "
        + ", ".join(f"{n} {getattr(blend, n):.3f}" for n in names)
        + f"; on the later {len(late):,} samples hit@{HIT_K} "
        + ", ".join(f"{k} {v:.3f}" for k, v in checks.items())
    )
    return LearnedBlend(
        blend=blend,
        facts={
            "samples": len(samples),
            "tried": tried,
            "missed_by_retrieval": missed,
            "cut_ts": cut_ts,
            f"validation_hit_at_{HIT_K}": {k: round(v, 4) for k, v in checks.items()},
            "learn_s": round(time.monotonic() - started, 2),
        },
    )


def _samples(
    store: EventStore, cut_ts: float, model: Model | None, names: list[str], rate: float, seed: int
) -> tuple[list[tuple[npt.NDArray[np.float32], int]], int, int]:
    """Replay the log, sampling engagements after ``cut_ts`` at ``rate`` (seeded): each
    sample's candidates' parts and the engaged row; and how many were tried and missed."""
    rng = random.Random(seed)
    p = Projections()
    serving = None if model is None else serving_model(model, p.index, 0)
    samples: list[tuple[npt.NDArray[np.float32], int]] = []
    tried = missed = 0
    for stored in _log(store):
        event = stored.event
        if (
            type(event) is InteractionRecorded
            and event.ts >= cut_ts
            and _is_target(event)
            and rng.random() < rate
        ):
            state = p.users.get(event.user)
            if state is None or event.item not in state.seen:
                tried += 1
                sample, serving = _sample_parts(p, serving, event, names)
                if sample is None:
                    missed += 1
                else:
                    samples.append(sample)
        p.apply(stored)
    return samples, tried, missed


def _checks(
    late: list[tuple[npt.NDArray[np.float32], int]],
    fitted: Floats,
    names: list[str],
    with_model: bool,
) -> dict[str, float]:
    """Hit rates on the later samples: the learned weights, the default, each part alone."""
    default = (DEFAULT_BLEND if with_model else HEURISTIC_BLEND).weights()
    default_w = np.array([default[n] for n in names])
    return {
        "learned": _hit_rate(late, fitted),
        "default": _hit_rate(late, default_w),
        **{f"{n} alone": _hit_rate(late, np.eye(len(names))[i]) for i, n in enumerate(names)},
    }


def _log(store: EventStore) -> Iterator[StoredEvent]:
    """Every event of ``store`` in log order, read a page at a time."""
    seq, last = 0, store.last_seq()
    while seq < last:
        page = store.read_all(after=seq, limit=READ_PAGE)
        if not page:
            return
        yield from page
        seq = page[-1].seq


def _is_target(event: InteractionRecorded) -> bool:
    return user.TYPE_WEIGHTS.get(event.type, user.OTHER_TYPE_WEIGHT) >= TARGET_WEIGHT


def _count_targets(store: EventStore, cut_ts: float) -> int:
    """Engagements after the cut with an item new to the user: what may be sampled.

    Repeats are left out as the sampling loop leaves them out, so the sampling
    rate is right where users come back to their items (groceries: two thirds
    of the purchases).
    """
    seen: set[tuple[str, str]] = set()
    count = 0
    for stored in _log(store):
        event = stored.event
        if type(event) is not InteractionRecorded:
            continue
        pair = (event.user, event.item)
        if event.ts >= cut_ts and _is_target(event) and pair not in seen:
            count += 1
        seen.add(pair)
    return count


def _fit(samples: list[tuple[npt.NDArray[np.float32], int]], parts: int, seed: int = 0) -> Floats:
    """Weights ≥ 0 maximising the mean log-softmax of each sample's engaged row, minus L2.

    Each sample's softmax runs over its engaged row and up to :data:`NEGATIVES`
    of its other candidates, drawn at random (sampled softmax: far cheaper, and
    the same optimum in expectation up to a constant).
    """
    rng = np.random.default_rng(seed)
    rows = np.zeros((len(samples), NEGATIVES + 1, parts), dtype=np.float32)
    mask = np.zeros((len(samples), NEGATIVES + 1), dtype=bool)
    for n, (candidates, target) in enumerate(samples):
        others = np.delete(np.arange(len(candidates)), target)
        if len(others) > NEGATIVES:
            others = rng.choice(others, NEGATIVES, replace=False)
        rows[n, 0] = candidates[target]
        rows[n, 1 : len(others) + 1] = candidates[others]
        mask[n, : len(others) + 1] = True
    x = rows.astype(np.float64)
    w = np.full(parts, 0.5)
    m, v = np.zeros(parts), np.zeros(parts)
    for t in range(1, STEPS + 1):
        s = np.where(mask, x @ w, -np.inf)
        s -= s.max(axis=1, keepdims=True)
        e = np.exp(s)
        prob = e / e.sum(axis=1, keepdims=True)
        expected = np.einsum("sn,snp->sp", prob, x)
        grad = (x[:, 0] - expected).mean(axis=0) - 2 * L2 * w
        # Adam, ascending; then back onto w >= 0.
        m = 0.9 * m + 0.1 * grad
        v = 0.999 * v + 0.001 * grad * grad
        w = w + STEP * (m / (1 - 0.9**t)) / (np.sqrt(v / (1 - 0.999**t)) + 1e-8)
        w = np.maximum(w, 0.0)
    return w


def _hit_rate(samples: list[tuple[npt.NDArray[np.float32], int]], w: Floats) -> float:
    if not samples:
        return math.nan
    hits = 0
    for rows, target in samples:
        s = rows @ w
        # Rank as served: ties by position (internal id), the engaged row among them.
        better = int((s > s[target]).sum()) + int((s[:target] == s[target]).sum())
        hits += better < HIT_K
    return hits / len(samples)
