"""A deterministic ``Embedder`` for tests: hashed bag of words (unit length), so texts sharing
words are near each other. Not a model: integration tests also run the real ONNX embedder."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from domain.memory.topics import tokenize

__all__ = ["HashEmbedder"]


class HashEmbedder:
    def __init__(self, dimensions: int = 384) -> None:
        self.dimensions = dimensions
        self.model = f"hash-bow-{dimensions}"
        self.calls = 0

    def _one(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word in tokenize(text) or ["<empty>"]:
            digest = hashlib.blake2b(word.encode(), digest_size=8).digest()
            vector[int.from_bytes(digest[:4], "big") % self.dimensions] += 1.0 if digest[4] & 1 else -1.0
        norm = math.sqrt(sum(x * x for x in vector)) or 1.0
        if norm == 1.0 and not any(vector):
            vector[0] = 1.0
        return [x / norm for x in vector]

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        self.calls += 1
        return [self._one(t) for t in texts]
