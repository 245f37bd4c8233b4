"""The peers of ``matchlight bench index``: SQLite, Tantivy and PostgreSQL engines.

Each engine is loaded with the benchmark's catalogue (:mod:`matchlight.bench.index_workload`),
in item order, and answers a :class:`~matchlight.bench.index_workload.Case` as Matchlight
does, on the caller's side of its API:

- SQLite (stdlib): a WAL database in a temporary directory with a page cache
  that holds all of it, an ``items`` table (``ord`` is the rowid) and an
  ``item_tags`` table, indexes on topic, city, (topic, city), (city, likes),
  price, (topic, lat, lon) and (tag, ord), then ``ANALYZE``; a query is a
  count and a ``LIMIT 100`` statement;
- Tantivy (``tantivy`` on PyPI): an in-RAM index with raw-tokenized term
  fields and fast numeric fields (``ord``, likes, price, lat, lon), one
  commit, a manually reloaded reader; a query gets a searcher and searches
  with ``count=True``;
- PostgreSQL, only when :func:`connect_postgres` reaches a server: a table
  with a ``tags text[]`` column under a GIN index, b-tree indexes like
  SQLite's, ``VACUUM ANALYZE``; the same statements as SQLite; dropped at the
  end.

Peers map their row numbers to ids. No engine has a geo distance query that
matches Matchlight's great-circle ``near`` exactly, so peers select a
latitude/longitude bounding box with their indexes and keep the points within
the distance using :func:`index.distance_km`, the very function Matchlight
uses, so the results are identical.

A like-counter update is made visible to the next query: SQLite and
PostgreSQL ``UPDATE`` + commit; Tantivy delete + add + commit + reader reload.
A batch is one transaction, one commit. Nothing is fsynced (SQLite WAL with
``synchronous=NORMAL``, PostgreSQL with ``synchronous_commit=off``, Tantivy in
RAM).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt

from index import distance_km
from matchlight.bench.index_workload import LIMIT, Case, Catalogue, Result, Runner

POSTGRES_ENV: Final = "MATCHLIGHT_BENCH_POSTGRES"
#: B-tree indexes of the SQL peers, one per query shape (tags get their own).
INDEXED_COLUMNS: Final = ("topic", "city", "topic, city", "city, likes", "price", "topic, lat, lon")

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _within(
    names: list[str], ords: IntArray, lats: FloatArray, lons: FloatArray, case: Case
) -> Result:
    """The exact ``near`` filter over a bounding box's points (``ords`` ascending)."""
    kept = ords[distance_km(case.lat, case.lon, lats, lons) <= case.km]
    return len(kept), [names[o] for o in kept[:LIMIT].tolist()]


class _SqlEngine:
    """What SQLite and PostgreSQL share: the same SQL over an ``items``-like table."""

    name: str
    table: str
    #: The driver's placeholder.
    mark: str
    #: The condition "has tag A or tag B" (two placeholders).
    any_tags: str
    _names: list[str]

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def runner(self, kind: str) -> Runner:
        rows, names, table, m = self._rows, self._names, self.table, self.mark
        if kind == "geo":
            box_sql = (
                f"SELECT ord, lat, lon FROM {table} WHERE topic = {m}"
                f" AND lat BETWEEN {m} AND {m} AND lon BETWEEN {m} AND {m} ORDER BY ord"
            )

            def geo(case: Case) -> Result:
                return _within_rows(names, rows(box_sql, (case.topic, *case.box)), case)

            return geo
        shapes: dict[str, tuple[str, str, Callable[[Case], tuple[Any, ...]]]] = {
            "term": (f"topic = {m}", "ord", lambda c: (c.topic,)),
            "two_terms": (f"topic = {m} AND city = {m}", "ord", lambda c: (c.topic, c.city)),
            "term_likes": (f"city = {m} AND likes >= {m}", "ord", lambda c: (c.city, c.min_likes)),
            "price_sorted": (f"price BETWEEN {m} AND {m}", "price DESC", lambda c: (c.lo, c.hi)),
            "any_not": (f"{self.any_tags} AND city <> {m}", "ord", lambda c: (*c.tags, c.city)),
        }
        where, order, params_of = shapes[kind]
        count_sql = f"SELECT count(*) FROM {table} WHERE {where}"
        ids_sql = f"SELECT ord FROM {table} WHERE {where} ORDER BY {order} LIMIT {LIMIT}"

        def run(case: Case) -> Result:
            params = params_of(case)
            ((total,),) = rows(count_sql, params)
            return total, [names[o] for (o,) in rows(ids_sql, params)]

        return run


