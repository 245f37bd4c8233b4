"""The ``stats`` result: every component's frozen statistics, flattened by one table.

Each part of the server has ``statistics()`` returning a frozen value (the
store's, the writer's, each actor runtime's, the index's, the router's, the
legacy feed's, the ranker's, the RPC layer's). The ``stats`` contract
(DESIGN.md) is one flat map; :data:`SECTIONS` says which contract key is read
from which field of which value, in the contract's order. Adding a statistic
to the contract is one line here.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Mapping
from typing import Any, Final

import attrs

#: Reads one contract value from a component's statistics value.
Read = Callable[[Any], Any]


@attrs.frozen(kw_only=True)
class ServerStatistics:
    """The server process itself."""

    version: str
    #: Seconds since the server started, to the millisecond.
    uptime_s: float


@attrs.frozen
class Section:
    """The contract keys read from one component's statistics (``source`` names it)."""

    source: str
    keys: Mapping[str, Read]


def same(*names: str, prefix: str = "") -> dict[str, Read]:
    """Keys ``prefix + name`` read from the fields ``name``."""
    return {prefix + name: operator.attrgetter(name) for name in names}


def renamed(**fields: str) -> dict[str, Read]:
    """Keys read from fields of other names (``key="field"``)."""
    return {key: operator.attrgetter(name) for key, name in fields.items()}


def _served(path: str) -> Read:
    return lambda router: router.served[path]


def _batches_per_commit(writer: Any) -> float:
    return round(writer.batches / writer.commits, 2) if writer.commits else 0.0


_ACTOR_FIELDS: Final = ("active", "activations", "passivations", "restarts")

#: The ``stats`` map, source by source. A source whose value is ``None`` (no
#: router, no legacy feed) contributes no keys.
SECTIONS: Final = (
    Section("server", same("version", "uptime_s")),
    Section(
        "store",
        {
            **renamed(log_seq="last_seq", store_map_bytes="map_size", store_resizes="resizes"),
            # Found while reading (see `matchlight verify` for the whole store).
            **same("corrupt_snapshots", "corrupt_events"),
        },
    ),
    Section(
        "writer",
        {
            **renamed(commits="commits", events_committed="events", batches_committed="batches"),
            "commit_events_mean": lambda writer: round(writer.mean_group_events, 2),
            **renamed(commit_events_max="largest_group_events"),
            "commit_batches_mean": _batches_per_commit,
        },
    ),
    Section("items", same(*_ACTOR_FIELDS, prefix="item_actors_")),
    Section("users", same(*_ACTOR_FIELDS, prefix="user_actors_")),
    Section(
        "index",
        same(
            *("items", "ids", "term_fields", "postings", "numeric_fields", "geo_fields"),
            prefix="index_",
        ),
    ),
    Section("migration", {"migration": lambda states: states}),
    Section(
        "router",
        {
            "served_realtime": _served("realtime"),
            "served_legacy": _served("legacy"),
            "served_fallback": _served("fallback"),
            "served_interleaved": _served("interleaved"),
            **same("shadows", "shadows_skipped", "comparisons_kept", "comparisons_lost"),
        },
    ),
    Section("feed", same("snapshot", "entries", "corrupt_entries", prefix="feed_")),
    Section(
        "ranker",
        {
            **renamed(recommend_requests="requests"),
            **same(
                *("model", "model_swaps", "model_failures"),
                *("decisions_written", "decisions_kept", "decisions_lost"),
            ),
        },
    ),
    Section(
        "cluster",
        same(
            *("node", "partitions", "partitions_owned", "stream_position", "forwarded"),
            *("forward_failures", "moving_unavailable", "lease_claims", "lease_releases"),
            *("lease_losses", "undecodable_messages"),
            prefix="cluster_",
        ),
    ),
    Section(
        "rpc",
        same(
            *("connections_open", "connections_total", "requests", "notifications"),
            *("request_errors", "protocol_errors", "connections_refused"),
            *("connections_timed_out", "overloaded", "unauthorized", "forbidden"),
        ),
    ),
)


def source_names() -> list[str]:
    """The sources :func:`flatten` reads, in order."""
    return [section.source for section in SECTIONS]


def flatten(values: Mapping[str, object | None]) -> dict[str, Any]:
    """The ``stats`` map from each source's statistics value (``None``: the source is absent).

    Raises:
        KeyError: a section's source is not in ``values``.
    """
    out: dict[str, Any] = {}
    for section in SECTIONS:
        value = values[section.source]
        if value is not None:
            out.update((key, read(value)) for key, read in section.keys.items())
    return out
