"""OnnxEmbedder on the real all-MiniLM-L6-v2 ONNX model built by `make install`, real onnxruntime."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import redis.asyncio as aioredis

from adapters.onnx import (
    DEFAULT_MODEL_DIR,
    CachedEmbedder,
    MemoryEmbeddingCache,
    ModelFilesMissing,
    OnnxEmbedder,
    RedisEmbeddingCache,
)
from adapters.onnx.runtime import SentenceEncoder
from application.ports import Embedder
from tools.bench.embeddings import load_sentences

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fp32() -> OnnxEmbedder:
    return OnnxEmbedder(DEFAULT_MODEL_DIR, threads=2)


@pytest.fixture(scope="module")
def int8() -> OnnxEmbedder:
    return OnnxEmbedder(DEFAULT_MODEL_DIR, int8=True, threads=2)


def cos(a: list[float], b: list[float]) -> float:
    return float(np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


async def test_it_is_an_embedder_with_384_dimensions(fp32: OnnxEmbedder, int8: OnnxEmbedder) -> None:
    port: Embedder = fp32
    assert (port.model, port.dimensions) == ("all-MiniLM-L6-v2", 384)
    assert int8.model == "all-MiniLM-L6-v2-int8"
    [vector] = await port.embed(["hello"])
    assert len(vector) == 384
    assert await port.embed([]) == []


async def test_semantic_ordering(fp32: OnnxEmbedder) -> None:
    cat, kitten, market = await fp32.embed(["a cat sits on the mat", "a kitten on a rug", "stock market crash"])
    assert cos(cat, kitten) > 0.5
    assert cos(cat, kitten) > cos(cat, market) + 0.3
    query, *turns = await fp32.embed(
        [
            "When did Caroline go to the support group?",
            "I went to a LGBTQ support group yesterday and it was so powerful.",
            "My kids loved the camping trip to the mountains.",
            "The quarterly earnings report beat expectations.",
        ]
    )
    ranked = sorted(range(3), key=lambda i: -cos(query, turns[i]))
    assert ranked[0] == 0


async def test_unit_norm_and_deterministic(fp32: OnnxEmbedder) -> None:
    texts = ["Deterministic?", "", "x" * 5000]  # empty and over-long (truncated to 256 tokens) too
    first, second = await fp32.embed(texts), await fp32.embed(texts)
    assert first == second
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)


async def test_batch_equals_one_by_one(fp32: OnnxEmbedder) -> None:
    texts = load_sentences()[:40] + ["short", "a much longer sentence that pads every shorter one in its batch " * 4]
    together = np.array(await fp32.embed(texts))
    single = np.array([(await fp32.embed([t]))[0] for t in texts])
    np.testing.assert_allclose(together, single, atol=2e-5)
    small_batches = OnnxEmbedder(DEFAULT_MODEL_DIR, batch_size=3, threads=2)
    np.testing.assert_allclose(np.array(await small_batches.embed(texts)), together, atol=2e-5)
    assert small_batches.batches_run == -(-len(texts) // 3)


def test_tokens_are_unpadded_and_truncated() -> None:
    # tokenizer.json itself pads to 128: the runtime must not, so that batches sorted by token
    # count pad only to their own longest text.
    encoder = SentenceEncoder(DEFAULT_MODEL_DIR, threads=1)
    short, long = encoder.tokenize(["a cat", "x " * 5000])
    assert len(short.ids) == 4  # [CLS] a cat [SEP]
    assert len(long.ids) == encoder.max_tokens == 256


async def test_batches_by_token_count_keep_callers_order() -> None:
    # Few characters but many tokens (digits, emoji) against many characters in few tokens: the
    # token-count order differs from the character order, vectors still come back in input order.
    texts = ["3.1.4.1.5.9.2.6", "internationalisation", "🙂 🙂 🙂 🙂", "a", "abcdefghijklmnopqrstuvwxyz" * 3]
    model = OnnxEmbedder(DEFAULT_MODEL_DIR, batch_size=2, threads=2)
    together = np.array(await model.embed(texts))
    single = np.array([(await model.embed([t]))[0] for t in texts])
    np.testing.assert_allclose(together, single, atol=2e-5)
    assert model.batches_run == 3 + len(texts)


async def test_int8_is_close_to_fp32(fp32: OnnxEmbedder, int8: OnnxEmbedder) -> None:
    texts = load_sentences()[100:164]
    a, b = np.array(await fp32.embed(texts)), np.array(await int8.embed(texts))
    cosines = (a * b).sum(axis=1)
    assert cosines.min() > 0.98, cosines.min()


async def test_cache_hits_avoid_inference(fp32: OnnxEmbedder) -> None:
    model = OnnxEmbedder(DEFAULT_MODEL_DIR, threads=2)
    cached = CachedEmbedder(model, MemoryEmbeddingCache(1000))
    texts = ["cached once", "cached twice", "cached once"]
    first = await cached.embed(texts)
    assert model.texts_embedded == 2  # the duplicate went through the model once
    second = await cached.embed(list(reversed(texts)))
    assert model.texts_embedded == 2
    assert second == list(reversed(first))
    np.testing.assert_allclose(first, await fp32.embed(texts), atol=1e-6)


async def test_redis_cache_is_shared_between_embedders(redis_url: str) -> None:
    client = aioredis.from_url(redis_url)
    prefix = f"lumina:test:emb:{id(client)}:"
    try:
        one, two = OnnxEmbedder(DEFAULT_MODEL_DIR, threads=2), OnnxEmbedder(DEFAULT_MODEL_DIR, threads=2)
        first = await CachedEmbedder(one, RedisEmbeddingCache(client, ttl_seconds=60, prefix=prefix)).embed(
            ["shared through redis"]
        )
        second = await CachedEmbedder(two, RedisEmbeddingCache(client, ttl_seconds=60, prefix=prefix)).embed(
            ["shared through redis"]
        )
        assert (one.texts_embedded, two.texts_embedded) == (1, 0)
        assert second == first
        [key] = [k async for k in client.scan_iter(match=prefix + "*")]
        assert 0 < await client.ttl(key) <= 60
    finally:
        keys = [k async for k in client.scan_iter(match=prefix + "*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_inference_does_not_block_the_event_loop(fp32: OnnxEmbedder) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.005)
            ticks += 1

    task = asyncio.create_task(ticker())
    try:
        await fp32.embed(load_sentences()[:64])
    finally:
        task.cancel()
    assert ticks >= 3


def test_missing_model_files_say_how_to_build_them(tmp_path: Path) -> None:
    with pytest.raises(ModelFilesMissing, match="make install"):
        OnnxEmbedder(tmp_path)


def test_runtime_never_imports_torch() -> None:
    script = textwrap.dedent(
        """
        import asyncio, sys
        from adapters.onnx.embedder import OnnxEmbedder
        vectors = asyncio.run(OnnxEmbedder(threads=1).embed(["no torch here"]))
        assert len(vectors[0]) == 384
        print("torch" in sys.modules, "transformers" in sys.modules, "sentence_transformers" in sys.modules)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True
    )
    assert result.stdout.split() == ["False", "False", "False"]
