"""The contract's methods on a cluster node: a user's reads go to the node that owns them.

``recommend`` and ``get_user`` are served here when this node holds the
user's partition, and otherwise forwarded as they came to the holder's RPC
address (one connection per peer, kept open). A request for a partition
without a live holder (it is moving: its old node died and its lease has not
expired yet) waits up to ``move_wait_s`` for one, then answers
``unavailable`` with a retry hint: never a stale answer. A forwarded request
is never forwarded again (it carries ``_forwarded``). Writes, ``search`` and
``get_item`` are served by any node: every node has every item.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import attrs
import trio
from opentelemetry import trace

from matchlight.address import parse_connect
from matchlight.client import AsyncClient, open_client
from matchlight.cluster.follower import StreamFollower
from matchlight.cluster.leases import Leases
from matchlight.cluster.partitions import partition_of
from matchlight.errors import Unavailable
from matchlight.server import validation
from matchlight.server.methods import Methods

log = logging.getLogger(__name__)

#: The parameter a forwarded request carries.
FORWARDED = "_forwarded"


@attrs.frozen(kw_only=True)
class ClusterStatistics:
    node: str
    partitions: int
    #: The partitions this node serves now, and the last stream sequence it applied.
    partitions_owned: int
    stream_position: int
    forwarded: int
    forward_failures: int
    moving_unavailable: int
    lease_claims: int
    lease_releases: int
    lease_losses: int
    undecodable_messages: int


class Peers:
    """One client connection per other node, opened on first use, kept in ``nursery``."""

    def __init__(self, nursery: trio.Nursery, token: str | None) -> None:
        self._nursery = nursery
        self._token = token
        self._clients: dict[str, tuple[AsyncClient, trio.CancelScope]] = {}
        self._lock = trio.Lock()

    async def call(self, address: str, method: str, params: Mapping[str, Any]) -> Any:
        """``method`` answered by the node at ``address``.

        Raises:
            OSError: it could not be reached.
            RpcError: its error answer.
        """
        client = await self._client(address)
        try:
            return await client.call(method, params)
        except OSError:
            self._drop(address)
            raise

    def _drop(self, address: str) -> None:
        """Forget the connection to ``address`` (its peer died or restarts) and close it."""
        held = self._clients.pop(address, None)
        if held is not None:
            held[1].cancel()

    async def _client(self, address: str) -> AsyncClient:
        async with self._lock:
            held = self._clients.get(address)
            if held is None:
                held = self._clients[address] = await self._nursery.start(self._hold, address)
            return held[0]

    async def _hold(
        self,
        address: str,
        *,
        task_status: trio.TaskStatus[tuple[AsyncClient, trio.CancelScope]],
    ) -> None:
        target = parse_connect(address)
        with trio.CancelScope() as scope:
            async with open_client(
                target.host,
                target.port,
                unix=target.unix,
                token=self._token,
                timeout=10.0,
                retries=0,
            ) as client:
                task_status.started((client, scope))
                await trio.sleep_forever()


class ClusterMethods(Methods):
    """:class:`Methods` with user reads routed to their partition's owner."""

    def __init__(
        self,
        *args: Any,
        leases: Leases,
        peers: Peers,
        follower: StreamFollower,
        move_wait_s: float,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.leases = leases
        self.peers = peers
        self.follower = follower
        self.move_wait_s = move_wait_s
        self.forwarded = 0
        self.forward_failures = 0
        self.moving_unavailable = 0

    async def recommend(self, params: Any) -> dict[str, Any]:
        return await self._routed("recommend", "user", params, super().recommend)

    async def get_user(self, params: Any) -> dict[str, Any]:
        return await self._routed("get_user", "id", params, super().get_user)

    async def _routed(
        self,
        method: str,
        field: str,
        params: Any,
        local: Callable[[Any], Awaitable[dict[str, Any]]],
    ) -> dict[str, Any]:
        p = dict(validation.params_map(params))
        forwarded = p.pop(FORWARDED, False) is True
        user = validation.ident(validation.require(p, field), field)
        partition = partition_of(user, self.leases.layout.partitions)
        with trio.move_on_after(self.move_wait_s):
            while True:
                if self.leases.owns(partition):
                    return await local([p])
                owner = self.leases.owner_of(partition)
                if owner is not None and owner[0] != self.leases.node_id and not forwarded:
                    return await self._forward(owner[1], method, p)
                await self.leases.changed.wait()
        self.moving_unavailable += 1
        raise Unavailable(
            f"partition {partition} of user {user!r} is moving between nodes; "
            f"retry in {self.leases.ttl_s:g} s"
        )

    async def _forward(self, address: str, method: str, p: dict[str, Any]) -> dict[str, Any]:
        if "_trace" in p and trace.get_current_span().get_span_context().is_valid:
            p = {key: value for key, value in p.items() if key != "_trace"}
        try:
            result: dict[str, Any] = await self.peers.call(address, method, {**p, FORWARDED: True})
        except OSError as exc:
            self.forward_failures += 1
            raise Unavailable(
                f"the node serving this user ({address}) is not reachable: {exc}; retry shortly"
            ) from None
        self.forwarded += 1
        return result

    def _statistics(self) -> dict[str, object | None]:
        values = super()._statistics()
        leases = self.leases
        values["cluster"] = ClusterStatistics(
            node=leases.node_id,
            partitions=leases.layout.partitions,
            partitions_owned=len(leases.partitions()),
            stream_position=self.follower.position,
            forwarded=self.forwarded,
            forward_failures=self.forward_failures,
            moving_unavailable=self.moving_unavailable,
            lease_claims=leases.claims,
            lease_releases=leases.releases,
            lease_losses=leases.losses,
            undecodable_messages=self.follower.undecodable,
        )
        return values
