"""The dynamic provider registry's use cases: providers and models are data, changed at run time.

Every change is one unit of work that also records a ``RegistryChanged`` event (outbox → JetStream),
so every replica reloads its catalogue and provider clients (``ReloadRegistry``); the replica that
made the change reloads at once through ``on_change``. API keys are envelope-encrypted through the
``Kms`` port before they reach the repository and are never returned: views carry a masked hint.
"""

from __future__ import annotations

import logging

from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import Protocol

import msgspec

from application.ports import (
    ProviderRepository,
    RegistryUnitOfWork,
    RegistryUnitOfWorkFactory,
    StoredSecret,
)
from domain.cost import Price
from domain.errors import DomainError, InvalidRequest, NotFound, Unavailable
from domain.events import DomainEvent, RegistryChanged
from domain.ports import Clock, IdGenerator, ProviderClient
from domain.registry import (
    CatalogueEntry,
    ModelRoute,
    ModelSource,
    PricePoint,
    ProviderKind,
    ProviderSpec,
    merge_catalogue,
    price_in_force,
    validate_name,
)

_log = logging.getLogger(__name__)

__all__ = [
    "Catalogue",
    "Kms",
    "LiveProviderPool",
    "ProviderFactory",
    "ProviderView",
    "RegistryAdmin",
    "RegistryRepository",
    "RegistryUnitOfWork",
    "RegistryUnitOfWorkFactory",
    "ReloadRegistry",
    "SeedRegistry",
    "StoredSecret",
    "mask_key",
    "secret_context",
]


class Kms(Protocol):
    """Key management: encrypt a secret bound to ``context`` (authenticated, not secret);
    ``decrypt`` needs the same context. A local keyfile now, Vault Transit later."""

    def encrypt(self, plaintext: bytes, context: dict[str, str]) -> bytes: ...

    def decrypt(self, ciphertext: bytes, context: dict[str, str]) -> bytes: ...


class ProviderFactory(Protocol):
    def build(self, spec: ProviderSpec, api_key: str) -> ProviderClient:
        """A client for ``spec`` (the caller closes it)."""
        ...

    async def list_models(self, spec: ProviderSpec, api_key: str) -> list[str]:
        """The model ids the provider lists; raises ProviderError subclasses."""
        ...


class Catalogue(Protocol):
    def entries(self) -> Sequence[CatalogueEntry]: ...


RegistryRepository = ProviderRepository
"""Former name of the registry's repository port (now ``application.ports.ProviderRepository``)."""


def mask_key(key: str) -> str:
    """A hint that identifies a key without revealing it: "sk-…a1b2" (short keys: "…")."""
    if len(key) < 16:
        return "…"
    return f"{key[:3]}…{key[-4:]}"


def secret_context(provider: str) -> dict[str, str]:
    return {"purpose": "provider_api_key", "provider": provider}


class ProviderView(msgspec.Struct, frozen=True):
    """A provider as shown to administrators: never the key, only whether one is set."""

    name: str
    kind: ProviderKind
    base_url: str | None
    label: str
    enabled: bool
    api_key_set: bool
    api_key_hint: str

    @classmethod
    def of(cls, spec: ProviderSpec, secret: StoredSecret | None) -> ProviderView:
        return cls(
            name=spec.name, kind=spec.kind, base_url=spec.base_url, label=spec.label, enabled=spec.enabled,
            api_key_set=secret is not None, api_key_hint=secret.hint if secret else "",
        )


OnChange = Callable[[], Awaitable[None]]


async def _nothing() -> None:
    return None


