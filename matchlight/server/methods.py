"""The RPC methods of the public contract (DESIGN.md), over an actor system.

Each method takes the raw ``params`` array, validates it, calls the actor
system and returns the result map. Validation errors are ``bad_request``
naming the field; unknown entities are ``not_found``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from actors import ActorSystem, ItemState, UserState, item, user
from index import QueryError
from legacy_adapter import MigrationError, RealtimeUnavailable, Router
from matchlight.errors import BadRequest, NotFound, Unavailable
from matchlight.server import statistics, validation
from matchlight.server.rpc import Handler, RpcCounters
from matchlight.server.telemetry import NOOP, Telemetry
from matchlight.server.write_methods import WriteMethods
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
    """The contract's methods (:meth:`table`), over the server's components."""

    def __init__(
        self,
        system: ActorSystem,
        ranker: RankerActor,
        *,
        router: Router | None = None,
        rpc: RpcCounters,
        writes: Mapping[str, Handler] | None = None,
        telemetry: Telemetry = NOOP,
        version: str,
        started: float,
    ) -> None:
        """``rpc``: what the RPC server serving these methods counts (for ``stats``);
        ``writes``: the write methods (by default through ``system``; a reader worker's
        go to the writer worker); ``started``: when the server started (``time.monotonic()``)."""
        self.system = system
        self.writes = writes
        self.ranker = ranker
        #: Serves recommend by each surface's migration mode, when there is one.
        self.router = router
        self.rpc = rpc
        self.telemetry = telemetry
        self.version = version
        self.started = started

    def table(self) -> Mapping[str, Handler]:
        return {
            "health": self.health,
            **self._write_methods(),
            "get_item": self.get_item,
            "get_user": self.get_user,
            "search": self.search,
            "recommend": self.recommend,
            "set_migration": self.set_migration,
            "stats": self.stats,
        }

    def _write_methods(self) -> Mapping[str, Handler]:
        if self.writes is not None:
            return self.writes
        return WriteMethods(
            self.system, clock_skew_s=self.system.config.clock_skew_s, telemetry=self.telemetry
        ).table()

    async def health(self, params: Any) -> dict[str, Any]:
        validation.params_map(params)
        return {"status": "ok", "version": self.version}

    async def get_item(self, params: Any) -> dict[str, Any]:
        p = validation.params_map(params)
        item_id = validation.ident(validation.require(p, "id"), "id")
        await self.system.catch_up()
        state = await self.system.get_item(item_id)
        if not state.exists and not state.counters:
            raise NotFound(f"no item {item_id!r}")
        return item_view(state)

    async def get_user(self, params: Any) -> dict[str, Any]:
        p = validation.params_map(params)
        user_id = validation.ident(validation.require(p, "id"), "id")
        await self.system.catch_up()
        state = await self.system.get_user(user_id)
        if state.seq == 0:
            raise NotFound(f"no events for user {user_id!r}")
        return user_view(state)

    async def search(self, params: Any) -> dict[str, Any]:
        query, limit, sort = validation.search(validation.params_map(params))
        await self.system.catch_up()
        try:
            result = self.system.search(query, limit=limit, sort=sort)
        except QueryError as exc:  # an unknown field
            raise BadRequest(str(exc)) from None
        return {"items": result.ids, "total": result.total}

    async def recommend(self, params: Any) -> dict[str, Any]:
        request = validation.recommend(validation.params_map(params))
        await self.system.catch_up()
        try:
            if self.router is not None:
                view = await self.router.recommend(request)
            else:
                view = (await self.ranker.recommend(request)).view()
        except RequestError as exc:
            raise BadRequest(str(exc)) from None
        except RealtimeUnavailable as exc:
            raise Unavailable(str(exc)) from None
        self.telemetry.recommend_served.add(
            1, {"surface": request.surface, "source": view.get("source", "realtime")}
        )
        return view

    async def set_migration(self, params: Any) -> dict[str, Any]:
        p = validation.params_map(params)
        surface = validation.ident(validation.require(p, "surface"), "surface")
        if self.router is None:
            raise Unavailable("this server has no migration router")
        try:
            state = self.router.set_migration(
                surface, {k: v for k, v in p.items() if k not in ("surface", "_trace")}
            )
        except MigrationError as exc:
            raise BadRequest(str(exc)) from None
        return state.view()

    async def stats(self, params: Any) -> dict[str, Any]:
        validation.params_map(params)
        return statistics.flatten(self._statistics())

    def _statistics(self) -> dict[str, object | None]:
        """Each :data:`~matchlight.server.statistics.SECTIONS` source's value, now."""
        s = self.system.statistics()
        router, feed = self.router, None if self.router is None else self.router.feed
        return {
            "server": statistics.ServerStatistics(
                version=self.version, uptime_s=round(time.monotonic() - self.started, 3)
            ),
            "store": s.store,
            "writer": s.writer,
            "items": s.items,
            "users": s.users,
            "index": s.index,
            "migration": None if router is None else router.states(),
            "router": None if router is None else router.statistics(),
            "feed": None if feed is None else feed.statistics(),
            "ranker": self.ranker.statistics(),
            "rpc": self.rpc.statistics(),
            "cluster": None,  # a cluster node's (see matchlight.cluster.routing)
        }
