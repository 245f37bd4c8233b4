"""The legacy adapter: migrate product surfaces one at a time from the old batch feed.

Sources and their readers read the batch feed (:mod:`legacy_adapter.sources`), the
store loads it into LMDB (:mod:`legacy_adapter.feed`); the router serves each
surface by its migration mode (:mod:`legacy_adapter.migration`,
:mod:`legacy_adapter.router`);
comparison metrics and the shadow report judge the two paths
(:mod:`legacy_adapter.metrics`, :mod:`legacy_adapter.report`).
"""

import importlib
from typing import TYPE_CHECKING, Any

from legacy_adapter.errors import (
    FeedError,
    LegacyAdapterError,
    MigrationError,
    RealtimeUnavailable,
)

# The feed and the router pull in LMDB, the ranker and numpy: they are imported on
# first use (PEP 562), so `matchlight health` and `shadow-report` start fast.
if TYPE_CHECKING:
    from legacy_adapter.feed import FeedStatistics, FeedStore, watch_feed
    from legacy_adapter.feed_files import check_feed_store, read_current
    from legacy_adapter.migration import (
        DEFAULT_MODE,
        MODES,
        Migration,
        canary_bucket,
        check_migration,
        load_migration_config,
        read_migration_state,
    )
    from legacy_adapter.records import BadRecord
    from legacy_adapter.router import Router, RouterStatistics, open_router
    from legacy_adapter.sources import FeedEntry, FeedSource, LoadReport, open_source

_LAZY: dict[str, str] = {
    "BadRecord": "legacy_adapter.records",
    "FeedEntry": "legacy_adapter.sources",
    "FeedSource": "legacy_adapter.sources",
    "FeedStore": "legacy_adapter.feed",
    "FeedStatistics": "legacy_adapter.feed",
    "LoadReport": "legacy_adapter.sources",
    "open_source": "legacy_adapter.sources",
    "watch_feed": "legacy_adapter.feed",
    "check_feed_store": "legacy_adapter.feed_files",
    "read_current": "legacy_adapter.feed_files",
    "DEFAULT_MODE": "legacy_adapter.migration",
    "MODES": "legacy_adapter.migration",
    "Migration": "legacy_adapter.migration",
    "Router": "legacy_adapter.router",
    "RouterStatistics": "legacy_adapter.router",
    "canary_bucket": "legacy_adapter.migration",
    "check_migration": "legacy_adapter.migration",
    "load_migration_config": "legacy_adapter.migration",
    "open_router": "legacy_adapter.router",
    "read_migration_state": "legacy_adapter.migration",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'legacy_adapter' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "DEFAULT_MODE",
    "MODES",
    "BadRecord",
    "FeedEntry",
    "FeedError",
    "FeedSource",
    "FeedStatistics",
    "FeedStore",
    "LegacyAdapterError",
    "LoadReport",
    "Migration",
    "MigrationError",
    "RealtimeUnavailable",
    "Router",
    "RouterStatistics",
    "canary_bucket",
    "check_feed_store",
    "check_migration",
    "load_migration_config",
    "open_router",
    "open_source",
    "read_current",
    "read_migration_state",
    "watch_feed",
]
