"""The per-surface migration router: legacy feed → shadow → canary or interleave → live.

Each product surface moves on its own, by mode:

- ``legacy``: serve the batch feed's list. A user absent from the feed is
  served by the real-time path (and the answer says so).
- ``shadow``: serve the feed; off the request path, with a deadline, also
  compute the real-time answer and record both (a *comparison*).
- ``canary``: a sticky share of users (``percent``; a stable hash of user and
  surface, so raising the percent keeps everyone already moved) gets the
  real-time answer; the others get the feed.
- ``interleave``: the same sticky share of users gets one list merged from
  the feed's and the real-time answer by team-draft interleaving
  (:mod:`legacy_adapter.interleaving`; ``source: "interleaved"``), and an
  ``interleaving`` record keeps which list contributed each position, so
  ``matchlight shadow-report`` can credit engagement to either list. A user
  absent from the feed gets the real-time answer alone (not an impression).
- ``live``: everyone gets the real-time answer; with ``reverse_shadow`` the
  feed is still read and compared.

When the real-time path fails or misses its deadline in ``canary``,
``interleave`` or ``live``,
the feed's list is served instead (``source: "fallback"``) and why is
recorded. Surfaces never configured are in :data:`DEFAULT_MODE`.

Modes change through ``set_migration`` (RPC, admin role) or the ``[migration]``
table of the surfaces config file (:mod:`legacy_adapter.migration`); the state
is persisted (``DATA/migration.json``) and survives restarts. A config entry
is applied at startup when the surface has no state yet or the entry changed
since it was last applied, so a change made over RPC stays until someone
edits that surface's config entry.

Several processes may serve one data directory, each with its router: every
change is made under a lock on the file (none is lost, and a config entry
applied by one process at startup is not applied again by the others), and
each request looks whether the file was replaced (one ``stat``), so a change
made in any process applies to the next request in every process.

Every shadowed, reverse-shadowed or interleaved request leaves a comparison
record, every interleaved one an interleaving record, and every request on a
surface out of ``legacy`` a served record, in a
:class:`~ranker.DecisionLog` at ``DATA/comparisons``: what ``matchlight
shadow-report`` reads. The A/A noise floor compares a real-time answer with the
same user's previous real-time answer on that surface (within
``aa_window_s``): the variation of the real-time path itself.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final

import attrs
import trio
from opentelemetry import trace

from actors import RateLimitedLog
from legacy_adapter.errors import MigrationError, RealtimeUnavailable
from legacy_adapter.feed import FeedStore
from legacy_adapter.interleaving import team_draft
from legacy_adapter.migration import (
    SHARED_MODES,
    Migration,
    MigrationFile,
    canary_bucket,
    check_migration,
)
from legacy_adapter.sources import FeedEntry
from ranker import DecisionLog, RankerActor, RecommendRequest, RequestError

log = logging.getLogger(__name__)

#: Shadow computations running at once; beyond it a request is not shadowed (and counted).
MAX_SHADOWS: Final = 64
#: Users whose latest real-time answer is remembered per surface, for the A/A noise floor.
AA_MEMORY: Final = 100_000


@attrs.frozen(kw_only=True)
class RouterStatistics:
    served: Mapping[str, int]
    fallbacks: int
    shadows: int
    shadows_skipped: int
    comparisons_kept: int
    #: Comparison and served records that could not be written (e.g. a full disk).
    comparisons_lost: int = 0


class Router:
    """Serves ``recommend`` by each surface's migration mode. Use :func:`open_router`."""

    def __init__(
        self,
        ranker: RankerActor,
        feed: FeedStore | None,
        *,
        data_dir: Path,
        comparisons: DecisionLog | None,
    ) -> None:
        self.ranker = ranker
        self.feed = feed
        self.data_dir = data_dir
        self.comparisons = comparisons
        self._file = MigrationFile(data_dir)
        self._nursery: trio.Nursery | None = None
        self._shadow_slots = trio.Semaphore(MAX_SHADOWS)
        self._aa: OrderedDict[tuple[str, str], tuple[list[str], float, float]] = OrderedDict()
        self._served: dict[str, int] = {
            "realtime": 0,
            "legacy": 0,
            "fallback": 0,
            "interleaved": 0,
        }
        #: Records waiting for the writer (see _flush_forever).
        self._pending: list[dict[str, Any]] = []
        #: How old a user's previous real-time answer may be to count for the A/A noise floor.
        self.aa_window_s = 3600.0
        self._fallbacks = 0
        self._shadows = 0
        self._shadows_skipped = 0
        self._records_lost = 0
        #: Failures that repeat per request (a full disk) are logged once a minute.
        self._log_errors = RateLimitedLog(log)
        #: Where shadow work goes instead of this process's event loop, if anywhere: a
        #: node's reader worker hands it to a sibling (see matchlight.server.shadow_offload).
        #: Called with the request, its id and the feed's answer; False: not taken.
        self.offload: Callable[[RecommendRequest, str, dict[str, Any]], bool] | None = None

    # -- state ----------------------------------------------------------------------

    def migration(self, surface: str) -> Migration:
        """``surface``'s state, as changed last by any process (see :meth:`refresh`)."""
        self.refresh()
        return self._file.states.get(surface) or Migration(surface=surface)

    def states(self) -> dict[str, dict[str, Any]]:
        """Every surface's state (as changed last by any process), by surface."""
        self.refresh()
        return {name: state.view() for name, state in sorted(self._file.states.items())}

    def refresh(self) -> None:
        """Take up the states another process changed (cheap when none did: one ``stat``).

        Never raises: if the file was replaced by one that cannot be read, the
        states last read keep serving, and the failure is logged once a minute.
        """
        try:
            self._file.refresh()
        except (MigrationError, OSError) as exc:
            self._log_errors.error(
                "migration", "the migration states last read keep serving", exc=exc
            )

    def set_migration(self, surface: str, raw: Mapping[str, Any], origin: str = "rpc") -> Migration:
        """Change a surface's mode (validated), persist it, and return the new state. Blocking
        (briefly: the file's lock, one write).

        Raises:
            MigrationError: a field is wrong, or the state file is invalid (nothing changes).
            OSError: the state file cannot be locked or written (nothing changes).
        """
        fields = check_migration(surface, raw, "set_migration" if origin == "rpc" else surface)
        with self._file.update() as (states, _):
            new = (states.get(surface) or Migration(surface=surface)).changed(fields, origin)
            states[surface] = new
        log.info("surface %s: migration %s", surface, new.view())
        return new

    def apply_config(self, entries: Mapping[str, Mapping[str, Any]]) -> None:
        """Apply the config file's ``[migration.SURFACE]`` entries (see the module docstring).

        Checked and applied under the state file's lock, so processes starting at
        once with the same config apply each entry once.

        Raises:
            MigrationError: an entry is invalid, or the state file is (nothing changes).
            OSError: the state file cannot be locked or written (nothing changes).
        """
        checked = {
            surface: check_migration(surface, entry, f"migration.{surface}")
            for surface, entry in entries.items()
        }
        with self._file.update() as (states, applied):
            for surface, entry in entries.items():
                if surface in states and applied.get(surface) == dict(entry):
                    continue  # applied before: a later RPC change, if any, stands
                applied[surface] = dict(entry)
                old = states.get(surface) or Migration(surface=surface)
                states[surface] = old.changed(checked[surface], "config")
                log.info("surface %s: migration %s", surface, states[surface].view())

    # -- serving --------------------------------------------------------------------

    async def recommend(self, request: RecommendRequest) -> dict[str, Any]:
        """Answer by the surface's mode. A checkpoint.

        Raises:
            RequestError: the request itself is invalid (whatever the mode).
            RealtimeUnavailable: in ``canary``/``live`` the real-time path failed
                and the feed has nothing for this user.
        """
        started = time.perf_counter()
        state = self.migration(request.surface)
        entry = None if self.feed is None else self.feed.get(request.surface, request.user)
        if entry is not None and not entry.items:
            entry = None  # an empty batch list is no answer: the real-time path serves
        on_feed = state.mode == "legacy" or (
            state.mode in SHARED_MODES
            and canary_bucket(request.user, request.surface) >= state.percent
        )
        if on_feed:
            return await self._serve_feed(request, entry, state, started)
        if state.mode == "shadow":
            return await self._serve_shadowed(request, entry, state, started)
        if state.mode == "interleave" and entry is not None:  # this user is in the experiment
            return await self._serve_interleaved(request, entry, state, started)
        # canary (this user is in it), live, or interleave for a user absent from the feed
        return await self._serve_realtime(request, entry, state, started)

    async def _serve_feed(
        self, request: RecommendRequest, entry: FeedEntry | None, state: Migration, started: float
    ) -> dict[str, Any]:
        """``legacy``, or a user outside the canary: the feed's list, else real time."""
        if entry is not None:
            answer = self._legacy_answer(request, entry, state)
            reason = None
        else:
            answer = await self._realtime(request)
            reason = None
            if self.feed is not None:  # without a feed there is nothing to miss
                answer["feed_missing"] = True
                reason = "absent from feed"
        if state.mode != "legacy":
            self._served_record(request, state, answer, reason, started)
        return answer

    async def _serve_shadowed(
        self, request: RecommendRequest, entry: FeedEntry | None, state: Migration, started: float
    ) -> dict[str, Any]:
        """``shadow``: the feed's list, with the real-time answer computed beside it and
        compared; a user absent from the feed gets (and compares) the real-time answer."""
        if entry is not None:
            answer = self._legacy_answer(request, entry, state)
            if _sampled(state.shadow_share):
                self._shadow(request, entry, state, answer["request_id"])
            self._served_record(request, state, answer, None, started)
            return answer
        answer = await self._realtime(request)
        answer["feed_missing"] = True
        realtime = _path(answer, started)
        self._record_comparison(request, answer["request_id"], None, realtime, "shadow")
        self._served_record(request, state, answer, "absent from feed", started)
        return answer

    async def _serve_realtime(
        self, request: RecommendRequest, entry: FeedEntry | None, state: Migration, started: float
    ) -> dict[str, Any]:
        """``canary`` (this user is in it) or ``live``: real time first, the feed if it fails."""
        answer, why = await self._realtime_within(request, state)
        if answer is None:
            return self._fallback(request, entry, state, why, started)
        if (
            state.mode == "live"
            and state.reverse_shadow
            and entry is not None
            and _sampled(state.shadow_share)
        ):
            realtime = _path(answer, started)
            self._record_comparison(
                request, answer["request_id"], _feed_path(entry), realtime, "live"
            )
        if entry is None and self.feed is not None:
            answer["feed_missing"] = True
        self._served_record(request, state, answer, None, started)
        return answer

    async def _serve_interleaved(
        self, request: RecommendRequest, entry: FeedEntry, state: Migration, started: float
    ) -> dict[str, Any]:
        """``interleave`` (this user is in it): the feed's and the real-time list merged by team
        draft, each item with its own list's score; the feed's list if real time fails."""
        # The real-time list is only one side of what is shown: its decision record says so.
        answer, why = await self._realtime_within(
            attrs.evolve(request, shown=False), state, source="interleaved"
        )
        if answer is None:
            return self._fallback(request, entry, state, why, started)
        realtime_ms = round((time.perf_counter() - started) * 1000, 3)
        legacy = self._legacy_answer(request, entry, state, count=False)
        by_team = {
            "realtime": {item["id"]: item for item in answer["items"]},
            "legacy": {item["id"]: item for item in legacy["items"]},
        }
        ranked = {team: list(items) for team, items in by_team.items()}
        # Seeded by the request id: the coin flips of a decision can be drawn again.
        rng = random.Random(answer["request_id"])
        k = request.k or self.ranker.surfaces.get(request.surface).k
        items, teams = team_draft(ranked["realtime"], ranked["legacy"], k, rng)
        answer["items"] = [by_team[team][item] for item, team in zip(items, teams, strict=True)]
        answer["source"] = "interleaved"
        realtime = {"items": ranked["realtime"], "latency_ms": realtime_ms, "error": None}
        self._record_comparison(
            request, answer["request_id"], _feed_path(entry), realtime, "interleave"
        )
        self._log(
            {
                "kind": "interleaving",
                "ts": time.time(),
                "surface": request.surface,
                "user": request.user,
                "request_id": answer["request_id"],
                "items": items,
                "teams": teams,
            }
        )
        self._served_record(request, state, answer, None, started)
        return answer

    def _fallback(
        self,
        request: RecommendRequest,
        entry: FeedEntry | None,
        state: Migration,
        why: str,
        started: float,
    ) -> dict[str, Any]:
        """The feed's list because the real-time path failed (``why``).

        Raises:
            RealtimeUnavailable: the feed has no list for this user either.
        """
        self._fallbacks += 1
        if entry is None:
            raise RealtimeUnavailable(
                f"the real-time path failed ({why}) and the feed has no list for this user"
            )
        fallback = self._legacy_answer(request, entry, state, source="fallback")
        fallback["fallback_reason"] = why
        self._served_record(request, state, fallback, why, started)
        return fallback

    async def _realtime(
        self, request: RecommendRequest, source: str = "realtime"
    ) -> dict[str, Any]:
        """The real-time answer, counted as served from ``source``."""
        result = await self.ranker.recommend(request)
        self._served[source] += 1
        return result.view()

    async def _realtime_within(
        self, request: RecommendRequest, state: Migration, source: str = "realtime"
    ) -> tuple[dict[str, Any] | None, str]:
        """The real-time answer (counted as served from ``source``), or ``None`` and why (an
        error or the deadline)."""
        try:
            with trio.move_on_after(state.deadline_ms / 1000.0) as scope:
                return await self._realtime(request, source), ""
        except RequestError:
            raise  # the request is wrong: the feed would not make it right
        except Exception as exc:
            log.warning("surface %s: real-time path failed: %r", request.surface, exc)
            return None, f"error: {type(exc).__name__}: {exc}"
        assert scope.cancelled_caught
        return None, f"deadline: no answer within {state.deadline_ms:g} ms"

    def _legacy_answer(
        self,
        request: RecommendRequest,
        entry: FeedEntry,
        state: Migration,
        source: str = "legacy",
        *,
        count: bool = True,
    ) -> dict[str, Any]:
        """The feed's top k as an answer (``count``: count it as served from ``source``)."""
        k = request.k or self.ranker.surfaces.get(request.surface).k
        items = []
        for rank, item_id in enumerate(entry.items[:k]):
            score = entry.scores[rank] if entry.scores is not None else 1.0 / (rank + 1)
            items.append({"id": item_id, "score": round(float(score), 6)})
        if count:
            self._served[source] += 1
        return {
            "items": items,
            "source": source,
            "model": None,
            "request_id": uuid.uuid4().hex,
            "ranker": "legacy-feed",
            "surface": request.surface,
            "feed_snapshot": None if self.feed is None else self.feed.snapshot,
            "migration": state.mode,
        }

    # -- shadow and records -----------------------------------------------------------

    def _shadow(
        self, request: RecommendRequest, entry: FeedEntry, state: Migration, request_id: str
    ) -> None:
        """Start the real-time answer off the request path (skipped when too many run)."""
        legacy = _feed_path(entry)
        if self.offload is not None and self.offload(request, request_id, legacy):
            self._shadows += 1
            return
        self.shadow_here(request, request_id, legacy, state)

    def shadow_here(
        self,
        request: RecommendRequest,
        request_id: str,
        legacy: dict[str, Any],
        state: Migration | None = None,
    ) -> None:
        """Compute the real-time answer to ``request`` in this process, off the request path,
        and record its comparison with ``legacy`` (skipped when too many run). ``state``:
        the surface's migration state (its current one by default)."""
        if self._nursery is None:
            return
        try:
            self._shadow_slots.acquire_nowait()
        except trio.WouldBlock:
            self._shadows_skipped += 1
            return
        self._shadows += 1
        if state is None:
            state = self.migration(request.surface)
        self._nursery.start_soon(self._run_shadow, request, state, request_id, legacy)

    async def shadow_for_sibling(
        self, request: RecommendRequest, request_id: str, legacy: dict[str, Any]
    ) -> None:
        """Like :meth:`shadow_here`, for work a sibling process handed over (it counted the
        request as shadowed): waits for a free slot instead of skipping, so that the
        sibling's batches queue up rather than being dropped. A checkpoint."""
        if self._nursery is None:
            return
        await self._shadow_slots.acquire()
        state = self.migration(request.surface)
        self._nursery.start_soon(self._run_shadow, request, state, request_id, legacy)

    async def _run_shadow(
        self,
        request: RecommendRequest,
        state: Migration,
        request_id: str,
        legacy: dict[str, Any],
    ) -> None:
        try:
            started = time.perf_counter()
            try:
                with trio.move_on_after(state.deadline_ms / 1000.0) as scope:
                    result = await self.ranker.recommend(attrs.evolve(request, shown=False))
                if scope.cancelled_caught:
                    realtime = _failed(started, f"deadline: {state.deadline_ms:g} ms")
                else:
                    realtime = _path(result.view(), started)
            except Exception as exc:
                realtime = _failed(started, f"error: {type(exc).__name__}: {exc}")
            self._record_comparison(request, request_id, legacy, realtime, "shadow")
        finally:
            self._shadow_slots.release()

    def _record_comparison(
        self,
        request: RecommendRequest,
        request_id: str,
        legacy: dict[str, Any] | None,
        realtime: dict[str, Any],
        mode: str,
    ) -> None:
        key = (request.surface, request.user)
        now = time.time()
        previous = self._aa.get(key)
        aa = None
        if previous is not None and now - previous[2] <= self.aa_window_s:
            aa = {"items": previous[0], "latency_ms": previous[1], "error": None}
        if realtime["error"] is None:
            self._aa[key] = (realtime["items"], realtime["latency_ms"], now)
            self._aa.move_to_end(key)
            if len(self._aa) > AA_MEMORY:
                self._aa.popitem(last=False)
        context = trace.get_current_span().get_span_context()
        self._log(
            {
                "kind": "comparison",
                "ts": now,
                "surface": request.surface,
                "user": request.user,
                "mode": mode,
                "request_id": request_id,
                "trace_id": f"{context.trace_id:032x}" if context.is_valid else None,
                "k": request.k or self.ranker.surfaces.get(request.surface).k,
                "legacy": legacy or {"items": [], "latency_ms": None, "error": "absent"},
                "realtime": realtime,
                "aa": aa,
            }
        )

    def _served_record(
        self,
        request: RecommendRequest,
        state: Migration,
        answer: Mapping[str, Any],
        reason: str | None,
        started: float,
    ) -> None:
        self._log(
            {
                "kind": "served",
                "ts": time.time(),
                "surface": request.surface,
                "user": request.user,
                "mode": state.mode,
                "request_id": answer["request_id"],
                "source": answer["source"],
                "reason": reason,
                "latency_ms": round((time.perf_counter() - started) * 1000, 3),
            }
        )

    def _log(self, record: dict[str, Any]) -> None:
        if self.comparisons is not None:
            self._pending.append(record)

    async def _flush_forever(self) -> None:
        """Write queued records in groups on a worker thread, every 100 ms."""
        while True:
            await trio.sleep(0.1)
            await self.flush()

    async def flush(self) -> None:
        """Write the queued records now. A checkpoint."""
        if not self._pending or self.comparisons is None:
            return
        batch, self._pending = self._pending, []
        try:
            await trio.to_thread.run_sync(self.comparisons.write, batch)
        except Exception as exc:
            self._records_lost += len(batch)
            self._log_errors.error(
                "comparisons",
                "lost %d comparison records (%d lost in all)",
                len(batch),
                self._records_lost,
                exc=exc,
            )

    def statistics(self) -> RouterStatistics:
        kept = 0 if self.comparisons is None else self.comparisons.statistics().kept
        return RouterStatistics(
            served=dict(self._served),
            fallbacks=self._fallbacks,
            shadows=self._shadows,
            shadows_skipped=self._shadows_skipped,
            comparisons_kept=kept,
            comparisons_lost=self._records_lost,
        )


