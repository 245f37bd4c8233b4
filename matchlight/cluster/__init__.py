"""Cluster mode: Matchlight nodes as partitioned projections of a NATS JetStream stream.

``matchlight serve --log nats://H1:P1,H2:P2,H3:P3`` makes a node of a cluster
(:mod:`.node`). The stream (3 replicas) is the log; each node keeps its own
LMDB copy of it, applies every event to items (index, signals,
co-occurrence) and serves the users of the partitions it holds leases on
(:mod:`.leases`), forwarding other users' requests to their owner.
"""
