"""A content-hash cache in front of any ``Embedder``.

``CachedEmbedder(inner, cache)`` is itself an ``Embedder``: it looks every text up by
``sha256(model + "\\0" + text)``, embeds only the misses (in one call to ``inner``, duplicates
collapsed) and stores them. Caches keep vectors as float32 bytes (what the models produce, so
nothing is lost; 1.5 KB for 384 dimensions):

- ``MemoryEmbeddingCache(max_entries)``: a bounded LRU in the process;
- ``RedisEmbeddingCache(client, ttl_seconds=...)``: shared by replicas; Redis errors surface as
  ``domain.errors.Unavailable``.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Protocol

import numpy as np
import redis.asyncio as redis_asyncio
from redis.exceptions import RedisError

from application.ports import Embedder
from domain.errors import Unavailable

__all__ = ["CachedEmbedder", "EmbeddingCache", "MemoryEmbeddingCache", "RedisEmbeddingCache", "cache_key"]


def cache_key(model: str, text: str) -> str:
    return hashlib.sha256(f"{model}\0{text}".encode()).hexdigest()


class EmbeddingCache(Protocol):
    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]: ...

    async def put_many(self, items: Mapping[str, bytes]) -> None: ...


class MemoryEmbeddingCache:
    """At most ``max_entries`` vectors, least recently used evicted first."""

    def __init__(self, max_entries: int = 10_000) -> None:
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self._max = max_entries
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def __len__(self) -> int:
        return len(self._items)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        found: list[bytes | None] = []
        for key in keys:
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            found.append(value)
        return found

    async def put_many(self, items: Mapping[str, bytes]) -> None:
        for key, value in items.items():
            self._items[key] = value
            self._items.move_to_end(key)
        while len(self._items) > self._max:
            self._items.popitem(last=False)


class RedisEmbeddingCache:
    """Vectors under ``{prefix}{key}``, each expiring ``ttl_seconds`` after it was written."""

    def __init__(
        self, client: redis_asyncio.Redis, *, ttl_seconds: int = 7 * 24 * 3600, prefix: str = "lumina:emb:"
    ) -> None:
        self._client = client
        self._ttl = ttl_seconds
        self._prefix = prefix

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None]:
        if not keys:
            return []
        try:
            values = await self._client.mget([self._prefix + k for k in keys])
        except RedisError as exc:
            raise Unavailable("embedding cache (redis) unavailable") from exc
        return [v if isinstance(v, bytes) else None for v in values]

    async def put_many(self, items: Mapping[str, bytes]) -> None:
        if not items:
            return
        try:
            async with self._client.pipeline(transaction=False) as pipe:
                for key, value in items.items():
                    pipe.set(self._prefix + key, value, ex=self._ttl)
                await pipe.execute()
        except RedisError as exc:
            raise Unavailable("embedding cache (redis) unavailable") from exc


class CachedEmbedder:
    """An ``Embedder`` that asks ``cache`` first and ``inner`` only for what it lacks."""

    def __init__(self, inner: Embedder, cache: EmbeddingCache) -> None:
        self._inner = inner
        self._cache = cache
        self.model: str = inner.model
        self.dimensions: int = inner.dimensions
        self.hits = 0
        self.misses = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        keys = [cache_key(self.model, t) for t in texts]
        cached = await self._cache.get_many(keys)
        vectors: list[list[float] | None] = [
            None if blob is None else np.frombuffer(blob, dtype=np.float32).tolist() for blob in cached
        ]
        missing: dict[str, str] = {}  # key -> text, duplicates collapsed, first-seen order
        for key, text, vector in zip(keys, texts, vectors, strict=True):
            if vector is None:
                missing.setdefault(key, text)
        self.hits += len(texts) - sum(v is None for v in vectors)
        self.misses += len(missing)
        if missing:
            fresh = await self._inner.embed(list(missing.values()))
            by_key = dict(zip(missing, fresh, strict=True))
            await self._cache.put_many({k: np.asarray(v, dtype=np.float32).tobytes() for k, v in by_key.items()})
            vectors = [by_key[k] if v is None else v for k, v in zip(keys, vectors, strict=True)]
        return vectors  # type: ignore[return-value]  # every None was filled above
