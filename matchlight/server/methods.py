"""The RPC methods of the public contract (DESIGN.md), over an actor system.

Each method takes the raw ``params`` array, validates it, calls the actor
system and returns the result map. Validation errors are ``bad_request``
naming the field; unknown entities are ``not_found``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from actors import ActorSystem, FieldLimitError, ItemState, UserState, item, user
from index import QueryError
from legacy_adapter import MigrationError, RealtimeUnavailable, Router
from matchlight.errors import UNAVAILABLE, BadRequest, NotFound, RpcError
from matchlight.server import validation
from matchlight.server.rpc import Handler, RpcServer
from matchlight.server.telemetry import NOOP
from ranker import RankerActor, RequestError


def item_view(state: ItemState) -> dict[str, Any]:
    """An item as the contract shows it (``get_item``)."""
    return {
        "id": state.id,
        "kind": state.kind,
        "terms": {field: list(values) for field, values in state.terms.items()},
        "numbers": dict(state.numbers),
        "counters": dict(state.counters),
        "decayed": item.decayed_at(state, state.updated),
        "active": state.active,
        "exists": state.exists,
        "version": state.seq,
        "updated": state.updated,
    }


def user_view(state: UserState) -> dict[str, Any]:
    """A user as the contract shows it (``get_user``); affinity as of their latest event."""
    return {
        "id": state.id,
        "counters": dict(state.counters),
        "recent": [{"item": r.item, "type": r.type, "ts": r.ts} for r in reversed(state.recent)],
        "affinity": user.affinity_at(state, state.updated),
        "seen": len(state.seen),
        "version": state.seq,
        "updated": state.updated,
    }


class Methods:
    def __init__(
        self,
        system: ActorSystem,
        ranker: RankerActor,
        *,
        router: Router | None = None,
        version: str,
        started: float,
    ) -> None:
        self.system = system
        self.ranker = ranker
        #: Serves recommend by each surface's migration mode, when there is one.
        self.router = router
        self.telemetry = NOOP
        self.version = version
        self.started = started
        self.rpc: RpcServer | None = None

    def table(self) -> Mapping[str, Handler]:
        return {
            "health": self.health,
            "ingest": self.ingest,
            "upsert_items": self.upsert_items,
            "remove_items": self.remove_items,
            "get_item": self.get_item,
            "get_user": self.get_user,
            "search": self.search,
            "recommend": self.recommend,
            "set_migration": self.set_migration,
            "stats": self.stats,
        }

    async def health(self, params: Any) -> dict[str, Any]:
        validation.params_map(params)
        return {"status": "ok", "version": self.version}

    async def ingest(self, params: Any) -> dict[str, Any]:
        commands = validation.events(
            validation.params_map(params),
            now=time.time(),
            clock_skew_s=self.system.config.clock_skew_s,
        )
        started = time.perf_counter()
        try:
            result = await self.system.ingest(commands)
        except FieldLimitError as exc:
            raise BadRequest(str(exc)) from None
        # Accepted → durable, applied and indexed: what a client waits for visibility.
        self.telemetry.visible_lag.record((time.perf_counter() - started) * 1000)
        self.telemetry.events_ingested.add(result.accepted)
        return {"accepted": result.accepted, "duplicates": result.duplicates, "seq": result.seq}

    async def upsert_items(self, params: Any) -> dict[str, Any]:
        commands = validation.items(validation.params_map(params), now=time.time())
        try:
            result = await self.system.upsert_items(commands)
        except FieldLimitError as exc:
            raise BadRequest(str(exc)) from None
        return {"accepted": result.accepted, "seq": result.seq}

    async def remove_items(self, params: Any) -> dict[str, Any]:
        commands = validation.removals(validation.params_map(params), now=time.time())
        result = await self.system.remove_items(commands)
        return {"removed": result.accepted, "seq": result.seq}

    async def get_item(self, params: Any) -> dict[str, Any]:
        p = validation.params_map(params)
        item_id = validation.ident(validation.require(p, "id"), "id")
        state = await self.system.get_item(item_id)
        if not state.exists and not state.counters:
            raise NotFound(f"no item {item_id!r}")
        return item_view(state)

    async def get_user(self, params: Any) -> dict[str, Any]:
        p = validation.params_map(params)
        user_id = validation.ident(validation.require(p, "id"), "id")
        state = await self.system.get_user(user_id)
        if state.seq == 0:
            raise NotFound(f"no events for user {user_id!r}")
        return user_view(state)

    async def search(self, params: Any) -> dict[str, Any]:
        query, limit, sort = validation.search(validation.params_map(params))
        try:
            result = self.system.search(query, limit=limit, sort=sort)
        except QueryError as exc:  # an unknown field
            raise BadRequest(str(exc)) from None
        return {"items": result.ids, "total": result.total}

    async def recommend(self, params: Any) -> dict[str, Any]:
        request = validation.recommend(validation.params_map(params))
        try:
            if self.router is not None:
                return await self.router.recommend(request)
            result = await self.ranker.recommend(request)
        except RequestError as exc:
            raise BadRequest(str(exc)) from None
        except RealtimeUnavailable as exc:
            raise RpcError(UNAVAILABLE, str(exc)) from None
        return result.view()

    async def set_migration(self, params: Any) -> dict[str, Any]:
        p = validation.params_map(params)
        surface = validation.ident(validation.require(p, "surface"), "surface")
        if self.router is None:
            raise RpcError(UNAVAILABLE, "this server has no migration router")
        try:
            state = self.router.set_migration(
                surface, {k: v for k, v in p.items() if k not in ("surface", "_trace")}
            )
        except MigrationError as exc:
            raise BadRequest(str(exc)) from None
        return state.view()

    async def stats(self, params: Any) -> dict[str, Any]:
        validation.params_map(params)
        s = self.system.statistics()
        out: dict[str, Any] = {
            "version": self.version,
            "uptime_s": round(time.monotonic() - self.started, 3),
            "log_seq": s.store.last_seq,
            "store_map_bytes": s.store.map_size,
            "store_resizes": s.store.resizes,
            # Found while reading (see `matchlight verify` for the whole store).
            "corrupt_snapshots": s.store.corrupt_snapshots,
            "corrupt_events": s.store.corrupt_events,
            "commits": s.writer.commits,
            "events_committed": s.writer.events,
            "batches_committed": s.writer.batches,
            "commit_events_mean": round(s.writer.mean_group_events, 2),
            "commit_events_max": s.writer.largest_group_events,
            "commit_batches_mean": round(s.writer.batches / s.writer.commits, 2)
            if s.writer.commits
            else 0.0,
        }
        for runtime in (s.items, s.users):
            prefix = f"{runtime.kind}_actors"
            out[f"{prefix}_active"] = runtime.active
            out[f"{prefix}_activations"] = runtime.activations
            out[f"{prefix}_passivations"] = runtime.passivations
            out[f"{prefix}_restarts"] = runtime.restarts
        out.update(
            index_items=s.index.items,
            index_ids=s.index.ids,
            index_term_fields=s.index.term_fields,
            index_postings=s.index.postings,
            index_numeric_fields=s.index.numeric_fields,
            index_geo_fields=s.index.geo_fields,
        )
        if self.router is not None:
            rs = self.router.statistics()
            out.update(
                migration=self.router.states(),
                served_realtime=rs.served["realtime"],
                served_legacy=rs.served["legacy"],
                served_fallback=rs.served["fallback"],
                shadows=rs.shadows,
                shadows_skipped=rs.shadows_skipped,
                comparisons_kept=rs.comparisons_kept,
                comparisons_lost=rs.comparisons_lost,
            )
            if self.router.feed is not None:
                out.update(
                    feed_snapshot=self.router.feed.snapshot,
                    feed_entries=self.router.feed.entries,
                    feed_corrupt_entries=self.router.feed.statistics().corrupt_entries,
                )
        r = self.ranker.statistics()
        out.update(
            recommend_requests=r.requests,
            model=r.model,
            model_swaps=r.model_swaps,
            model_failures=r.model_failures,
            decisions_written=r.decisions_written,
            decisions_kept=r.decisions_kept,
            decisions_lost=r.decisions_lost,
        )
        if self.rpc is not None:
            st = self.rpc.stats
            out.update(
                connections_open=st.connections_open,
                connections_total=st.connections_total,
                requests=st.requests,
                notifications=st.notifications,
                request_errors=st.errors,
                protocol_errors=st.protocol_errors,
                connections_refused=st.connections_refused,
                connections_timed_out=st.connections_timed_out,
                overloaded=st.overloaded,
                unauthorized=st.unauthorized,
                forbidden=st.forbidden,
            )
        return out
