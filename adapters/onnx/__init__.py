"""Local models on onnxruntime: the sentence embedder (all-MiniLM-L6-v2, built by ``make install``)
and a content-hash cache for any ``Embedder``. See docs/embeddings.md."""

from adapters.onnx.cache import (
    CachedEmbedder,
    EmbeddingCache,
    MemoryEmbeddingCache,
    RedisEmbeddingCache,
    cache_key,
)
from adapters.onnx.embedder import DEFAULT_MODEL_DIR, OnnxEmbedder
from adapters.onnx.runtime import ModelFilesMissing

__all__ = [
    "DEFAULT_MODEL_DIR",
    "CachedEmbedder",
    "EmbeddingCache",
    "MemoryEmbeddingCache",
    "ModelFilesMissing",
    "OnnxEmbedder",
    "RedisEmbeddingCache",
    "cache_key",
]