def _sampled(share: float) -> bool:
    return share >= 1.0 or random.random() < share


def _path(answer: Mapping[str, Any], started: float) -> dict[str, Any]:
    return {
        "items": [item["id"] for item in answer["items"]],
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        "error": None,
    }


def _failed(started: float, why: str) -> dict[str, Any]:
    return {
        "items": [],
        "latency_ms": round((time.perf_counter() - started) * 1000, 3),
        "error": why,
    }


def _feed_path(entry: FeedEntry) -> dict[str, Any]:
    return {"items": list(entry.items), "latency_ms": 0.0, "error": None}


@asynccontextmanager
async def open_router(
    ranker: RankerActor,
    feed: FeedStore | None,
    *,
    data_dir: Path,
    comparisons: DecisionLog | None,
    config: Mapping[str, Mapping[str, Any]] | None = None,
) -> AsyncIterator[Router]:
    """Run a router for the block: shadow tasks and the record writer run in its nursery.

    On exit, running shadows are cancelled and queued records written.

    Raises:
        MigrationError: the persisted state or the config's entries are invalid.
    """
    router = Router(ranker, feed, data_dir=data_dir, comparisons=comparisons)
    if config:
        router.apply_config(config)
    async with trio.open_nursery() as nursery:
        router._nursery = nursery
        nursery.start_soon(router._flush_forever)
        try:
            yield router
        finally:
            router._nursery = None
            nursery.cancel_scope.cancel()
    with trio.CancelScope(shield=True):
        await router.flush()
