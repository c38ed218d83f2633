"""The Redis read cache in front of a vector store, against the real Redis of the harness."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from adapters.vectorstores.cache import CachedVectorStore
from adapters.vectorstores.memory import InMemoryVectorStore
from domain.errors import InvalidRequest
from domain.memory.vectors import Eq, MetadataFilter, VectorRecord

pytestmark = pytest.mark.timeout(30)

Q = (1.0, 0.0, 0.0)


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def namespace() -> str:
    return f"test_{uuid.uuid4().hex[:8]}"


async def test_repeated_queries_are_served_from_redis_until_a_write_for_the_tenant(redis: Redis, namespace: str) -> None:
    inner = InMemoryVectorStore(3)
    cached = CachedVectorStore(inner, redis, namespace=namespace, ttl_seconds=60)
    await cached.upsert("t1", [VectorRecord("a", "t1", (1.0, 0.0, 0.0), {"k": 1})])
    await cached.upsert("t2", [VectorRecord("b", "t2", (1.0, 0.0, 0.0))])

    first = await cached.query("t1", Q, 5)
    assert [h.id for h in first] == ["a"]
    assert (cached.stats.hits, cached.stats.misses) == (0, 1)

    # a write behind the cache's back is not seen: the repeated query is answered by Redis
    await inner.upsert("t1", [VectorRecord("z", "t1", (1.0, 0.01, 0.0))])
    assert await cached.query("t1", Q, 5) == first
    assert (cached.stats.hits, cached.stats.misses) == (1, 1)
    # different k, filter or vector are different entries
    await cached.query("t1", Q, 4)
    await cached.query("t1", Q, 5, MetadataFilter.of(Eq("k", 1)))
    await cached.query("t1", (0.9, 0.1, 0.0), 5)
    assert cached.stats.misses == 4

    # another tenant's write leaves t1's entries alone
    await cached.upsert("t2", [VectorRecord("c", "t2", (0.0, 1.0, 0.0))])
    assert await cached.query("t1", Q, 5) == first
    assert cached.stats.hits == 2

    # a write through the cache for t1 invalidates every t1 entry
    await cached.upsert("t1", [VectorRecord("y", "t1", (0.0, 0.0, 1.0))])
    assert [h.id for h in await cached.query("t1", Q, 5)] == ["a", "z", "y"]
    await cached.delete("t1", ["z"])
    assert [h.id for h in await cached.query("t1", Q, 5)] == ["a", "y"]
    assert [h.id for h in await cached.query("t1", Q, 5)] == ["a", "y"]
    assert cached.stats.hits == 3
    assert await redis.get(f"lumina:vq:{namespace}:t1:gen") == b"3"
    ttl = await redis.ttl(next(iter([k async for k in redis.scan_iter(f"lumina:vq:{namespace}:t1:3:*")])))
    assert 0 < ttl <= 60


async def test_invalid_queries_are_rejected_not_cached(redis: Redis, namespace: str) -> None:
    cached = CachedVectorStore(InMemoryVectorStore(3), redis, namespace=namespace)
    for _ in range(2):
        with pytest.raises(InvalidRequest, match="dimension mismatch"):
            await cached.query("t1", (1.0, 0.0), 5)
    assert cached.stats.hits == 0


async def test_queries_fall_through_when_redis_is_unreachable(namespace: str) -> None:
    dead = Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    inner = InMemoryVectorStore(3)
    await inner.upsert("t1", [VectorRecord("a", "t1", (1.0, 0.0, 0.0))])
    cached = CachedVectorStore(inner, dead, namespace=namespace)
    assert [h.id for h in await cached.query("t1", Q, 5)] == ["a"]
    assert cached.stats.errors >= 1
    await dead.aclose()
