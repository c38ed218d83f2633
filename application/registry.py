"""Registering providers and models (idempotent upserts)."""

from __future__ import annotations

from collections.abc import Sequence

from application.ports import UnitOfWorkFactory
from domain.registry import ModelRoute, ProviderSpec

__all__ = ["SeedRegistry"]


class SeedRegistry:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def __call__(self, providers: Sequence[ProviderSpec], models: Sequence[ModelRoute]) -> None:
        async with self._uow() as uow:
            for spec in providers:
                await uow.providers.upsert_provider(spec)
            for route in models:
                await uow.providers.upsert_model(route)
            await uow.commit()
