"""CachedEmbedder over the in-memory LRU cache, with a hand-written counting Embedder."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from adapters.onnx.cache import CachedEmbedder, MemoryEmbeddingCache, cache_key


class CountingEmbedder:
    """A deterministic fake ``Embedder``: the vector of a text is [len, first char code, 1]."""

    dimensions = 3

    def __init__(self, model: str = "fake-embedder") -> None:
        self.model = model
        self.calls: list[list[str]] = []

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls.append(list(texts))
        return [[float(len(t)), float(ord(t[0]) if t else 0), 1.0] for t in texts]


async def test_second_call_is_served_from_the_cache() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, MemoryEmbeddingCache(100))
    first = await cached.embed(["alpha", "beta"])
    second = await cached.embed(["beta", "alpha"])
    assert first == [[5.0, 97.0, 1.0], [4.0, 98.0, 1.0]]
    assert second == [first[1], first[0]]
    assert inner.calls == [["alpha", "beta"]]
    assert (cached.hits, cached.misses) == (2, 2)


async def test_only_misses_reach_the_model_once_each_and_order_is_kept() -> None:
    inner = CountingEmbedder()
    cached = CachedEmbedder(inner, MemoryEmbeddingCache(100))
    await cached.embed(["b"])
    result = await cached.embed(["a", "b", "a", "c"])
    assert inner.calls == [["b"], ["a", "c"]]  # "a" asked for once, "b" never again
    assert [v[1] for v in result] == [97.0, 98.0, 97.0, 99.0]


async def test_lru_evicts_the_least_recently_used() -> None:
    inner = CountingEmbedder()
    cache = MemoryEmbeddingCache(max_entries=2)
    cached = CachedEmbedder(inner, cache)
    await cached.embed(["x", "y"])
    await cached.embed(["x"])  # x is now the most recently used
    await cached.embed(["z"])  # evicts y
    assert len(cache) == 2
    await cached.embed(["x", "y"])
    assert inner.calls[-1] == ["y"]


async def test_keys_are_sha256_of_model_and_text() -> None:
    assert cache_key("m1", "hello") != cache_key("m2", "hello")
    assert cache_key("m1", "hello") == cache_key("m1", "hello")
    assert len(cache_key("m1", "hello")) == 64
    cache = MemoryEmbeddingCache(10)
    one, two = CountingEmbedder("model-one"), CountingEmbedder("model-two")
    await CachedEmbedder(one, cache).embed(["same text"])
    await CachedEmbedder(two, cache).embed(["same text"])
    assert len(two.calls) == 1  # another model's vector is never reused


async def test_empty_input_and_bad_size() -> None:
    inner = CountingEmbedder()
    assert await CachedEmbedder(inner, MemoryEmbeddingCache(1)).embed([]) == []
    assert inner.calls == []
    with pytest.raises(ValueError):
        MemoryEmbeddingCache(0)
