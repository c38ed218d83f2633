"""A Redis read cache in front of any ``VectorStore``: identical queries (tenant, vector, k,
filter) within ``ttl_seconds`` are answered from Redis. ``CachedHybridSearch`` does the same for
memory's one-statement hybrid search (``application.memory.ports.HybridSearch``), under the same
tenant generations.

Invalidation is by tenant generation: each tenant has a counter ``<prefix>:<tenant>:gen``, part of
every cached key; ``upsert`` and ``delete`` bump it *after* the write, so no later query can read a
result computed before the write (old keys are never read again and expire by TTL). When Redis is
unreachable, queries go straight to the store; a write whose invalidation fails raises
``VectorStoreUnavailable`` (the write itself happened; retrying it is safe, upserts are idempotent).
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Awaitable, Callable, Sequence

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapters.vectorstores._common import VectorStoreUnavailable
from application.memory.ports import HybridHits, HybridSearch, MemoryRepository
from application.ports import VectorStore
from domain.memory.ranking import MemoryFilter
from domain.memory.vectors import MetadataFilter, QueryHit, VectorRecord

__all__ = ["CacheStats", "CachedHybridSearch", "CachedVectorStore"]

_ENCODER = msgspec.msgpack.Encoder()
_HITS = msgspec.msgpack.Decoder(list[QueryHit])
_FILTER = msgspec.json.Encoder()
_ID_LISTS = msgspec.msgpack.Decoder(tuple[list[str], list[str]])


def _prefix(namespace: str) -> str:
    return f"lumina:vq:{namespace}"


def _generation_key(prefix: str, tenant_id: str) -> str:
    return f"{prefix}:{tenant_id}:gen"


class _Slots:
    """Cached values under a tenant's generation: ``read`` gives the key for this generation and
    what is stored there (None: a miss; Redis unreachable is a miss and an error, with no key);
    ``write`` stores under that key (nothing without one)."""

    def __init__(self, redis: Redis, prefix: str, ttl_seconds: int, stats: CacheStats) -> None:
        self._redis, self._prefix, self._ttl, self._stats = redis, prefix, ttl_seconds, stats

    async def read(self, tenant_id: str, key_of: Callable[[int], str]) -> tuple[str | None, bytes | None]:
        try:
            generation = int(await self._redis.get(_generation_key(self._prefix, tenant_id)) or 0)
            key = key_of(generation)
            cached = await self._redis.get(key)
        except RedisError:
            self._stats.errors += 1
            key, cached = None, None
        if cached is None:
            self._stats.misses += 1
        else:
            self._stats.hits += 1
        return key, cached

    async def write(self, key: str | None, value: bytes) -> None:
        if key is None:
            return
        try:
            await self._redis.set(key, value, ex=self._ttl)
        except RedisError:
            self._stats.errors += 1


class CacheStats(msgspec.Struct):
    hits: int = 0
    misses: int = 0
    errors: int = 0


class CachedVectorStore:
    def __init__(self, inner: VectorStore, redis: Redis, *, namespace: str, ttl_seconds: int = 300) -> None:
        """``namespace`` names the collection (two collections must not share one)."""
        self._inner = inner
        self._redis = redis
        self._prefix = _prefix(namespace)
        self.stats = CacheStats()
        self._slots = _Slots(redis, self._prefix, ttl_seconds, self.stats)

    @property
    def dimension(self) -> int:
        return self._inner.dimension

    def _generation_key(self, tenant_id: str) -> str:
        return _generation_key(self._prefix, tenant_id)

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
        key, cached = await self._slots.read(
            tenant_id, lambda generation: self._query_key(tenant_id, generation, vector, k, filter)
        )
        if cached is not None:
            return _HITS.decode(cached)
        hits = await self._inner.query(tenant_id, vector, k, filter)  # validates the arguments too
        await self._slots.write(key, _ENCODER.encode(hits))
        return hits


class CachedHybridSearch:
    """A Redis read cache in front of memory's one-statement hybrid search.

    What is cached is the two hit lists (full-text and vector ids, best first) of a query (tenant,
    user, query text, k, filters) — the query text stands for its vector: one namespace is one
    collection, embedded by one model. On a hit the rows of the hits and of their neighbours are
    read fresh (``repository.with_neighbours``), so a memory changed since (importance, validity,
    text) is ranked as it is now. Keys carry the tenant's generation shared with
    ``CachedVectorStore`` on the same ``namespace``: every vector write there (ingest, update,
    delete, consolidation) makes earlier results unreadable. Redis unreachable: the statement runs."""

    def __init__(
        self, inner: HybridSearch, repository: MemoryRepository, redis: Redis, *, namespace: str, ttl_seconds: int = 300
    ) -> None:
        self._inner = inner
        self._repository = repository
        self._prefix = _prefix(namespace)
        self.stats = CacheStats()
        self._slots = _Slots(redis, self._prefix, ttl_seconds, self.stats)

    def _key(self, tenant_id: str, generation: int, user_id: str, query: str, k: int,
             filters: MemoryFilter | None, where: MetadataFilter) -> str:
        digest = hashlib.blake2b(digest_size=16)
        for part in (user_id.encode(), query.encode(), struct.pack("<i", k), _FILTER.encode(filters), _FILTER.encode(where)):
            digest.update(struct.pack("<I", len(part)))
            digest.update(part)
        return f"{self._prefix}:{tenant_id}:{generation}:h:{digest.hexdigest()}"

    async def hybrid(
        self,
        tenant_id: str,
        user_id: str,
        query: str,
        vector: Sequence[float] | Awaitable[Sequence[float]],
        k: int,
        filters: MemoryFilter | None,
        where: MetadataFilter,
    ) -> HybridHits:
        key, cached = await self._slots.read(
            tenant_id, lambda generation: self._key(tenant_id, generation, user_id, query, k, filters, where)
        )
        if cached is not None:
            fulltext_ids, vector_ids = _ID_LISTS.decode(cached)
            if not fulltext_ids and not vector_ids:
                return HybridHits([], [], [], [])
            memories, follows = await self._repository.with_neighbours(tenant_id, {*fulltext_ids, *vector_ids}, 1)
            return HybridHits(fulltext_ids, vector_ids, memories, follows)
        found = await self._inner.hybrid(tenant_id, user_id, query, vector, k, filters, where)
        await self._slots.write(key, _ENCODER.encode((found.fulltext_ids, found.vector_ids)))
        return found
