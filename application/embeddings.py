"""Embedding texts with the provider that serves the requested embedding model."""

from __future__ import annotations

from application.ports import ModelCatalog, ProviderClients
from domain.chat import EmbeddingRequest, Embeddings

__all__ = ["EmbedTexts"]


class EmbedTexts:
    """``await EmbedTexts(catalog, providers)(request)``: resolve ``request.model`` in the catalog
    (NotFound when unknown) and embed through its provider (ProviderError subclasses propagate)."""

    def __init__(self, catalog: ModelCatalog, providers: ProviderClients) -> None:
        self._catalog = catalog
        self._providers = providers

    @property
    def catalog(self) -> ModelCatalog:
        return self._catalog

    @property
    def providers(self) -> ProviderClients:
        return self._providers

    async def __call__(self, request: EmbeddingRequest) -> Embeddings:
        route = await self._catalog.resolve(request.model)
        client = self._providers.get(route.provider)
        return await client.embed(route.upstream_model, request)