class SeedRegistry:
    """Idempotent start-up upserts (optionally with API keys, stored encrypted)."""

    def __init__(self, uow: RegistryUnitOfWorkFactory, kms: Kms | None = None, clock: Clock | None = None) -> None:
        self._uow = uow
        self._kms = kms
        self._clock = clock

    async def __call__(
        self, providers: Sequence[ProviderSpec], models: Sequence[ModelRoute], keys: dict[str, str] | None = None
    ) -> None:
        async with self._uow() as uow:
            for spec in providers:
                await uow.providers.upsert_provider(spec)
            for route in models:
                await uow.providers.upsert_model(route)
            if keys and self._kms is not None:
                stored = await uow.providers.secrets()
                for name, key in keys.items():
                    current = stored.get(name)
                    if current is None or self._kms.decrypt(current.ciphertext, secret_context(name)) != key.encode():
                        await uow.providers.set_secret(name, _seal(self._kms, name, key))  # new or rotated
            await uow.commit()


def _seal(kms: Kms, provider: str, key: str) -> StoredSecret:
    return StoredSecret(kms.encrypt(key.encode(), secret_context(provider)), mask_key(key))


class RegistryAdmin:
    """Administration of providers, models and prices: one method per use case."""

    def __init__(
        self,
        *,
        uow: RegistryUnitOfWorkFactory,
        kms: Kms,
        clock: Clock,
        ids: IdGenerator,
        tenant_id: str,
        factory: ProviderFactory | None = None,
        catalogue: Catalogue | None = None,
        on_change: OnChange = _nothing,
    ) -> None:
        self._uow = uow
        self._kms = kms
        self._clock = clock
        self._ids = ids
        self._tenant = tenant_id
        self._factory = factory
        self._catalogue = catalogue
        self._on_change = on_change

    def _changed(self, uow: RegistryUnitOfWork, entity: str, name: str, action: str) -> None:
        uow.record(
            RegistryChanged(
                event_id=self._ids.new_id(), tenant_id=self._tenant, occurred_at=self._clock.now(),
                entity=entity, name=name, action=action,
            )
        )

    # --- providers --------------------------------------------------------------------------

    async def list_providers(self) -> list[ProviderView]:
        async with self._uow() as uow:
            specs = await uow.providers.list_providers()
            secrets = await uow.providers.secrets()
        return [ProviderView.of(s, secrets.get(s.name)) for s in specs]

    async def get_provider(self, name: str) -> ProviderView:
        async with self._uow() as uow:
            spec = await uow.providers.get_provider(name)
            if spec is None:
                raise NotFound("provider", name)
            secret = (await uow.providers.secrets()).get(name)
        return ProviderView.of(spec, secret)

    async def put_provider(self, spec: ProviderSpec, api_key: str | None = None) -> ProviderView:
        validate_name("provider.name", spec.name)
        if spec.kind is ProviderKind.OPENAI_COMPATIBLE and not spec.base_url:
            raise InvalidRequest.single("provider.base_url", "an openai_compatible provider needs a base URL")
        if spec.base_url and not spec.base_url.startswith(("http://", "https://")):
            raise InvalidRequest.single("provider.base_url", "expected an http:// or https:// URL")
        if api_key is not None and not api_key.strip():
            raise InvalidRequest.single("api_key", "must not be blank (omit it to keep the stored key)")
        async with self._uow() as uow:
            await uow.providers.upsert_provider(spec)
            if api_key is not None:
                await uow.providers.set_secret(spec.name, _seal(self._kms, spec.name, api_key.strip()))
            secret = (await uow.providers.secrets()).get(spec.name)
            self._changed(uow, "provider", spec.name, "upserted")
            await uow.commit()
        await self._on_change()
        return ProviderView.of(spec, secret)

    async def delete_provider(self, name: str) -> None:
        async with self._uow() as uow:
            if not await uow.providers.delete_provider(name):
                raise NotFound("provider", name)
            self._changed(uow, "provider", name, "removed")
            await uow.commit()
        await self._on_change()

    # --- models and prices ------------------------------------------------------------------

    async def list_models(self, provider: str | None = None) -> list[ModelRoute]:
        async with self._uow() as uow:
            models = await uow.providers.list_models()
        return [m for m in models if provider is None or m.provider == provider]

    async def get_model(self, name: str) -> ModelRoute:
        async with self._uow() as uow:
            route = await uow.providers.get_model(name)
        if route is None:
            raise NotFound("model", name)
        return route

    async def put_model(self, route: ModelRoute, *, price_effective_from: datetime | None = None) -> ModelRoute:
        """Add or replace a model. A new price starts a price period at ``price_effective_from``
        (default now); the model's current price is the one in force now."""
        validate_name("model.name", route.name)
        if not route.upstream_model:
            raise InvalidRequest.single("model.upstream_model", "required")
        now = self._clock.now()
        effective = price_effective_from or now
        async with self._uow() as uow:
            if await uow.providers.get_provider(route.provider) is None:
                raise NotFound("provider", route.provider)
            old = await uow.providers.get_model(route.name)
            history = list(await uow.providers.price_history(route.name)) if old else []
            if route.priced and (not history or _price_at(history, effective) != route.price):
                point = PricePoint(route.name, effective, route.price)
                history.append(point)
            else:
                point = None
            current = _price_at(history, now)
            stored = ModelRoute(
                name=route.name, provider=route.provider, upstream_model=route.upstream_model,
                price=current if current is not None and route.priced else route.price,
                is_default=route.is_default, capabilities=route.capabilities, enabled=route.enabled,
                available=route.available, priced=route.priced, source=route.source,
            )
            await uow.providers.upsert_model(stored)
            if point is not None:
                await uow.providers.add_price(point)
            self._changed(uow, "model", route.name, "upserted")
            await uow.commit()
        await self._on_change()
        return stored

    async def delete_model(self, name: str) -> None:
        async with self._uow() as uow:
            if not await uow.providers.delete_model(name):
                raise NotFound("model", name)
            self._changed(uow, "model", name, "removed")
            await uow.commit()
        await self._on_change()

    async def price_history(self, name: str) -> list[PricePoint]:
        async with self._uow() as uow:
            if await uow.providers.get_model(name) is None:
                raise NotFound("model", name)
            return list(await uow.providers.price_history(name))

    # --- discovery --------------------------------------------------------------------------

    async def discover(self, provider: str, *, prefix: str = "") -> list[ModelRoute]:
        """Merge the shipped catalogue with the provider's listing and store the result. Models an
        operator created (source manual) are left alone; operator switches (enabled, default) kept."""
        if self._factory is None or self._catalogue is None:
            raise InvalidRequest.single("provider", "model discovery is not configured")
        async with self._uow() as uow:
            spec = await uow.providers.get_provider(provider)
            if spec is None:
                raise NotFound("provider", provider)
            secret = (await uow.providers.secrets()).get(provider)
        key = self._kms.decrypt(secret.ciphertext, secret_context(provider)).decode() if secret else ""
        upstream = await self._factory.list_models(spec, key)
        merged = merge_catalogue(provider, spec.kind, self._catalogue.entries(), upstream, prefix=prefix)
        effective = {e.model: e.price_effective for e in self._catalogue.entries() if e.kind == spec.kind}
        result: list[ModelRoute] = []
        async with self._uow() as uow:
            existing = {m.name: m for m in await uow.providers.list_models()}
            for route in merged:
                old = existing.get(route.name)
                if old is not None and (old.source is ModelSource.MANUAL or old.provider != provider):
                    continue
                if old is not None:
                    route.enabled, route.is_default = old.enabled, old.is_default
                await uow.providers.upsert_model(route)
                if route.priced:
                    history = await uow.providers.price_history(route.name) if old else []
                    if not history or history[-1].price != route.price:
                        when = effective.get(route.upstream_model) or self._clock.now()
                        await uow.providers.add_price(PricePoint(route.name, when, route.price))
                result.append(route)
            self._changed(uow, "provider", provider, "discovered")
            await uow.commit()
        await self._on_change()
        return result


