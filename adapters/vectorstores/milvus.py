"""``VectorStore`` on Milvus through ``pymilvus``: embedded (``milvus-lite``, a local ``.db`` file)
or a Milvus server (``http://host:19530``), one collection per store.

Tenancy uses Milvus's own multi-tenancy feature: ``tenant_id`` is the collection's partition key
(records are hashed into partitions by tenant) and every search, query and delete carries
``tenant_id == "<tenant>"``. The primary key is a UUID of (tenant, id), so ids are unique per
tenant. The client is synchronous; calls run in a worker thread.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pymilvus import DataType, MilvusClient
from pymilvus.exceptions import MilvusException

from adapters.vectorstores._common import (
    VectorStoreUnavailable,
    check_delete,
    check_query,
    check_upsert,
    record_uuid,
)
from domain.errors import InvalidRequest
from domain.memory.vectors import Eq, In, MetadataFilter, QueryHit, Range, VectorRecord

__all__ = ["MilvusVectorStore", "milvus_filter"]

_T = TypeVar("_T")
_MAX_TEXT = 65_535
_RANGE_OPS = {"gte": ">=", "gt": ">", "lte": "<=", "lt": "<"}
_OUTPUT = ["id", "metadata", "text"]


def _literal(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    return repr(value)


def milvus_filter(tenant_id: str, where: MetadataFilter) -> str:
    """A Milvus boolean expression: the tenant condition AND every metadata condition."""
    parts = [f"tenant_id == {_literal(tenant_id)}"]
    for condition in where.conditions:
        match condition:
            case Eq(key=key, value=value):
                parts.append(f'metadata["{key}"] == {_literal(value)}')
            case In(key=key, values=values):
                parts.append("(" + " or ".join(f'metadata["{key}"] == {_literal(v)}' for v in values) + ")")
            case Range(key=key):
                parts += [f'metadata["{key}"] {_RANGE_OPS[op]} {_literal(b)}' for op, b in condition.bounds().items()]
    return " and ".join(parts)


class MilvusVectorStore:
    def __init__(self, client: MilvusClient, collection: str, dimension: int) -> None:
        self._client = client
        self._collection = collection
        self._dimension = dimension

    @classmethod
    async def open(
        cls, client: MilvusClient, collection: str, dimension: int, *, index_type: str = "FLAT"
    ) -> MilvusVectorStore:
        """Create the collection when missing; check its dimension otherwise. Build ``client``
        with ``MilvusClient("path/to/file.db")`` (milvus-lite, which supports FLAT only) or
        ``MilvusClient(uri="http://host:19530", token=...)`` with ``index_type="HNSW"``; the
        caller closes it."""

        def setup() -> None:
            if not client.has_collection(collection):
                schema = client.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=64)
                schema.add_field("id", DataType.VARCHAR, max_length=1024)
                schema.add_field("tenant_id", DataType.VARCHAR, max_length=512, is_partition_key=True)
                schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
                schema.add_field("metadata", DataType.JSON)
                schema.add_field("text", DataType.VARCHAR, max_length=_MAX_TEXT, nullable=True)
                index = client.prepare_index_params()
                params = {"M": 16, "efConstruction": 64} if index_type == "HNSW" else {}
                index.add_index("vector", index_type=index_type, metric_type="COSINE", params=params)
                client.create_collection(collection, schema=schema, index_params=index, consistency_level="Strong")
                return
            fields = {f["name"]: f for f in client.describe_collection(collection)["fields"]}
            existing = int(fields["vector"]["params"]["dim"])
            if existing != dimension:
                raise ValueError(f"Milvus collection {collection!r} has dimension {existing}, not {dimension}")

        try:
            await asyncio.to_thread(setup)
        except MilvusException as exc:
            raise VectorStoreUnavailable(f"Milvus setup failed: {exc.message}") from exc
        return cls(client, collection, dimension)

    @property
    def dimension(self) -> int:
        return self._dimension

    async def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        try:
            return await asyncio.to_thread(fn)
        except MilvusException as exc:
            raise VectorStoreUnavailable(f"Milvus {what} failed: {exc.message}") from exc

    async def upsert(self, tenant_id: str, records: Sequence[VectorRecord]) -> None:
        unique = check_upsert(tenant_id, records, self._dimension)
        for i, record in enumerate(unique):
            if record.text is not None and len(record.text.encode()) > _MAX_TEXT:
                raise InvalidRequest.single(f"records[{i}].text", f"at most {_MAX_TEXT} bytes in Milvus")
        rows = [
            {
                "pk": record_uuid(tenant_id, r.id),
                "id": r.id,
                "tenant_id": tenant_id,
                "vector": list(r.vector),
                "metadata": r.metadata,
                "text": r.text,
            }
            for r in unique
        ]
        if rows:
            await self._call("upsert", lambda: self._client.upsert(self._collection, rows))

    async def delete(self, tenant_id: str, ids: Sequence[str]) -> None:
        unique = check_delete(tenant_id, ids)
        if not unique:
            return
        expression = f"tenant_id == {_literal(tenant_id)} and id in [{', '.join(_literal(i) for i in unique)}]"
        await self._call("delete", lambda: self._client.delete(self._collection, filter=expression))

    async def query(
        self, tenant_id: str, vector: Sequence[float], k: int, filter: MetadataFilter | None = None
    ) -> list[QueryHit]:
        query, where = check_query(tenant_id, vector, k, filter, self._dimension)
        expression = milvus_filter(tenant_id, where)
        result: Any = await self._call(
            "search",
            lambda: self._client.search(
                self._collection, data=[list(query)], limit=k, filter=expression, output_fields=_OUTPUT
            ),
        )
        hits = [
            QueryHit(
                hit["entity"]["id"], float(hit["distance"]), dict(hit["entity"]["metadata"] or {}), hit["entity"]["text"]
            )
            for hit in result[0]
        ]
        hits.sort(key=lambda h: (-h.score, h.id))
        return hits

    async def drop(self) -> None:
        """Drop the whole collection (every tenant's records)."""
        await self._call("drop", lambda: self._client.drop_collection(self._collection))