class SqliteEngine(_SqlEngine):
    name = "sqlite"
    table = "items"
    mark = "?"
    any_tags = "ord IN (SELECT ord FROM item_tags WHERE tag IN (?, ?))"

    def __init__(self, cat: Catalogue, directory: Path) -> None:
        self._names = cat.names
        db = self.db = sqlite3.connect(directory / "bench.sqlite", isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute("PRAGMA cache_size=-1048576")  # 1 GiB: the whole database stays cached
        db.execute("PRAGMA temp_store=MEMORY")
        db.execute(
            "CREATE TABLE items (ord INTEGER PRIMARY KEY, topic TEXT NOT NULL, city TEXT NOT NULL,"
            " price REAL NOT NULL, likes INTEGER NOT NULL, lat REAL NOT NULL, lon REAL NOT NULL)"
        )
        db.execute(
            "CREATE TABLE item_tags (tag TEXT NOT NULL, ord INTEGER NOT NULL,"
            " PRIMARY KEY (tag, ord)) WITHOUT ROWID"
        )
        db.execute("BEGIN")
        db.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?, ?, ?, ?)",
            zip(
                range(len(cat)),
                cat.topics,
                cat.cities,
                cat.prices,
                cat.likes,
                cat.lats,
                cat.lons,
                strict=True,
            ),
        )
        db.executemany(
            "INSERT INTO item_tags VALUES (?, ?)",
            ((tag, ord_) for ord_, tags in enumerate(cat.tags) for tag in tags),
        )
        for columns in INDEXED_COLUMNS:
            db.execute(f"CREATE INDEX items_{columns.replace(', ', '_')} ON items ({columns})")
        db.execute("COMMIT")
        db.execute("ANALYZE")

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.db.execute(sql, params).fetchall()

    def update(self, ord_: int, likes: int) -> None:
        # Autocommit: the statement is its own transaction, committed when it returns.
        self.db.execute("UPDATE items SET likes = ? WHERE ord = ?", (likes, ord_))

    def update_batch(self, changes: Sequence[tuple[int, int]]) -> None:
        self.db.execute("BEGIN")
        self.db.executemany(
            "UPDATE items SET likes = ? WHERE ord = ?", [(likes, o) for o, likes in changes]
        )
        self.db.execute("COMMIT")

    def close(self) -> None:
        self.db.close()


def _within_rows(names: list[str], rows: Sequence[tuple[Any, ...]], case: Case) -> Result:
    """:func:`_within` over (ord, lat, lon) rows in ord order."""
    if not rows:
        return 0, []
    columns = np.array(rows, dtype=np.float64)
    return _within(names, columns[:, 0].astype(np.int64), columns[:, 1], columns[:, 2], case)