def _price_at(history: Sequence[PricePoint], at: datetime) -> Price | None:
    return price_in_force(history, at)


class LiveProviderPool:
    """``ProviderClients`` rebuilt from the registry: one client per enabled provider, built by the
    ``ProviderFactory`` with the decrypted key when the provider is first asked for (a reload reads
    the registry and builds nothing, however many providers it holds). ``reload`` swaps in new
    clients for changed providers; replaced and removed clients are closed by ``aclose`` only, since
    streams that started on them may still be running."""

    def __init__(self, uow: RegistryUnitOfWorkFactory, kms: Kms, factory: ProviderFactory) -> None:
        self._uow = uow
        self._kms = kms
        self._factory = factory
        self._clients: dict[str, ProviderClient] = {}
        self._pending: dict[str, tuple[ProviderSpec, StoredSecret | None]] = {}  # enabled, not built yet
        self._fingerprints: dict[str, tuple[object, ...]] = {}
        self._static: dict[str, ProviderClient] = {}
        self._retired: list[ProviderClient] = []

    def add(self, client: ProviderClient) -> None:
        """A client that is not in the registry's hands (tests, the simulator): kept across reloads."""
        self._static[client.name] = client

    def get(self, provider: str) -> ProviderClient:
        client = self._clients.get(provider) or self._static.get(provider)
        if client is None:
            pending = self._pending.get(provider)
            if pending is None:
                raise NotFound("provider", provider)
            spec, secret = pending
            try:
                key = self._kms.decrypt(secret.ciphertext, secret_context(provider)).decode() if secret else ""
                client = self._factory.build(spec, key)
            except DomainError:
                raise
            except Exception as exc:  # e.g. a key sealed under another key-encryption key: this provider only
                _log.warning("provider %s: client not built (%s)", provider, type(exc).__name__)
                raise Unavailable(f"provider {provider} cannot be used: its stored key or settings are unusable") from None
            del self._pending[provider]
            self._clients[provider] = client
        return client

    def names(self) -> list[str]:
        return sorted({*self._clients, *self._pending, *self._static})

    async def reload(self) -> None:
        async with self._uow() as uow:
            specs = [s for s in await uow.providers.list_providers() if s.enabled]
            secrets = await uow.providers.secrets()
        wanted: dict[str, tuple[ProviderSpec, StoredSecret | None]] = {s.name: (s, secrets.get(s.name)) for s in specs}
        retired: list[ProviderClient] = []
        for name in list(self._fingerprints):
            if name not in wanted:
                self._fingerprints.pop(name)
                self._pending.pop(name, None)
                if name in self._clients:
                    retired.append(self._clients.pop(name))
        for name, (spec, secret) in wanted.items():
            fingerprint = (spec.kind, spec.base_url, secret.ciphertext if secret else None)
            if self._fingerprints.get(name) == fingerprint:
                continue
            self._fingerprints[name] = fingerprint
            self._pending[name] = (spec, secret)  # built by the next get()
            old = self._clients.pop(name, None)
            if old is not None:
                retired.append(old)
        self._retired.extend(retired)

    async def aclose(self) -> None:
        for client in [*self._retired, *self._clients.values(), *self._static.values()]:
            await client.aclose()
        self._retired.clear()
        self._clients.clear()
        self._pending.clear()
        self._static.clear()
        self._fingerprints.clear()


class _Invalidates(Protocol):
    def invalidate(self) -> None: ...


class ReloadRegistry:
    """What a replica does when the registry changed (here or on another replica)."""

    def __init__(self, catalog: _Invalidates, pool: LiveProviderPool) -> None:
        self._catalog = catalog
        self._pool = pool
        self.reloads = 0

    async def __call__(self) -> None:
        self._catalog.invalidate()
        await self._pool.reload()
        self.reloads += 1

    async def on_event(self, event: DomainEvent, subject: str = "") -> None:
        if isinstance(event, RegistryChanged):
            await self()
