"""Errors of the index package."""

from __future__ import annotations


class SearchError(Exception):
    """Base class of the index's errors."""


class QueryError(SearchError, ValueError):
    """A query is malformed or names a field the index does not have; the message says which."""