class TantivyEngine:
    name = "tantivy"

    def __init__(self, cat: Catalogue) -> None:
        import tantivy

        self._t: Any = tantivy  # its stubs lag the API (SearchResult.count, fast_field_values)
        self._cat = cat
        self._names = cat.names
        builder = tantivy.SchemaBuilder()
        for field in ("topic", "city", "tags"):
            builder.add_text_field(field, tokenizer_name="raw", index_option="basic")
        builder.add_unsigned_field("ord", indexed=True, fast=True)
        builder.add_unsigned_field("likes", indexed=True, fast=True)
        for field in ("price", "lat", "lon"):
            builder.add_float_field(field, indexed=True, fast=True)
        self.schema = builder.build()
        self.index: Any = tantivy.Index(self.schema)
        self.index.config_reader(reload_policy="Manual")
        self.writer = self.index.writer(heap_size=256_000_000)
        for ord_ in range(len(cat)):
            self.writer.add_document(self._document(ord_, cat.likes[ord_]))
        self.writer.commit()
        self.writer.wait_merging_threads()
        self.writer = self.index.writer(heap_size=64_000_000)
        self.index.reload()

    def _document(self, ord_: int, likes: int) -> Any:
        cat = self._cat
        return self._t.Document.from_dict(
            {
                "ord": ord_,
                "topic": cat.topics[ord_],
                "city": cat.cities[ord_],
                "tags": list(cat.tags[ord_]),
                "price": cat.prices[ord_],
                "likes": likes,
                "lat": cat.lats[ord_],
                "lon": cat.lons[ord_],
            },
            self.schema,
        )

    def runner(self, kind: str) -> Runner:
        if kind == "price_sorted":
            return self._price_sorted_runner()
        if kind == "geo":
            return self._geo_runner()
        if kind not in ("term", "two_terms", "term_likes", "any_not"):
            raise ValueError(kind)
        query_of = self._filter_query(kind)
        index, names, ascending = self.index, self._names, self._t.Order.Asc

        def first(case: Case) -> Result:
            found = index.searcher().search(
                query_of(case), LIMIT, count=True, order_by_field="ord", order=ascending
            )
            return found.count, [names[o] for o, _ in found.hits]

        return first

    def _filter_query(self, kind: str) -> Callable[[Case], Any]:
        """The Tantivy query of a case of the filter-only class ``kind``."""
        t, schema = self._t, self.schema
        term, must, must_not = t.Query.term_query, t.Occur.Must, t.Occur.MustNot
        if kind == "term":
            return lambda case: term(schema, "topic", case.topic)
        if kind == "two_terms":
            return lambda case: t.Query.boolean_query(
                [
                    (must, term(schema, "topic", case.topic)),
                    (must, term(schema, "city", case.city)),
                ]
            )
        if kind == "term_likes":
            unsigned = t.FieldType.Unsigned
            return lambda case: t.Query.boolean_query(
                [
                    (must, term(schema, "city", case.city)),
                    (must, t.Query.range_query(schema, "likes", unsigned, case.min_likes, None)),
                ]
            )
        return lambda case: t.Query.boolean_query(
            [
                (must, t.Query.term_set_query(schema, "tags", list(case.tags))),
                (must_not, term(schema, "city", case.city)),
            ]
        )

    def _price_sorted_runner(self) -> Runner:
        t, schema, index, names = self._t, self.schema, self.index, self._names
        floating, descending = t.FieldType.Float, t.Order.Desc

        def price_sorted(case: Case) -> Result:
            searcher = index.searcher()
            query = t.Query.range_query(schema, "price", floating, case.lo, case.hi)
            found = searcher.search(
                query, LIMIT, count=True, order_by_field="price", order=descending
            )
            ords = searcher.fast_field_values("ord", [address for _, address in found.hits])
            return found.count, [names[o] for o in ords]

        return price_sorted

    def _geo_runner(self) -> Runner:
        t, schema, index, names = self._t, self.schema, self.index, self._names
        term, must = t.Query.term_query, t.Occur.Must
        floating, ascending = t.FieldType.Float, t.Order.Asc

        def geo(case: Case) -> Result:
            searcher = index.searcher()
            lat_lo, lat_hi, lon_lo, lon_hi = case.box
            query = t.Query.boolean_query(
                [
                    (must, term(schema, "topic", case.topic)),
                    (must, t.Query.range_query(schema, "lat", floating, lat_lo, lat_hi)),
                    (must, t.Query.range_query(schema, "lon", floating, lon_lo, lon_hi)),
                ]
            )
            # Tantivy wants a limit above zero and at least the matches to return them all.
            size = searcher.search(query, 1, count=True).count
            if not size:
                return 0, []
            found = searcher.search(query, size, count=False, order_by_field="ord", order=ascending)
            addresses = [address for _, address in found.hits]
            ords = np.array([o for o, _ in found.hits], dtype=np.int64)
            lats = np.array(searcher.fast_field_values("lat", addresses), dtype=np.float64)
            lons = np.array(searcher.fast_field_values("lon", addresses), dtype=np.float64)
            return _within(names, ords, lats, lons, case)

        return geo

    def _replace(self, ord_: int, likes: int) -> None:
        # delete_documents_by_term would guess the int's type (i64) and delete nothing.
        self.writer.delete_documents_by_query(self._t.Query.term_query(self.schema, "ord", ord_))
        self.writer.add_document(self._document(ord_, likes))

    def update(self, ord_: int, likes: int) -> None:
        self._replace(ord_, likes)
        self.writer.commit()
        self.index.reload()

    def update_batch(self, changes: Sequence[tuple[int, int]]) -> None:
        for ord_, likes in changes:
            self._replace(ord_, likes)
        self.writer.commit()
        self.index.reload()

    def close(self) -> None:
        self.writer.wait_merging_threads()


