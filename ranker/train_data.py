"""Training inputs: how to train (:class:`TrainingConfig`), and the log folded into training data.

:func:`read_log` folds every user and item stream of the event log with
the actors' own domain functions, and sums each (user, item) pair's events
by type weight into :attr:`TrainingData.pairs` (what :mod:`ranker.train`
fits on). Blocking; no Trio.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Final

import attrs

from actors import EventStore, InteractionRecorded, ItemState, UserState, item, user
from actors.user import OTHER_TYPE_WEIGHT, TYPE_WEIGHTS

READ_PAGE: Final = 10_000
#: Feature choices: choose from held-out data, or pin a family of candidates
#: (``identity+terms`` still chooses among its term weights); ``all`` is every
#: feature at weight 1, common terms included (the choice before selection).
FEATURES: Final = ("auto", "identity", "identity+terms", "all")

Progress = Callable[[str], None]
Pair = tuple[str, str]


@attrs.frozen(kw_only=True)
class TrainingConfig:
    components: int = 32
    epochs: int = 30
    learning_rate: float = 0.05
    loss: str = "warp"
    #: L2 penalty on feature embeddings, per sample.
    alpha: float = 1e-6
    seed: int = 0
    threads: int = 2
    #: One of :data:`FEATURES`.
    features: str = attrs.field(default="auto")
    #: The weights of term features relative to identities that are tried.
    term_weights: tuple[float, ...] = (0.25, 1.0)
    #: The latest share of the positive pairs (by time) held out to choose features.
    holdout: float = 0.1
    #: Terms (and kinds) carried by more than this share of the items are left out.
    max_term_share: float = 0.5
    #: Learn the blend weights from the held-out slice (when training on a store).
    learn_blend: bool = True

    @features.validator
    def _check_features(self, _: object, value: str) -> None:
        if value not in FEATURES:
            raise ValueError(f"features must be one of {', '.join(FEATURES)}, not {value!r}")
        if not self.term_weights or not all(0.0 < w < math.inf for w in self.term_weights):
            raise ValueError(f"term weights must be positive and finite, not {self.term_weights}")


@attrs.define(kw_only=True)
class TrainingData:
    """The log folded into users, items and weighted (user, item) pairs."""

    users: dict[str, UserState]
    items: dict[str, ItemState]
    pairs: dict[Pair, float]
    last_seq: int
    events: int
    #: (user, item) -> the time of the pair's first event of positive weight
    #: (what the held-out slice is cut by); pairs without one are absent.
    pair_ts: dict[Pair, float] = attrs.field(factory=dict)


def read_log(
    store: EventStore, *, until_seq: int | None = None, progress: Progress | None = None
) -> TrainingData:
    """Fold the log (up to ``until_seq``, inclusive) into training data. Blocking.

    Raises:
        StoreError: the store cannot be read.
    """
    users: dict[str, UserState] = {}
    items: dict[str, ItemState] = {}
    pairs: dict[tuple[str, str], float] = {}
    pair_ts: dict[tuple[str, str], float] = {}
    last = store.last_seq() if until_seq is None else min(until_seq, store.last_seq())
    seq, events, next_report = 0, 0, 0.0
    while seq < last:
        page = store.read_all(after=seq, limit=READ_PAGE)
        if not page:
            break
        for stored in page:
            if stored.seq > last:
                break
            seq = stored.seq
            events += 1
            event = stored.event
            state = items.get(event.item)
            if state is None:
                state = items[event.item] = item.initial(event.item)
            item.apply(state, stored)
            if type(event) is InteractionRecorded:
                person = users.get(event.user)
                if person is None:
                    person = users[event.user] = user.initial(event.user)
                user.apply(person, stored)
                key = (event.user, event.item)
                weight = event.weight * TYPE_WEIGHTS.get(event.type, OTHER_TYPE_WEIGHT)
                pairs[key] = pairs.get(key, 0.0) + weight
                if weight > 0 and key not in pair_ts:
                    pair_ts[key] = event.ts
        if progress is not None and time.monotonic() >= next_report:
            progress(f"read {events:,} events (seq {seq:,} of {last:,})")
            next_report = time.monotonic() + 2.0
    return TrainingData(
        users=users, items=items, pairs=pairs, last_seq=seq, events=events, pair_ts=pair_ts
    )
