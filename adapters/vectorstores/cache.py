"""A Redis read cache in front of any ``VectorStore``: identical queries (tenant, vector, k,
filter) within ``ttl_seconds`` are answered from Redis.

Invalidation is by tenant generation: each tenant has a counter ``<prefix>:<tenant>:gen``, part of
every cached key; ``upsert`` and ``delete`` bump it *after* the write, so no later query can read a
result computed before the write (old keys are never read again and expire by TTL). When Redis is
unreachable, queries go straight to the store; a write whose invalidation fails raises
``VectorStoreUnavailable`` (the write itself happened; retrying it is safe, upserts are idempotent).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapters.vectorstores._common import VectorStoreUnavailable
from application.ports import VectorStore
from domain.memory.vectors import MetadataFilter, QueryHit, VectorRecord

__all__ = ["CacheStats", "CachedVectorStore"]

_ENCODER = msgspec.msgpack.Encoder()
_HITS = msgspec.msgpack.Decoder(list[QueryHit])
_FILTER = msgspec.json.Encoder()


class CacheStats(msgspec.Struct):
    hits: int = 0
    misses: int = 0
    errors: int = 0


class CachedVectorStore:
    def __init__(self, inner: VectorStore, redis: Redis, *, namespace: str, ttl_seconds: int = 300) -> None:
        """``namespace`` names the collection (two collections must not share one)."""
        self._inner = inner
        self._redis = redis
        self._prefix = f"lumina:vq:{namespace}"
        self._ttl = ttl_seconds
        self.stats = CacheStats()

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    def _generation_key(self, tenant_id: str) -> str:
        return f"{self._prefix}:{tenant_id}:gen"

    def _query_key(self, tenant_id: str, generation: int, vector: Sequence[float], k: int, filter: MetadataFilter | None) -> str:
        digest = hashlib.blake2b(digest_size=16)
        digest.update(struct.pack(f"<{len(vector)}d", *(float(x) for x in vector)))
        digest.update(struct.pack("<i", k))
        digest.update(_FILTER.encode(filter or MetadataFilter()))
        return f"{self._prefix}:{tenant_id}:{generation}:{digest.hexdigest()}"

    async def _invalidate(self, tenant_id: str) -> None:
        try:
            await self._redis.incr(self._generation_key(tenant_id))
        except RedisError as exc:
            raise VectorStoreUnavailable(f"vector cache invalidation failed: {type(exc).__name__}") from exc

    async def upsert(self, tenant_id: str, records: Sequence[VectorRecord]) -> None:
        await self._inner.upsert(tenant_id, records)
        await self._invalidate(tenant_id)

    async def delete(self, tenant_id: str, ids: Sequence[str]) -> None:
        await self._inner.delete(tenant_id, ids)
        await self._invalidate(tenant_id)

    async def invalidate(self, tenant_id: str) -> None:
        """Forget every cached result of the tenant (e.g. after writing to the store directly)."""
        await self._invalidate(tenant_id)

    async def query(
        self, tenant_id: str, vector: Sequence[float], k: int, filter: MetadataFilter | None = None
    ) -> list[QueryHit]:
        key: str | None = None
        try:
            generation = int(await self._redis.get(self._generation_key(tenant_id)) or 0)
            key = self._query_key(tenant_id, generation, vector, k, filter)
            cached = await self._redis.get(key)
        except RedisError:
            self.stats.errors += 1
            cached = None
        if cached is not None:
            self.stats.hits += 1
            return _HITS.decode(cached)
        self.stats.misses += 1
        hits = await self._inner.query(tenant_id, vector, k, filter)  # validates the arguments too
        if key is not None:
            try:
                await self._redis.set(key, _ENCODER.encode(hits), ex=self._ttl)
            except RedisError:
                self.stats.errors += 1
        return hits
