"""What ``matchlight serve --log nats://…`` was told (no NATS import: read at every start)."""

from __future__ import annotations

import re
from typing import Final

import attrs

from matchlight.cluster.partitions import DEFAULT_PARTITIONS

_NODE_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


class ClusterConfigError(ValueError):
    """A ``--log`` or cluster flag that cannot work (the message says which)."""


@attrs.frozen(kw_only=True)
class ClusterConfig:
    #: NATS server URLs (``nats://host:port``), any of the cluster's.
    servers: tuple[str, ...]
    #: This node's id: stable across restarts (a StatefulSet pod name, a host name).
    node_id: str
    #: The address other nodes forward requests to (default: the address it listens on).
    advertise: str | None = None
    partitions: int = DEFAULT_PARTITIONS
    #: Replicas of the stream and of the lease bucket (3 for a cluster of 3 NATS servers).
    replicas: int = 3
    #: How long a write waits for the stream to acknowledge it (a leader election takes
    #: seconds), seconds.
    publish_deadline_s: float = 30.0
    #: How long a request for a partition without a live owner waits for one, seconds.
    move_wait_s: float = 3.0


def parse_log_url(value: str) -> tuple[str, ...]:
    """``nats://H1:P1,H2:P2,…`` → one URL per server.

    Raises:
        ClusterConfigError: not of that form.
    """
    if not value.startswith("nats://"):
        raise ClusterConfigError(f"--log: expected nats://HOST:PORT[,HOST:PORT…], got {value!r}")
    hosts = [h.strip() for h in value[len("nats://") :].split(",")]
    for host in hosts:
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit() or not 0 < int(port) < 65536:
            raise ClusterConfigError(f"--log: {host!r} is not HOST:PORT")
    return tuple(f"nats://{h}" for h in hosts)


def check_node_id(value: str) -> str:
    if not _NODE_ID.fullmatch(value):
        raise ClusterConfigError(f"--node-id: 1 to 64 letters, digits, '-' or '_', got {value!r}")
    return value
