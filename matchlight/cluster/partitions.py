"""Which partition a user belongs to, and the stream subjects events are published on.

A user's partition is a stable hash of their id (CRC-32 of its utf-8 bytes,
not Python's per-process salted ``hash()``) modulo the cluster's partition
count, which is fixed for the life of the cluster: every node and every
client library computes the same partition for the same user.
"""

from __future__ import annotations

import zlib
from typing import Final

import attrs

#: Partitions of a cluster unless told otherwise: far more than nodes, so they spread evenly.
DEFAULT_PARTITIONS: Final = 64


def partition_of(user_id: str, partitions: int) -> int:
    """The partition of ``user_id`` among ``partitions``."""
    return zlib.crc32(user_id.encode()) % partitions


@attrs.frozen(kw_only=True)
class Layout:
    """Names in NATS: the stream, its subjects and the partition-lease bucket.

    Item events go to ``PREFIX.items``; a user's interactions to
    ``PREFIX.users.N``, N their partition.
    """

    prefix: str = "matchlight"
    partitions: int = DEFAULT_PARTITIONS

    @property
    def stream(self) -> str:
        return f"{self.prefix.upper()}_EVENTS"

    @property
    def subjects(self) -> str:
        return f"{self.prefix}.events.>"

    @property
    def items_subject(self) -> str:
        return f"{self.prefix}.events.items"

    def users_subject(self, partition: int) -> str:
        return f"{self.prefix}.events.users.{partition}"

    @property
    def bucket(self) -> str:
        """The KV bucket of node registrations and partition leases."""
        return f"{self.prefix}_partitions"

    def user_subject(self, user_id: str) -> str:
        return self.users_subject(partition_of(user_id, self.partitions))
