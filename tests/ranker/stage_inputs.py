"""Inputs the ranking stages' tests share: a small item index, and candidate arrays."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from actors.item_index import new_index
from index import Index
from ranker import stages


def build_index(items: Sequence[tuple[str, str | None, Mapping[str, Sequence[str]]]]) -> Index:
    """An item index holding ``(id, kind, terms)`` in order: internal ids 0, 1, 2, …"""
    index = new_index()
    for item_id, kind, terms in items:
        index.put(item_id, kind=kind, terms=terms, numbers={}, counters={})
    return index


def docs_of(*docs: int) -> stages.Docs:
    return np.array(docs, dtype=np.uint32)
