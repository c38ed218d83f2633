"""The default ``VectorStore``: PostgreSQL + pgvector, one collection per table
(``adapters.postgres.vector_tables``), hash-partitioned by tenant, HNSW cosine index.

A query runs in its own transaction with ``hnsw.iterative_scan = relaxed_order`` (set local, by
``set_config``, with ``ef_search`` and ``max_scan_tuples``, in one statement): when
the tenant and metadata conditions discard candidates, the index scan keeps walking the graph
until ``k`` rows pass (or ``hnsw.max_scan_tuples``), instead of returning fewer rows. Relaxed
order can return rows slightly out of order, so the rows are re-sorted in a materialised CTE.

Filters become SQL on the ``metadata`` jsonb: ``Eq``/``In`` use containment (``@>``, GIN
``jsonb_path_ops``), ``Range`` a typed jsonpath predicate (a non-number never matches). Keys are
validated identifiers; values are always bound parameters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres.errors import translate_errors
from adapters.postgres.vector_tables import (
    DEFAULT_COLLECTION,
    DEFAULT_DIMENSION,
    DEFAULT_PARTITIONS,
    collection_table,
    ensure_collection,
)
from adapters.vectorstores._common import check_delete, check_query, check_upsert
from domain.memory.vectors import Eq, In, MetadataFilter, QueryHit, Range, VectorRecord

__all__ = ["EF_PER_RESULT", "PgVectorStore", "filter_sql", "hnsw_settings"]

_RANGE_OPS = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}


def _vector_literal(vector: Sequence[float]) -> str:
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


def filter_sql(where: MetadataFilter, params: dict[str, object]) -> list[str]:
    """SQL conditions (AND-combined by the caller) for ``where``, adding their bound values to ``params``."""
    clauses: list[str] = []
    for i, condition in enumerate(where.conditions):
        match condition:
            case Eq(key=key, value=value):
                params[f"f{i}"] = json.dumps({key: value})
                clauses.append(f"metadata @> CAST(:f{i} AS jsonb)")
            case In(key=key, values=values):
                alternatives = []
                for j, value in enumerate(values):
                    params[f"f{i}_{j}"] = json.dumps({key: value})
                    alternatives.append(f"metadata @> CAST(:f{i}_{j} AS jsonb)")
                clauses.append("(" + " OR ".join(alternatives) + ")")
            case Range(key=key):
                bounds = condition.bounds()
                predicate = " && ".join(f"@ {_RANGE_OPS[op]} ${op}" for op in bounds)
                params[f"f{i}"] = f'$."{key}" ? ({predicate})'
                params[f"f{i}_vars"] = json.dumps(bounds)
                clauses.append(f"jsonb_path_exists(metadata, CAST(:f{i} AS jsonpath), CAST(:f{i}_vars AS jsonb))")
    return clauses


EF_PER_RESULT = 4  # hnsw.ef_search per requested row (see hnsw_settings)


def hnsw_settings(k: int, ef_search: int, max_scan_tuples: int, per_result: int = EF_PER_RESULT) -> str:
    """One statement setting up a query's transaction (``SET LOCAL`` semantics, one round trip):
    iterative relaxed-order scans, ``hnsw.ef_search`` = max(``ef_search``, 4 * k) (at most 1,000:
    pgvector's limit), ``hnsw.max_scan_tuples``, and custom plans. Why 4 * k: with ef_search = k
    the index returned 78% of the exact 50 nearest among 10,000 memories (m 16, ef_construction
    64), with 4 * k 97% for +0.4 ms (docs/memory.md, Evaluation). Custom plans: the driver
    prepares statements, and a generic plan (made without the tenant or the filter values) can
    leave the HNSW index for a sequential scan."""
    ef = max(ef_search, min(per_result * k, 1000))
    return (
        "SELECT set_config('hnsw.iterative_scan', 'relaxed_order', true), "
        f"set_config('hnsw.ef_search', '{int(ef)}', true), "
        f"set_config('hnsw.max_scan_tuples', '{int(max_scan_tuples)}', true), "
        "set_config('plan_cache_mode', 'force_custom_plan', true)"
    )


class PgVectorStore:
    """``VectorStore`` over one pgvector collection. Build it with ``open`` (which creates the
    collection when missing and checks its dimension) or directly when the migration made it."""

    def __init__(
        self,
        engine: AsyncEngine,
        collection: str = DEFAULT_COLLECTION,
        dimension: int = DEFAULT_DIMENSION,
        *,
        ef_search: int = 40,
        max_scan_tuples: int = 20_000,
    ) -> None:
        self._engine = engine
        self._collection = collection
        self._table = collection_table(collection)
        self._dimension = dimension
        self._ef_search = ef_search
        self._max_scan_tuples = max_scan_tuples

    @classmethod
    async def open(
        cls,
        engine: AsyncEngine,
        collection: str = DEFAULT_COLLECTION,
        dimension: int = DEFAULT_DIMENSION,
        partitions: int = DEFAULT_PARTITIONS,
        **options: int,
    ) -> PgVectorStore:
        async with translate_errors("vector collection setup"), engine.begin() as conn:
            await ensure_collection(conn, collection, dimension, partitions)
        return cls(engine, collection, dimension, **options)

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def table(self) -> str:
        return self._table

    async def upsert(self, tenant_id: str, records: Sequence[VectorRecord]) -> None:
        rows = [
            {
                "t": tenant_id,
                "id": r.id,
                "e": _vector_literal(r.vector),
                "m": json.dumps(r.metadata),
                "x": r.text,
            }
            for r in check_upsert(tenant_id, records, self._dimension)
        ]
        if not rows:
            return
        statement = sa.text(
            f"INSERT INTO {self._table} AS v (tenant_id, id, embedding, metadata, text) "
            "VALUES (:t, :id, CAST(:e AS vector), CAST(:m AS jsonb), :x) "
            "ON CONFLICT (tenant_id, id) DO UPDATE SET embedding = excluded.embedding, "
            "metadata = excluded.metadata, text = excluded.text, updated_at = now()"
        )
        async with translate_errors("vector upsert"), self._engine.begin() as conn:
            await conn.execute(statement, rows)

    async def delete(self, tenant_id: str, ids: Sequence[str]) -> None:
        unique = check_delete(tenant_id, ids)
        if not unique:
            return
        statement = sa.text(f"DELETE FROM {self._table} WHERE tenant_id = :t AND id = ANY(:ids)")
        async with translate_errors("vector delete"), self._engine.begin() as conn:
            await conn.execute(statement, {"t": tenant_id, "ids": unique})

    def query_sql(self, k: int, where: MetadataFilter, params: dict[str, object]) -> str:
        """The query's SQL (``:t`` tenant, ``:q`` vector, ``:k`` limit); exposed for EXPLAIN."""
        conditions = ["tenant_id = :t", *filter_sql(where, params)]
        return (
            "WITH nearest AS MATERIALIZED ("
            f"SELECT id, metadata, text, embedding <=> CAST(:q AS vector) AS distance FROM {self._table} "
            f"WHERE {' AND '.join(conditions)} ORDER BY distance LIMIT :k"
            ") SELECT id, metadata, text, distance FROM nearest ORDER BY distance, id"
        )

    def session_settings(self, k: int) -> list[str]:
        """The statements setting one query's transaction up: ``hnsw_settings``."""
        return [hnsw_settings(k, self._ef_search, self._max_scan_tuples)]

    async def query(
        self, tenant_id: str, vector: Sequence[float], k: int, filter: MetadataFilter | None = None
    ) -> list[QueryHit]:
        query, where = check_query(tenant_id, vector, k, filter, self._dimension)
        params: dict[str, object] = {"t": tenant_id, "q": _vector_literal(query), "k": k}
        sql = self.query_sql(k, where, params)
        async with translate_errors("vector query"), self._engine.begin() as conn:
            for setting in self.session_settings(k):
                await conn.execute(sa.text(setting))
            rows = (await conn.execute(sa.text(sql), params)).all()
        return [QueryHit(row.id, 1.0 - float(row.distance), _metadata(row.metadata), row.text) for row in rows]


def _metadata(value: object) -> dict[str, object]:
    if isinstance(value, str):  # asyncpg returns jsonb as text unless a codec is set
        value = json.loads(value)
    assert isinstance(value, dict)
    return value
