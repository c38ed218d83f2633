"""``VectorStore`` on Pinecone (the ``pinecone`` SDK; a Pinecone project or Pinecone Local, the
emulator image, at a URL). One index per collection, metric cosine; each tenant is a Pinecone
namespace and every record also carries ``lumina_tenant``, which every query filters on.

Metadata keys are stored flat as ``m_<key>`` (for filters) and verbatim as JSON in
``lumina_metadata`` (so ints stay ints); the text in ``lumina_text``. Pinecone's serverless indexes
are eventually consistent: a query right after a write may not see it yet (Pinecone Local is
immediate). The SDK is synchronous; calls run in a worker thread.

CI here has no Pinecone: the contract suite runs this adapter only when
``LUMINA_TEST_PINECONE_URL`` is set.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from pinecone import Pinecone, ServerlessSpec
from pinecone.errors.exceptions import ApiError, PineconeError

from adapters.vectorstores._common import VectorStoreUnavailable, check_delete, check_query, check_upsert
from domain.errors import InvalidRequest
from domain.memory.vectors import Eq, In, MetadataFilter, QueryHit, Range, VectorRecord

__all__ = ["PineconeVectorStore", "pinecone_filter"]

_T = TypeVar("_T")
_RANGE_OPS = {"gte": "$gte", "gt": "$gt", "lte": "$lte", "lt": "$lt"}


def pinecone_filter(tenant_id: str, where: MetadataFilter) -> dict[str, Any]:
    clauses: list[dict[str, Any]] = [{"lumina_tenant": {"$eq": tenant_id}}]
    for condition in where.conditions:
        match condition:
            case Eq(key=key, value=value):
                clauses.append({f"m_{key}": {"$eq": value}})
            case In(key=key, values=values):
                clauses.append({f"m_{key}": {"$in": list(values)}})
            case Range(key=key):
                clauses.append({f"m_{key}": {_RANGE_OPS[op]: b for op, b in condition.bounds().items()}})
    return {"$and": clauses}


class PineconeVectorStore:
    def __init__(self, client: Pinecone, index: Any, name: str, dimension: int) -> None:
        self._client = client
        self._index = index
        self._name = name
        self._dimension = dimension

    @classmethod
    async def open(
        cls, url: str | None, name: str, dimension: int, *, api_key: str, cloud: str = "aws", region: str = "us-east-1"
    ) -> PineconeVectorStore:
        """Connect (``url`` None for Pinecone's cloud, or e.g. ``http://localhost:5080`` for
        Pinecone Local) and create the index when missing."""

        def setup() -> tuple[Pinecone, Any]:
            client = Pinecone(api_key=api_key, host=url) if url else Pinecone(api_key=api_key)
            if not client.has_index(name):
                client.create_index(
                    name=name, dimension=dimension, metric="cosine", spec=ServerlessSpec(cloud=cloud, region=region)
                )
            description = client.describe_index(name)
            if int(description.dimension) != dimension:
                raise ValueError(f"Pinecone index {name!r} has dimension {description.dimension}, not {dimension}")
            host = str(description.host)
            if url and url.startswith("http://") and not host.startswith("http"):
                host = "http://" + host
            return client, client.Index(host=host)

        try:
            client, index = await asyncio.to_thread(setup)
        except PineconeError as exc:
            raise VectorStoreUnavailable(f"Pinecone setup failed: {type(exc).__name__}") from exc
        return cls(client, index, name, dimension)

    @property
    def dimension(self) -> int:
        return self._dimension

    async def _call(self, what: str, fn: Callable[[], _T]) -> _T:
        try:
            return await asyncio.to_thread(fn)
        except ApiError as exc:
            if exc.status_code is not None and 400 <= exc.status_code < 500 and exc.status_code != 429:
                raise InvalidRequest.single("pinecone", f"{what}: HTTP {exc.status_code}") from exc
            raise VectorStoreUnavailable(f"Pinecone {what} failed: {type(exc).__name__}") from exc
        except PineconeError as exc:
            raise VectorStoreUnavailable(f"Pinecone {what} failed: {type(exc).__name__}") from exc

    async def upsert(self, tenant_id: str, records: Sequence[VectorRecord]) -> None:
        vectors = [
            {
                "id": r.id,
                "values": list(r.vector),
                "metadata": {
                    "lumina_tenant": tenant_id,
                    "lumina_metadata": json.dumps(r.metadata),
                    **({"lumina_text": r.text} if r.text is not None else {}),
                    **{f"m_{k}": v for k, v in r.metadata.items()},
                },
            }
            for r in check_upsert(tenant_id, records, self._dimension)
        ]
        if vectors:
            await self._call(
                "upsert", lambda: self._index.upsert(vectors=vectors, namespace=tenant_id, show_progress=False)
            )

    async def delete(self, tenant_id: str, ids: Sequence[str]) -> None:
        unique = check_delete(tenant_id, ids)
        if unique:
            await self._call("delete", lambda: self._index.delete(ids=unique, namespace=tenant_id))

    async def query(
        self, tenant_id: str, vector: Sequence[float], k: int, filter: MetadataFilter | None = None
    ) -> list[QueryHit]:
        query, where = check_query(tenant_id, vector, k, filter, self._dimension)
        response = await self._call(
            "query",
            lambda: self._index.query(
                vector=list(query),
                top_k=k,
                namespace=tenant_id,
                filter=pinecone_filter(tenant_id, where),
                include_metadata=True,
            ),
        )
        hits = []
        for match in response.matches:
            metadata = dict(match.metadata or {})
            if metadata.get("lumina_tenant") != tenant_id:
                continue
            hits.append(
                QueryHit(
                    match.id,
                    float(match.score),
                    json.loads(str(metadata.get("lumina_metadata") or "{}")),
                    metadata.get("lumina_text"),  # type: ignore[arg-type]
                )
            )
        hits.sort(key=lambda h: (-h.score, h.id))
        return hits

    async def drop(self) -> None:
        await self._call("drop", lambda: self._client.delete_index(self._name))
