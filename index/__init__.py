"""The incremental inverted index: term postings, numeric ranges and geo over roaring bitmaps.

A pure library (no Trio, no I/O). The actor system keeps one :class:`Index`
current from item state changes; ``search`` and the ranker query it in-process.
"""

from index.document import KIND_FIELD, Document, DocumentFields
from index.errors import QueryError, SearchError
from index.geo import distance_km
from index.inverted import Index, IndexStatistics, SearchResult
from index.numeric import ids_of, to_bitmap
from index.query import (
    EVERYTHING,
    AllOf,
    AnyOf,
    Near,
    Not,
    Query,
    Range,
    Sort,
    Term,
    parse,
    parse_sort,
    unparse,
)

__all__ = [
    "EVERYTHING",
    "KIND_FIELD",
    "AllOf",
    "AnyOf",
    "Document",
    "DocumentFields",
    "Index",
    "IndexStatistics",
    "Near",
    "Not",
    "Query",
    "QueryError",
    "Range",
    "SearchError",
    "SearchResult",
    "Sort",
    "Term",
    "distance_km",
    "ids_of",
    "parse",
    "parse_sort",
    "to_bitmap",
    "unparse",
]
