"""``VectorStore`` on Qdrant through ``qdrant-client``: local mode (in-process, ``:memory:`` or a
directory) or a Qdrant server (``http://host:6333``), one collection per store, cosine distance.

Tenancy follows Qdrant's multitenancy guide: one collection, a ``tenant_id`` keyword payload index
with ``is_tenant=True`` (the server co-locates each tenant's points), and a ``tenant_id`` must
condition on every search. Point ids are UUIDs of (tenant, id); the caller's id, the tenant, the
text and the metadata (under ``metadata``) are the payload.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

from qdrant_client import AsyncQdrantClient, models
from qdrant_client.http.exceptions import ResponseHandlingException, UnexpectedResponse

from adapters.vectorstores._common import (
    VectorStoreUnavailable,
    check_delete,
    check_query,
    check_upsert,
    record_uuid,
)
from domain.memory.vectors import Eq, ExactValue, In, MetadataFilter, QueryHit, Range, VectorRecord

__all__ = ["QdrantVectorStore", "qdrant_filter"]

_FAILURES = (UnexpectedResponse, ResponseHandlingException, ConnectionError, TimeoutError)


def _in_condition(key: str, values: tuple[ExactValue, ...]) -> models.Condition:
    if all(isinstance(v, str) for v in values) or all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        return models.FieldCondition(key=key, match=models.MatchAny(any=list(values)))  # type: ignore[arg-type]
    return models.Filter(should=[models.FieldCondition(key=key, match=models.MatchValue(value=v)) for v in values])


def qdrant_filter(tenant_id: str, where: MetadataFilter) -> models.Filter:
    must: list[models.Condition] = [models.FieldCondition(key="tenant_id", match=models.MatchValue(value=tenant_id))]
    for condition in where.conditions:
        match condition:
            case Eq(key=key, value=value):
                must.append(models.FieldCondition(key=f"metadata.{key}", match=models.MatchValue(value=value)))
            case In(key=key, values=values):
                must.append(_in_condition(f"metadata.{key}", values))
            case Range(key=key, gte=gte, gt=gt, lte=lte, lt=lt):
                must.append(
                    models.FieldCondition(key=f"metadata.{key}", range=models.Range(gte=gte, gt=gt, lte=lte, lt=lt))
                )
    return models.Filter(must=must)


class QdrantVectorStore:
    def __init__(self, client: AsyncQdrantClient, collection: str, dimension: int) -> None:
        self._client = client
        self._collection = collection
        self._dimension = dimension

    @classmethod
    async def open(
        cls, client: AsyncQdrantClient, collection: str, dimension: int
    ) -> QdrantVectorStore:
        """Create the collection (and its tenant index) when missing; check its dimension otherwise.
        Build ``client`` with ``AsyncQdrantClient(location=":memory:")``, ``path=DIR`` (local
        mode) or ``url=...``; the caller closes it."""
        try:
            if await client.collection_exists(collection):
                info = await client.get_collection(collection)
                params = info.config.params.vectors
                existing = params.size if isinstance(params, models.VectorParams) else None
                if existing != dimension:
                    raise ValueError(f"Qdrant collection {collection!r} has dimension {existing}, not {dimension}")
            else:
                await client.create_collection(
                    collection,
                    vectors_config=models.VectorParams(size=dimension, distance=models.Distance.COSINE),
                )
                with warnings.catch_warnings():  # local mode says payload indexes do nothing there
                    warnings.filterwarnings("ignore", "Payload indexes have no effect", UserWarning)
                    await client.create_payload_index(
                        collection,
                        "tenant_id",
                        field_schema=models.KeywordIndexParams(type=models.KeywordIndexType.KEYWORD, is_tenant=True),
                    )
        except _FAILURES as exc:
            raise VectorStoreUnavailable(f"Qdrant setup failed: {type(exc).__name__}") from exc
        return cls(client, collection, dimension)

    @property
    def dimension(self) -> int:
        return self._dimension

    async def upsert(self, tenant_id: str, records: Sequence[VectorRecord]) -> None:
        points = [
            models.PointStruct(
                id=record_uuid(tenant_id, r.id),
                vector=list(r.vector),
                payload={"tenant_id": tenant_id, "id": r.id, "text": r.text, "metadata": dict(r.metadata)},
            )
            for r in check_upsert(tenant_id, records, self._dimension)
        ]
        if not points:
            return
        try:
            await self._client.upsert(self._collection, points=points, wait=True)
        except _FAILURES as exc:
            raise VectorStoreUnavailable(f"Qdrant upsert failed: {type(exc).__name__}") from exc

    async def delete(self, tenant_id: str, ids: Sequence[str]) -> None:
        unique = check_delete(tenant_id, ids)
        if not unique:
            return
        selector = models.PointIdsList(points=[record_uuid(tenant_id, i) for i in unique])
        try:
            await self._client.delete(self._collection, points_selector=selector, wait=True)
        except _FAILURES as exc:
            raise VectorStoreUnavailable(f"Qdrant delete failed: {type(exc).__name__}") from exc

    async def query(
        self, tenant_id: str, vector: Sequence[float], k: int, filter: MetadataFilter | None = None
    ) -> list[QueryHit]:
        query, where = check_query(tenant_id, vector, k, filter, self._dimension)
        try:
            response = await self._client.query_points(
                self._collection,
                query=list(query),
                query_filter=qdrant_filter(tenant_id, where),
                limit=k,
                with_payload=True,
            )
        except _FAILURES as exc:
            raise VectorStoreUnavailable(f"Qdrant query failed: {type(exc).__name__}") from exc
        hits = []
        for point in response.points:
            payload = point.payload or {}
            if payload.get("tenant_id") != tenant_id:  # never hand out another tenant's point
                continue
            hits.append(QueryHit(str(payload["id"]), float(point.score), dict(payload.get("metadata") or {}), payload.get("text")))
        hits.sort(key=lambda h: (-h.score, h.id))
        return hits

    async def drop(self) -> None:
        """Drop the whole collection (every tenant's records)."""
        try:
            await self._client.delete_collection(self._collection)
        except _FAILURES as exc:
            raise VectorStoreUnavailable(f"Qdrant drop failed: {type(exc).__name__}") from exc
