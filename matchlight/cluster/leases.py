"""Who serves which partition: node heartbeats and revision-checked partition leases in
JetStream KV.

The bucket holds ``node.ID`` (a node's address, rewritten every tick while it
lives: its heartbeat) and ``part.N`` (the node holding partition N, written
only when the partition changes hands). Liveness is judged without trusting
clocks across machines: a node is live while the revision of its ``node.ID``
keeps changing, as *this* node observes it on its own monotonic clock; one
unchanged for ``ttl_s`` is dead, and so are the leases that name it. So a
node writes one key per tick however many partitions it holds.

Every tick a node
- writes its heartbeat, then takes the bucket as its watch has it up to that
  heartbeat;
- drops a partition whose lease no longer has the revision it wrote (another
  node took it);
- releases a lease when the partition's desired owner is another live node
  (a node that joins gets its share);
- claims a partition it is the desired owner of whose lease is absent, released,
  its own from before a restart, or held by a dead node: revision-checked, so of
  two claimants one wins.

The desired owner of a partition is the live node with the highest
rendezvous hash of (node, partition): partitions spread evenly and move only
when nodes come or go. A holder *fences itself*: it serves its partitions
only while its last successful heartbeat is less than ``ttl_s - margin_s``
old, and another node claims them only after seeing no heartbeat for
``ttl_s``, so an old owner cut off from NATS stops serving before a new one
starts.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs
import nats.errors
import nats.js.errors
import trio

from matchlight.cluster.bridge import AsyncioThread
from matchlight.cluster.partitions import Layout, partition_of
from matchlight.cluster.stream import TRANSIENT, EventStream, StaleMirror

log = logging.getLogger(__name__)

#: A node whose heartbeat did not change for this long (as this node sees it) is dead, seconds.
DEFAULT_TTL_S: Final = 6.0
#: How often a node beats, claims and releases, seconds.
DEFAULT_TICK_S: Final = 1.0
#: A holder stops serving this long before others may take its leases, seconds.
DEFAULT_MARGIN_S: Final = 2.0

#: How long a tick waits for the bucket's watch to show its heartbeat, seconds.
MIRROR_DEADLINE_S: Final = 2.0

_KV_ERRORS: Final = (*TRANSIENT, nats.errors.Error, StaleMirror)


def desired_owner(partition: int, nodes: Iterable[str]) -> str | None:
    """The node that should hold ``partition`` among ``nodes`` (rendezvous hashing, with a
    real hash: CRC-32's linearity spread 64 partitions over 3 nodes as 16, 13 and 35)."""
    return max(nodes, key=lambda node: (_weight(node, partition), node), default=None)


def _weight(node: str, partition: int) -> bytes:
    return hashlib.blake2b(f"{node}/{partition}".encode(), digest_size=8).digest()


@attrs.define
class Observed:
    """A key as this node last read it, and since when (monotonic) its revision is unchanged."""

    value: dict[str, Any]
    revision: int
    since: float


@attrs.frozen(kw_only=True)
class Plan:
    """What a tick does, per partition: the revision of the lease to release, or to replace
    by a claim (0: there is no key); and the partitions held that another node took."""

    release: dict[int, int]
    claim: dict[int, int]
    lost: list[int]


def live_nodes(me: str, observed: Mapping[str, Observed], now: float, ttl_s: float) -> set[str]:
    """This node and every node whose heartbeat changed less than ``ttl_s`` ago."""
    live = {me}
    for key, seen in observed.items():
        if key.startswith("node.") and now - seen.since < ttl_s and seen.value:
            live.add(key[len("node.") :])
    return live


def plan(
    me: str,
    partitions: int,
    held: Mapping[int, int],
    observed: Mapping[str, Observed],
    now: float,
    ttl_s: float,
) -> Plan:
    """This tick's :class:`Plan` from the keys as observed (a pure function)."""
    live = live_nodes(me, observed, now, ttl_s)
    release: dict[int, int] = {}
    claim: dict[int, int] = {}
    lost: list[int] = []
    for partition in range(partitions):
        desired = desired_owner(partition, live)
        lease = observed.get(f"part.{partition}")
        if partition in held:
            if lease is None or lease.revision != held[partition]:
                lost.append(partition)
            elif desired != me:
                release[partition] = held[partition]
            continue
        if desired != me:
            continue
        holder = None if lease is None else lease.value.get("node")
        if lease is None or not lease.value:
            claim[partition] = 0 if lease is None else lease.revision
        elif holder == me or holder not in live:
            claim[partition] = lease.revision  # ours before a restart, or its node died
    return Plan(release=release, claim=claim, lost=lost)


class Leases:
    """This node's leases, kept by :meth:`run`; :meth:`owns_user` and :meth:`owner_of` for
    the request path."""

    def __init__(
        self,
        node_id: str,
        address: str,
        layout: Layout,
        *,
        ttl_s: float = DEFAULT_TTL_S,
        tick_s: float = DEFAULT_TICK_S,
        margin_s: float = DEFAULT_MARGIN_S,
    ) -> None:
        self.node_id = node_id
        self.address = address
        self.layout = layout
        self.ttl_s = ttl_s
        self.tick_s = tick_s
        self.margin_s = margin_s
        #: Partition → the revision of its lease this node wrote last.
        self.held: dict[int, int] = {}
        #: Partition → when (monotonic) the last heartbeat before which this node held its
        #: lease was sent (what fencing measures from).
        self.renewed: dict[int, float] = {}
        self.observed: dict[str, Observed] = {}
        self.claims = 0
        self.releases = 0
        self.losses = 0
        self.changed = trio.Event()

    # -- the request path ------------------------------------------------------------

    def owns(self, partition: int) -> bool:
        """Whether this node may serve ``partition`` now (its lease is fresh)."""
        renewed = self.renewed.get(partition)  # (a dict read: safe from another thread)
        return renewed is not None and time.monotonic() - renewed < self.ttl_s - self.margin_s

    def owns_user(self, user_id: str) -> bool:
        return self.owns(partition_of(user_id, self.layout.partitions))

    def owner_of(self, partition: int) -> tuple[str, str] | None:
        """``(node id, address)`` of the holder of ``partition`` as last observed, if its
        node is live."""
        lease = self.observed.get(f"part.{partition}")
        node = None if lease is None else lease.value.get("node")
        if not isinstance(node, str):
            return None
        registered = self.observed.get(f"node.{node}")
        alive = node == self.node_id or (
            registered is not None and time.monotonic() - registered.since < self.ttl_s
        )
        if registered is None or not alive:
            return None
        address = registered.value.get("address")
        return (node, address) if isinstance(address, str) else None

    # -- keeping them --------------------------------------------------------------

    async def run(
        self,
        thread: AsyncioThread,
        stream: EventStream,
        *,
        task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Tick every ``tick_s`` until cancelled (the first tick before ``started``)."""
        await self._tick(thread, stream)
        task_status.started()
        while True:
            await trio.sleep(self.tick_s)
            await self._tick(thread, stream)

    async def _tick(self, thread: AsyncioThread, stream: EventStream) -> None:
        beat = time.monotonic()
        try:
            entries = await thread.run(_beat_and_read, stream, self.node_id, self.address)
        except _KV_ERRORS as exc:
            log.warning("partition leases not read: %s", exc)
            return
        now = time.monotonic()
        self._observe(entries, now)
        todo = plan(self.node_id, self.layout.partitions, self.held, self.observed, now, self.ttl_s)
        for partition in todo.lost:
            self.losses += 1
            log.warning("lost the lease on partition %d", partition)
            self._forget(partition)
        value = json.dumps({"node": self.node_id}).encode()
        try:
            outcome = await thread.run(_write_all, stream, todo, value)
        except _KV_ERRORS as exc:
            log.warning("partition leases not written: %s", exc)
            outcome = {}
        for partition, revision in outcome.items():
            if partition in todo.release:
                self.releases += 1
                log.info("released partition %d", partition)
                self._forget(partition)
            elif isinstance(revision, int):
                self.claims += 1
                log.info("took partition %d", partition)
                self.held[partition] = revision
        # The heartbeat went through: every lease still held is good from when it was sent.
        for partition in self.held:
            self.renewed[partition] = beat
        # Requests waiting for a partition's owner look again (it may be known now).
        self.changed.set()
        self.changed = trio.Event()

    def _forget(self, partition: int) -> None:
        self.held.pop(partition, None)
        self.renewed.pop(partition, None)

    def _observe(self, entries: Mapping[str, tuple[dict[str, Any], int]], now: float) -> None:
        for key, (value, revision) in entries.items():
            seen = self.observed.get(key)
            if seen is None or seen.revision != revision:
                self.observed[key] = Observed(value=value, revision=revision, since=now)
        for key in self.observed.keys() - entries.keys():
            del self.observed[key]

    async def release_all(self, thread: AsyncioThread, stream: EventStream) -> None:
        """Give up every lease and the registration (a clean stop): others take over at once."""
        todo = Plan(release=dict(self.held), claim={}, lost=[])
        self.held.clear()
        self.renewed.clear()
        try:
            await thread.run(_write_all, stream, todo, b"")
            await thread.run(_unregister, stream, self.node_id)
        except _KV_ERRORS as exc:
            log.warning("leases not released (they expire instead): %s", exc)

    def partitions(self) -> list[int]:
        """The partitions this node serves now (also read from the metrics thread: the
        dict is copied first, in one step)."""
        return sorted(p for p in list(self.held) if self.owns(p))


async def _beat_and_read(
    stream: EventStream, node_id: str, address: str
) -> dict[str, tuple[dict[str, Any], int]]:
    """This node's heartbeat, then every key of the bucket (value and revision) as of at
    least that heartbeat (see :class:`~matchlight.cluster.stream.BucketMirror`).

    Raises:
        StaleMirror: the bucket's watch has fallen behind (it is started again).
    """
    revision = await stream.kv.put(
        f"node.{node_id}", json.dumps({"address": address, "at": time.time()}).encode()
    )
    assert stream.mirror is not None, "connect() first"
    return await stream.mirror.fresh(revision, MIRROR_DEADLINE_S)


async def _write_all(stream: EventStream, todo: Plan, value: bytes) -> dict[int, int | None]:
    """Carry out ``todo``'s claims and releases: per partition the revision now held, or
    ``None`` (refused: another node was first; failed on the way; or released)."""
    kv = stream.kv
    out: dict[int, int | None] = {}
    for partition, revision in todo.claim.items():
        key = f"part.{partition}"
        try:
            if revision == 0:
                out[partition] = await kv.create(key, value)
            else:
                out[partition] = await kv.update(key, value, last=revision)
        except (*TRANSIENT, nats.js.errors.APIError) as exc:  # wrong revision, key exists …
            log.debug("partition %d not taken: %s", partition, exc)
            out[partition] = None
    for partition, revision in todo.release.items():
        try:
            await kv.delete(f"part.{partition}", last=revision)
        except (*TRANSIENT, nats.js.errors.APIError) as exc:
            log.debug("partition %d not released (its lease expires instead): %s", partition, exc)
        out[partition] = None
    return out


async def _unregister(stream: EventStream, node_id: str) -> None:
    await stream.kv.delete(f"node.{node_id}")
