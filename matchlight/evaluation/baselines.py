"""The simple real-time baselines the replay measures Matchlight against, updated per event.

Both see every event as it happens (the same stream the engine ingests) and,
like every system in the replay, never list an item the user interacted with.

- :class:`RealtimePopularity`: a decayed count of positive events per item
  (half-life :data:`HALF_LIFE_S`, 7 days), kept in the log domain —
  ``key = log2(Σ 2^(t_i / half_life))`` — so ordering never needs "now"
  and nothing overflows however long the stream.
- :class:`ItemKnn`: co-occurrence of likes. When a user likes X, 1 is added
  to ``cooc[X][Y]`` and ``cooc[Y][X]`` for each of their earlier likes Y; a
  user's candidates are scored by the sum of ``cooc`` with their last
  :data:`RECENT_LIKES` likes, and the list is filled with real-time
  popularity when fewer than k items score. Over every earlier like that
  matrix is ``LᵀL`` off the diagonal (``L``: user x item like counts), so a
  score vector is ``Lᵀ(L r)`` — two bincounts over the users who liked one
  of the recent items — and no item x item matrix is stored.

No Trio, no I/O.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from matchlight.evaluation.synthetic import POSITIVE

HALF_LIFE_S: Final = 7 * 86_400.0
RECENT_LIKES: Final = 20

__all__ = ["HALF_LIFE_S", "RECENT_LIKES", "ItemKnn", "RealtimePopularity", "top_unseen"]


def top_unseen(
    ids: list[str], scores: npt.NDArray[np.float64], seen: Collection[str], k: int
) -> list[str]:
    """The ``k`` best-scoring ids (finite scores only, ties by position) not in ``seen``."""
    want = min(len(ids), k + len(seen))
    if want <= 0:
        return []
    if want < len(ids):
        part = np.argpartition(-scores, want - 1)[:want]
        order = part[np.lexsort((part, -scores[part]))]
    else:
        order = np.lexsort((np.arange(len(ids)), -scores))
    out: list[str] = []
    for i in order.tolist():
        if not np.isfinite(scores[i]):
            break
        if ids[i] not in seen:
            out.append(ids[i])
            if len(out) == k:
                break
    return out


class _Ids:
    """Items by ordinal, in order of first positive event."""

    def __init__(self) -> None:
        self.ids: list[str] = []
        self.ordinal: dict[str, int] = {}

    def of(self, item: str) -> int:
        found = self.ordinal.get(item)
        if found is None:
            found = self.ordinal[item] = len(self.ids)
            self.ids.append(item)
        return found


class RealtimePopularity:
    """Decayed count of positive events per item (7-day half-life), in the log domain."""

    def __init__(self, half_life_s: float = HALF_LIFE_S) -> None:
        self.half_life_s = half_life_s
        self.items = _Ids()
        self.key = np.full(1024, -np.inf)

    def observe(self, event: Mapping[str, Any]) -> None:
        if event["type"] not in POSITIVE:
            return
        i = self.items.of(event["item"])
        if i >= len(self.key):
            self.key = np.concatenate([self.key, np.full(len(self.key), -np.inf)])
        # log2(2^key + 2^(t / half_life)): the decayed sum, scaled by 2^(t / half_life).
        self.key[i] = np.logaddexp2(self.key[i], float(event["ts"]) / self.half_life_s)

    def scores(self) -> npt.NDArray[np.float64]:
        """Each known item's key (ordered like its decayed count at any common time)."""
        return self.key[: len(self.items.ids)]

    def recommend(self, seen: Collection[str], k: int) -> list[str]:
        return top_unseen(self.items.ids, self.scores(), seen, k)

    def ranking(self, depth: int) -> list[str]:
        """The ``depth`` most popular items now (no exclusion): a frozen list's contents."""
        return top_unseen(self.items.ids, self.scores(), (), depth)


class ItemKnn:
    """Item-to-item co-occurrence of likes, scored against the user's last 20 likes."""

    def __init__(self, popularity: RealtimePopularity, recent: int = RECENT_LIKES) -> None:
        self.popularity = popularity
        self.recent = recent
        #: Per item ordinal, the users (ordinals) who liked it, once per like.
        self.likers: list[list[int]] = []
        self.users: dict[str, int] = {}
        #: Per user ordinal, their likes' item ordinals in order (repeats kept: ``L`` holds counts).
        self.user_likes: list[list[int]] = []

    def observe(self, event: Mapping[str, Any]) -> None:
        """Take one event; call after :meth:`RealtimePopularity.observe` (it assigns ordinals)."""
        if event["type"] != "like":
            return
        item = self.popularity.items.of(event["item"])
        while len(self.likers) <= item:
            self.likers.append([])
        u = self.users.get(event["user"])
        if u is None:
            u = self.users[event["user"]] = len(self.user_likes)
            self.user_likes.append([])
        self.user_likes[u].append(item)
        self.likers[item].append(u)

    def recommend(self, who: str, seen: Collection[str], k: int) -> list[str]:
        n_items = len(self.popularity.items.ids)
        u = self.users.get(who)
        out: list[str] = []
        if u is not None and self.user_likes[u]:
            recent = self.user_likes[u][-self.recent :]
            # w[v] = Σ_{y in recent} L[v, y]; score[c] = Σ_v w[v] L[v, c] = Σ_y cooc[y][c]
            # (plus the user's own pairs, all on items they have seen, hence excluded).
            weights = np.bincount(
                np.fromiter((v for y in recent for v in self.likers[y]), dtype=np.int64),
                minlength=len(self.user_likes),
            )
            voters = np.flatnonzero(weights)
            items = np.concatenate([np.asarray(self.user_likes[v], np.int64) for v in voters])
            counts = np.asarray([len(self.user_likes[v]) for v in voters])
            repeated = np.repeat(weights[voters], counts).astype(np.float64)
            score = np.bincount(items, weights=repeated, minlength=n_items).astype(np.float64)
            score[score <= 0] = -np.inf
            out = top_unseen(self.popularity.items.ids, score, seen, k)
        if len(out) < k:
            taken = set(out)
            fill = self.popularity.recommend({*seen, *taken}, k - len(out))
            out.extend(fill)
        return out
