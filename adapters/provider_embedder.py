"""``ProviderEmbedder``: the ``Embedder`` port on a provider's embedding model, through the
provider layer (``application.embeddings.EmbedTexts``: the catalogue resolves the model name, the
provider's own SDK client embeds).

``model`` is ``provider:<name>`` (vectors of different models never share a collection). The
vector size is ``dimensions`` when given (sent to the provider, which shortens its vectors where
the model allows), else learnt by ``probe()`` (one embedding of a short text) before first use.
Texts go in batches of at most ``batch_size``; vectors come back unit length (cosine stores expect
it; OpenAI's already are). Provider errors propagate as ``domain.errors.ProviderError``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from application.embeddings import EmbedTexts
from domain.chat import EmbeddingRequest
from domain.errors import UpstreamInvalidRequest

__all__ = ["ProviderEmbedder"]

MAX_BATCH = 2048


class ProviderEmbedder:
    def __init__(
        self, embed_texts: EmbedTexts, model: str, *, dimensions: int | None = None, batch_size: int = 256
    ) -> None:
        if not model:
            raise ValueError("an embedding model name is required")
        if not 1 <= batch_size <= MAX_BATCH:
            raise ValueError(f"batch_size must be between 1 and {MAX_BATCH}")
        self._embed_texts = embed_texts
        self.embed_texts = embed_texts  # what embeds (e.g. application.memory.metering.MeteredEmbedTexts)
        self._model = model
        self._requested = dimensions
        self._batch = batch_size
        self.model = f"provider:{model}"
        self.dimensions: int = dimensions or 0

    async def probe(self) -> int:
        """Learn (and return) the vector size with one request, unless it is already known."""
        if not self.dimensions:
            (vector,) = await self._call(["dimension probe"])
            self.dimensions = len(vector)
        return self.dimensions

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if not texts:
            return []
        if not self.dimensions:
            await self.probe()
        out: list[list[float]] = []
        for start in range(0, len(texts), self._batch):
            out += await self._call(texts[start : start + self._batch])
        return out

    async def _call(self, texts: Sequence[str]) -> list[list[float]]:
        # providers reject empty inputs; an empty text embeds like a single space
        request = EmbeddingRequest(inputs=tuple(t if t.strip() else " " for t in texts), model=self._model, dimensions=self._requested)
        result = await self._embed_texts(request)
        if len(result.vectors) != len(texts):
            raise UpstreamInvalidRequest(f"{self._model}: {len(result.vectors)} vectors for {len(texts)} texts")
        vectors = [_unit(v) for v in result.vectors]
        if self.dimensions and any(len(v) != self.dimensions for v in vectors):
            raise UpstreamInvalidRequest(f"{self._model}: vectors are not {self.dimensions}-dimensional")
        return vectors


def _unit(vector: Sequence[float]) -> list[float]:
    norm = math.sqrt(math.fsum(x * x for x in vector))
    return [x / norm for x in vector] if norm > 0 else list(vector)
