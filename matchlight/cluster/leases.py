"""Who serves which partition: nodes and revision-checked partition leases in JetStream KV.

The bucket holds ``node.ID`` (a node's address, rewritten every tick while
it lives) and ``part.N`` (the node holding partition N, rewritten by its
holder every tick). Liveness is judged without trusting clocks across
machines: a key is live while its revision keeps changing, as *this* node
observes it on its own monotonic clock; one unchanged for ``ttl_s`` is dead.

Every tick a node
- renews its leases, each by an update that names the revision it last wrote
  (if another node took the lease meanwhile, the update fails and the node
  drops the partition at once);
- releases a lease when the partition's desired owner is another live node
  (a node that joins gets its share);
- claims a partition it is the desired owner of whose lease is absent, released
  or expired, again revision-checked, so two claimants cannot both win.

The desired owner of a partition is the live node with the highest
rendezvous hash of (node, partition): partitions spread evenly and move only
when nodes come or go. A holder *fences itself*: it serves a partition only
while its last successful renewal is less than ``ttl_s - margin_s`` old, and
another node claims only after ``ttl_s`` without a renewal, so an old owner
cut off from NATS stops serving before a new one starts.
"""

from __future__ import annotations

import enum
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
from matchlight.cluster.stream import TRANSIENT, EventStream

log = logging.getLogger(__name__)

#: A lease or a node not renewed for this long (as this node sees it) is dead, seconds.
DEFAULT_TTL_S: Final = 6.0
#: How often a node renews, claims and releases, seconds.
DEFAULT_TICK_S: Final = 1.0
#: A holder stops serving this long before others may take its lease, seconds.
DEFAULT_MARGIN_S: Final = 2.0

_KV_ERRORS: Final = (*TRANSIENT, nats.errors.Error)


class _Unknown(enum.Enum):
    UNKNOWN = "unknown"


#: A lease write whose outcome is not known (see ``_write_all``).
UNKNOWN: Final = _Unknown.UNKNOWN


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
    """What a tick does: leases to renew (partition → revision held), to release, to claim
    (partition → revision to replace, 0 if there is no key)."""

    renew: dict[int, int]
    release: dict[int, int]
    claim: dict[int, int]


def plan(
    me: str,
    partitions: int,
    held: Mapping[int, int],
    observed: Mapping[str, Observed],
    now: float,
    ttl_s: float,
) -> Plan:
    """This tick's :class:`Plan` from the keys as observed (a pure function)."""
    live_nodes = {me}
    for key, seen in observed.items():
        if key.startswith("node.") and now - seen.since < ttl_s:
            live_nodes.add(key[len("node.") :])
    renew: dict[int, int] = {}
    release: dict[int, int] = {}
    claim: dict[int, int] = {}
    for partition in range(partitions):
        desired = desired_owner(partition, live_nodes)
        lease = observed.get(f"part.{partition}")
        if partition in held:
            if desired != me:
                release[partition] = held[partition]
            else:
                renew[partition] = held[partition]
            continue
        if desired != me:
            continue
        if lease is None or not lease.value:
            claim[partition] = 0 if lease is None else lease.revision
        elif lease.value.get("node") == me or now - lease.since >= ttl_s:
            claim[partition] = lease.revision  # ours before a restart, or expired
    return Plan(renew=renew, release=release, claim=claim)


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
        #: Partition → when (monotonic) this node last renewed or took its lease.
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
        """``(node id, address)`` of the live holder of ``partition`` as last observed."""
        now = time.monotonic()
        lease = self.observed.get(f"part.{partition}")
        if lease is None or not lease.value or now - lease.since >= self.ttl_s:
            return None
        node = lease.value.get("node")
        registered = self.observed.get(f"node.{node}")
        if not isinstance(node, str) or registered is None or not registered.value:
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
        try:
            entries = await thread.run(_read_all, stream, self.node_id, self.address)
        except _KV_ERRORS as exc:
            log.warning("partition leases not read: %s", exc)
            return
        now = time.monotonic()
        self._observe(entries, now)
        todo = plan(self.node_id, self.layout.partitions, self.held, self.observed, now, self.ttl_s)
        value = json.dumps({"node": self.node_id}).encode()
        started = time.monotonic()
        try:
            outcome = await thread.run(_write_all, stream, todo, value)
        except _KV_ERRORS as exc:
            log.warning("partition leases not written: %s", exc)
            return
        for partition, revision in outcome.items():
            if revision is UNKNOWN:  # the request failed on the way: try again next tick
                continue
            if partition in todo.release:
                self.held.pop(partition, None)
                self.renewed.pop(partition, None)
                self.releases += 1
                log.info("released partition %d", partition)
            elif revision is None:  # taken by another node, or never ours
                if partition in self.held:
                    self.losses += 1
                    log.warning("lost the lease on partition %d", partition)
                self.held.pop(partition, None)
                self.renewed.pop(partition, None)
            else:
                if partition in todo.claim:
                    self.claims += 1
                    log.info("took partition %d", partition)
                self.held[partition] = revision
                self.renewed[partition] = started
        # Requests waiting for a partition's owner look again (it may be known now).
        self.changed.set()
        self.changed = trio.Event()

    def _observe(self, entries: Mapping[str, tuple[dict[str, Any], int]], now: float) -> None:
        for key, (value, revision) in entries.items():
            seen = self.observed.get(key)
            if seen is None or seen.revision != revision:
                self.observed[key] = Observed(value=value, revision=revision, since=now)
        for key in self.observed.keys() - entries.keys():
            del self.observed[key]

    async def release_all(self, thread: AsyncioThread, stream: EventStream) -> None:
        """Give up every lease and the registration (a clean stop): others take over at once."""
        todo = Plan(renew={}, release=dict(self.held), claim={})
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


async def _read_all(
    stream: EventStream, node_id: str, address: str
) -> dict[str, tuple[dict[str, Any], int]]:
    """Register (renew) this node, then every key of the bucket: value and revision."""
    kv = stream.kv
    await kv.put(f"node.{node_id}", json.dumps({"address": address, "at": time.time()}).encode())
    try:
        keys = await kv.keys()
    except nats.js.errors.NoKeysError:
        return {}
    out: dict[str, tuple[dict[str, Any], int]] = {}
    for key in keys:
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # deleted meanwhile
            continue
        try:
            value = json.loads(entry.value) if entry.value else {}
        except ValueError:
            value = {}
        out[key] = (value if isinstance(value, dict) else {}, entry.revision)
    return out


async def _write_all(
    stream: EventStream, todo: Plan, value: bytes
) -> dict[int, int | _Unknown | None]:
    """Carry out ``todo``: per partition the new revision held, ``None`` (lost, refused, or
    released) or :data:`UNKNOWN` (the request failed on the way: NATS is electing a leader,
    a server went away)."""
    kv = stream.kv
    out: dict[int, int | _Unknown | None] = {}
    for partition, revision in [*todo.renew.items(), *todo.claim.items()]:
        key = f"part.{partition}"
        try:
            if revision == 0:
                out[partition] = await kv.create(key, value)
            else:
                out[partition] = await kv.update(key, value, last=revision)
        except nats.js.errors.KeyWrongLastSequenceError:
            out[partition] = None
        except TRANSIENT as exc:
            log.debug("partition %d: lease not written: %s", partition, exc)
            out[partition] = UNKNOWN
        except nats.js.errors.APIError as exc:  # "key exists" on create: someone was first
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
