"""The model catalog: which provider serves a model name. Read from the registry through the unit
of work and cached for a short time, so the hot path does not query the database per request.

Only the first load (and the first after ``invalidate()``) is waited for. Once the cache is older
than ``ttl``, the next look-up answers from it and starts one reload in the background (stale while
revalidate); a failed reload keeps the cached catalog and is tried again on a later look-up."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Sequence

from application.ports import UnitOfWorkFactory
from domain.errors import NotFound
from domain.ports import Clock
from domain.registry import ModelRoute, ProviderSpec

__all__ = ["RegistryCatalog"]


class RegistryCatalog:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, *, ttl: float = 5.0, default_model: str = "") -> None:
        self._uow = uow
        self._clock = clock
        self._ttl = ttl
        self._default_model = default_model
        self._loaded_at: float | None = None
        self._models: dict[str, ModelRoute] = {}
        self._providers: dict[str, ProviderSpec] = {}
        self._routes: tuple[ModelRoute, ...] = ()
        self._generation = 0  # bumped by invalidate(): a load started before it is not fresh enough
        self._reload: asyncio.Task[None] | None = None
        self._loading: asyncio.Future[None] | None = None
        self._loading_generation = -1

    def invalidate(self) -> None:
        self._loaded_at = None
        self._generation += 1

    async def _refresh(self) -> None:
        loaded_at = self._loaded_at
        if loaded_at is not None:
            if self._clock.monotonic() - loaded_at >= self._ttl and (self._reload is None or self._reload.done()):
                self._reload = asyncio.create_task(
                    self._background_load(), name="catalog-reload", context=contextvars.Context()
                )
            return
        # single flight: concurrent first look-ups share one load instead of each taking a connection
        loading = self._loading
        if loading is None or loading.done() or self._loading_generation != self._generation:
            self._loading_generation = self._generation
            loading = self._loading = asyncio.ensure_future(self._load())
        await asyncio.shield(loading)

    async def _background_load(self) -> None:
        try:
            await self._load(background=True)
        except Exception:  # noqa: BLE001 - the cached catalog stays; a later look-up retries
            pass

    async def _load(self, *, background: bool = False) -> None:
        generation = self._generation
        now = self._clock.monotonic()
        async with self._uow() as uow:
            providers: Sequence[ProviderSpec] = await uow.providers.list_providers()
            models: Sequence[ModelRoute] = await uow.providers.list_models()
        fresh = generation == self._generation  # else invalidated meanwhile: the read may predate the change
        if background and not fresh:
            return
        self._providers = {p.name: p for p in providers}
        enabled = {p.name for p in providers if p.enabled}
        self._models = {m.name: m for m in models if m.provider in enabled}
        routes = tuple(sorted(self._models.values(), key=lambda m: m.name))
        # unchanged (field by field): keep the same tuple, so routing need not recompile
        if list(map(_fields, routes)) != list(map(_fields, self._routes)):
            self._routes = routes
        if fresh:
            self._loaded_at = now

    async def resolve(self, model: str, provider: str | None = None) -> ModelRoute:
        """The route for ``model`` ('' means the default). With ``provider``, the route of that
        provider: the model's own when it is served there, else the provider's route whose upstream
        model is ``model``; NotFound names both when it has none."""
        await self._refresh()
        name = model or self._default_model
        if provider:
            return self._pinned(name, provider)
        if name:
            route = self._models.get(name)
            if route is None:
                raise NotFound("model", name)
            return route
        defaults = [m for m in self._models.values() if m.is_default] or sorted(self._models.values(), key=lambda m: m.name)
        if not defaults:
            raise NotFound("model", "(default)")
        return defaults[0]

    def _pinned(self, name: str, provider: str) -> ModelRoute:
        route = self._models.get(name) if name else None
        if route is not None and route.provider == provider:
            return route
        theirs = sorted((m for m in self._models.values() if m.provider == provider), key=lambda m: m.name)
        if name:
            for candidate in theirs:
                if candidate.upstream_model == name:
                    return candidate
        else:
            defaults = [m for m in theirs if m.is_default] or theirs
            if defaults:
                return defaults[0]
        raise NotFound("model", f"{name or '(default)'} at provider {provider}")

    async def provider(self, name: str) -> ProviderSpec:
        await self._refresh()
        try:
            return self._providers[name]
        except KeyError:
            raise NotFound("provider", name) from None

    async def routes(self) -> tuple[ModelRoute, ...]:
        """Every routable model (those of enabled providers) in name order: the very same tuple
        until a reload finds something changed, so a consumer can tell by identity."""
        await self._refresh()
        return self._routes

    async def models(self) -> list[ModelRoute]:
        await self._refresh()
        return sorted(self._models.values(), key=lambda m: m.name)


def _fields(route: ModelRoute) -> dict[str, object]:
    """A route's own fields (without what a persistence layer may attach to the instance)."""
    return {k: v for k, v in vars(route).items() if not k.startswith("_")}
