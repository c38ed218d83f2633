"""REST admin API of the provider registry under ``/admin``: JSON bodies as msgspec Structs,
errors as problem+json (the app's exception handlers). API keys are write-only: responses carry
``api_key_set`` and a masked ``api_key_hint``. ``create_admin_router`` returns a Litestar
``Router`` to register on the backend app (``route_handlers=[..., admin_router]``).

Model names may contain ``/`` (``meta-llama/Llama-3-8B`` from a local server), so model routes take
the rest of the path as the name: ``/admin/models/meta-llama/Llama-3-8B``. Price history is at
``/admin/prices/{model}``; ``/admin/models/{model}/prices`` still works (a GET whose path ends in
``/prices`` asks for the history of the model before it).

Any principal may read; every other method takes an admin of the platform tenant (the registry
serves every tenant): a guard on the router checks it before the handler runs."""

from __future__ import annotations

from datetime import datetime

import msgspec
from litestar import Router, delete, get, post, put
from litestar.connection import ASGIConnection
from litestar.handlers.base import BaseRouteHandler
from litestar.params import FromPath, FromQuery, JSONBody

from api.auth import require_platform_admin
from application.health import HealthMonitor
from application.registry import ProviderView, RegistryAdmin
from domain.cost import Price
from domain.registry import (
    ModelCapabilities,
    ModelRoute,
    ModelSource,
    ProviderKind,
    ProviderSpec,
)

__all__ = ["ModelIn", "ModelOut", "PriceIn", "ProviderIn", "create_admin_router"]


class ProviderIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    kind: ProviderKind
    base_url: str | None = None
    label: str = ""
    enabled: bool = True
    # write-only; omit to keep the stored key
    api_key: str | None = None


class PriceIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    cached_input_per_mtok: float = 0.0
    effective_from: datetime | None = None


class ModelIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    provider: str
    upstream_model: str | None = None
    price: PriceIn | None = None
    is_default: bool = False
    capabilities: ModelCapabilities = ModelCapabilities()
    enabled: bool = True


class PriceOut(msgspec.Struct, frozen=True):
    input_per_mtok: float
    output_per_mtok: float
    cached_input_per_mtok: float
    effective_from: datetime | None = None


class ModelOut(msgspec.Struct, frozen=True):
    name: str
    provider: str
    upstream_model: str
    price: PriceOut | None
    is_default: bool
    capabilities: ModelCapabilities
    enabled: bool
    available: bool
    priced: bool
    source: ModelSource

    @classmethod
    def of(cls, r: ModelRoute) -> ModelOut:
        p = r.price
        price = PriceOut(p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok) if r.priced else None
        return cls(
            name=r.name, provider=r.provider, upstream_model=r.upstream_model, price=price, is_default=r.is_default,
            capabilities=r.capabilities, enabled=r.enabled, available=r.available, priced=r.priced, source=r.source,
        )


class HealthOut(msgspec.Struct, frozen=True):
    provider: str
    model: str
    state: str
    error_rate: float
    latency_seconds: float | None
    ttft_seconds: float | None
    samples: int


_PRICES = "/prices"


def _model_name(path: str) -> str:
    """The model name of a ``{name:path}`` parameter (which keeps its leading slash)."""
    return path.lstrip("/")


_READS = frozenset({"GET", "HEAD"})


def create_admin_router(admin: RegistryAdmin, health: HealthMonitor | None = None, *, platform_tenant: str) -> Router:
    def writers_are_platform_admins(connection: ASGIConnection, _: BaseRouteHandler) -> None:  # type: ignore[type-arg]
        if connection.scope.get("method", "GET") not in _READS:
            require_platform_admin(platform_tenant, "change the provider registry")

    @get("/providers")
    async def list_providers() -> list[ProviderView]:
        return await admin.list_providers()

    @get("/providers/{name:str}")
    async def get_provider(name: FromPath[str]) -> ProviderView:
        return await admin.get_provider(name)

    @put("/providers/{name:str}")
    async def put_provider(name: FromPath[str], data: JSONBody[ProviderIn]) -> ProviderView:
        spec = ProviderSpec(name, data.kind, base_url=data.base_url or None, label=data.label, enabled=data.enabled)
        return await admin.put_provider(spec, data.api_key)

    @delete("/providers/{name:str}", status_code=204)
    async def delete_provider(name: FromPath[str]) -> None:
        await admin.delete_provider(name)

    @post("/providers/{name:str}/discover", status_code=200)
    async def discover(name: FromPath[str]) -> list[ModelOut]:
        return [ModelOut.of(m) for m in await admin.discover(name)]

    @get("/models")
    async def list_models(provider: FromQuery[str | None] = None) -> list[ModelOut]:
        return [ModelOut.of(m) for m in await admin.list_models(provider)]

    @get("/models/{name:path}")
    async def get_model(name: FromPath[str]) -> ModelOut | list[PriceOut]:
        model = _model_name(name)
        if model.endswith(_PRICES):
            return await prices_of(model.removesuffix(_PRICES))
        return ModelOut.of(await admin.get_model(model))

    @put("/models/{name:path}")
    async def put_model(name: FromPath[str], data: JSONBody[ModelIn]) -> ModelOut:
        name = _model_name(name)
        p = data.price
        route = ModelRoute(
            name=name, provider=data.provider, upstream_model=data.upstream_model or name,
            price=Price(p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok) if p else Price(),
            is_default=data.is_default, capabilities=data.capabilities, enabled=data.enabled, priced=p is not None,
        )
        stored = await admin.put_model(route, price_effective_from=p.effective_from if p else None)
        return ModelOut.of(stored)

    @delete("/models/{name:path}", status_code=204)
    async def delete_model(name: FromPath[str]) -> None:
        await admin.delete_model(_model_name(name))

    async def prices_of(model: str) -> list[PriceOut]:
        return [
            PriceOut(p.price.input_per_mtok, p.price.output_per_mtok, p.price.cached_input_per_mtok, p.effective_from)
            for p in await admin.price_history(model)
        ]

    @get("/prices/{name:path}")
    async def model_prices(name: FromPath[str]) -> list[PriceOut]:
        return await prices_of(_model_name(name))

    @get("/health")
    async def model_health() -> list[HealthOut]:
        snapshot = health.snapshot() if health else []
        return [
            HealthOut(h.provider, h.model, h.state.value, h.error_rate, h.latency_s, h.ttft_s, h.samples)
            for h in snapshot
        ]

    return Router(
        path="/admin",
        guards=[writers_are_platform_admins],
        route_handlers=[
            list_providers, get_provider, put_provider, delete_provider, discover,
            list_models, get_model, put_model, delete_model, model_prices, model_health,
        ],
    )
