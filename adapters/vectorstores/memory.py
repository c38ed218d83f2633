"""An in-memory ``VectorStore``: exact cosine search over a dict, the reference the contract
suite holds every real adapter to, and a store for unit tests and single-process tools."""

from __future__ import annotations

from collections.abc import Sequence

from adapters.vectorstores._common import check_delete, check_query, check_upsert
from domain.memory.vectors import MetadataFilter, QueryHit, VectorRecord, cosine_similarity

__all__ = ["InMemoryVectorStore"]


class InMemoryVectorStore:
    def __init__(self, dimension: int) -> None:
        self._dimension = dimension
        self._records: dict[tuple[str, str], VectorRecord] = {}

    @property
    def dimension(self) -> int:
        return self._dimension

    async def upsert(self, tenant_id: str, records: Sequence[VectorRecord]) -> None:
        for record in check_upsert(tenant_id, records, self._dimension):
            self._records[(tenant_id, record.id)] = record

    async def delete(self, tenant_id: str, ids: Sequence[str]) -> None:
        for record_id in check_delete(tenant_id, ids):
            self._records.pop((tenant_id, record_id), None)

    async def query(
        self, tenant_id: str, vector: Sequence[float], k: int, filter: MetadataFilter | None = None
    ) -> list[QueryHit]:
        query, where = check_query(tenant_id, vector, k, filter, self._dimension)
        scored = [
            QueryHit(r.id, cosine_similarity(query, r.vector), dict(r.metadata), r.text)
            for (tenant, _), r in self._records.items()
            if tenant == tenant_id and where.matches(r.metadata)
        ]
        scored.sort(key=lambda h: (-h.score, h.id))
        return scored[:k]