class PostgresEngine(_SqlEngine):
    name = "postgres"
    mark = "%s"
    any_tags = "tags && ARRAY[%s, %s]::text[]"

    def __init__(self, cat: Catalogue, conn: Any) -> None:
        self.conn = conn
        self._names = cat.names
        table = self.table = f"matchlight_bench_items_{os.getpid()}"
        conn.prepare_threshold = 0  # prepare every statement on first use
        conn.execute("SET synchronous_commit = off")
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(
            f"CREATE TABLE {table} (ord integer PRIMARY KEY, topic text NOT NULL,"
            " city text NOT NULL, tags text[] NOT NULL, price float8 NOT NULL,"
            " likes integer NOT NULL, lat float8 NOT NULL, lon float8 NOT NULL)"
        )
        with (
            conn.cursor() as cursor,
            cursor.copy(
                f"COPY {table} (ord, topic, city, tags, price, likes, lat, lon) FROM STDIN"
            ) as copy,
        ):
            for ord_ in range(len(cat)):
                copy.write_row(
                    (
                        ord_,
                        cat.topics[ord_],
                        cat.cities[ord_],
                        list(cat.tags[ord_]),
                        cat.prices[ord_],
                        cat.likes[ord_],
                        cat.lats[ord_],
                        cat.lons[ord_],
                    )
                )
        for columns in INDEXED_COLUMNS:
            conn.execute(f"CREATE INDEX ON {table} ({columns})")
        conn.execute(f"CREATE INDEX ON {table} USING gin (tags)")
        conn.execute(f"VACUUM ANALYZE {table}")

    def _rows(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        rows: list[tuple[Any, ...]] = self.conn.execute(sql, params).fetchall()
        return rows

    def update(self, ord_: int, likes: int) -> None:
        # Autocommit connection: committed (and visible) when the statement returns.
        self.conn.execute(f"UPDATE {self.table} SET likes = %s WHERE ord = %s", (likes, ord_))

    def update_batch(self, changes: Sequence[tuple[int, int]]) -> None:
        with self.conn.transaction(), self.conn.cursor() as cursor:
            cursor.executemany(
                f"UPDATE {self.table} SET likes = %s WHERE ord = %s",
                [(likes, o) for o, likes in changes],
            )

    def close(self) -> None:
        try:
            self.conn.execute(f"DROP TABLE IF EXISTS {self.table}")
        finally:
            self.conn.close()


def connect_postgres(dsn: str | None) -> tuple[Any, str]:
    """A connection (autocommit) to ``dsn``, or ``None`` and why PostgreSQL is skipped."""
    if not dsn:
        return None, f"no server given (--postgres DSN or {POSTGRES_ENV})"
    try:
        import psycopg
    except ImportError:
        return None, "psycopg is not installed (pip install 'psycopg[binary]')"
    try:
        conn = psycopg.connect(dsn, autocommit=True, connect_timeout=5)
    except psycopg.Error as exc:
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return None, f"cannot connect: {first_line}"
    return conn, ""
