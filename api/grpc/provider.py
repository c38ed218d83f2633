"""``ProviderService``: thin servicer over ``RegistryAdmin`` and the replica's ``HealthMonitor``
(decode, authorize, call one use case, encode). Domain errors become statuses in the edge
interceptor. Any principal may read the registry; changing it (it serves every tenant) takes an
admin of the platform tenant (``api.auth.require_platform_admin``)."""

from __future__ import annotations

from datetime import UTC

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from api.auth import require_platform_admin
from api.grpc.timestamps import timestamp
from application.health import HealthMonitor
from application.registry import ProviderView, RegistryAdmin
from domain.cost import Price
from domain.errors import InvalidRequest
from domain.health import ModelHealth
from domain.registry import (
    Modality,
    ModelCapabilities,
    ModelRoute,
    PricePoint,
    ProviderKind,
    ProviderSpec,
)
from lumina.v1 import provider_pb2 as pb
from lumina.v1 import provider_pb2_grpc

__all__ = ["SERVICE_NAME", "ProviderServicer", "add_provider_service"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ProviderService"].full_name


def _enum_value(prefix: str, value: str) -> str:
    return f"{prefix}_{value.upper()}"


def _kind_in(kind: int) -> ProviderKind:
    if kind == pb.PROVIDER_KIND_UNSPECIFIED:
        raise InvalidRequest.single("provider.kind", "required")
    return ProviderKind(pb.ProviderKind.Name(kind).removeprefix("PROVIDER_KIND_").lower())


def _kind_out(kind: ProviderKind) -> int:
    return pb.ProviderKind.Value(_enum_value("PROVIDER_KIND", kind.value))


def _modalities_in(values: list[int], field: str) -> tuple[Modality, ...]:
    out = []
    for v in values:
        if v == pb.MODALITY_UNSPECIFIED:
            raise InvalidRequest.single(field, "unspecified modality")
        out.append(Modality(pb.Modality.Name(v).removeprefix("MODALITY_").lower()))
    return tuple(out) or (Modality.TEXT,)


def encode_provider(view: ProviderView) -> pb.Provider:
    return pb.Provider(
        name=view.name, kind=_kind_out(view.kind), base_url=view.base_url or "", label=view.label,
        enabled=view.enabled, api_key_set=view.api_key_set, api_key_hint=view.api_key_hint,
    )


def encode_price(price: Price, effective: Timestamp | None = None) -> pb.Price:
    return pb.Price(
        input_per_mtok=price.input_per_mtok, output_per_mtok=price.output_per_mtok,
        cached_input_per_mtok=price.cached_input_per_mtok, effective_from=effective,
    )


def encode_model(route: ModelRoute) -> pb.Model:
    c = route.capabilities
    return pb.Model(
        name=route.name, provider=route.provider, upstream_model=route.upstream_model,
        price=encode_price(route.price), is_default=route.is_default,
        capabilities=pb.Capabilities(
            context_window=c.context_window, max_output_tokens=c.max_output_tokens,
            input_modalities=[pb.Modality.Value(_enum_value("MODALITY", m.value)) for m in c.input_modalities],
            output_modalities=[pb.Modality.Value(_enum_value("MODALITY", m.value)) for m in c.output_modalities],
            tools=c.tools, parallel_tool_calls=c.parallel_tool_calls, json_schema=c.json_schema,
            streaming=c.streaming, reasoning=c.reasoning, embeddings=c.embeddings,
        ),
        enabled=route.enabled, available=route.available, priced=route.priced, source=route.source.value,
    )


def decode_model(m: pb.Model) -> ModelRoute:
    caps = ModelCapabilities()
    if m.HasField("capabilities"):
        c = m.capabilities
        caps = ModelCapabilities(
            context_window=c.context_window or caps.context_window,
            max_output_tokens=c.max_output_tokens or caps.max_output_tokens,
            input_modalities=_modalities_in(list(c.input_modalities), "model.capabilities.input_modalities"),
            output_modalities=_modalities_in(list(c.output_modalities), "model.capabilities.output_modalities"),
            tools=c.tools, parallel_tool_calls=c.parallel_tool_calls, json_schema=c.json_schema,
            streaming=c.streaming, reasoning=c.reasoning, embeddings=c.embeddings,
        )
    p = m.price
    return ModelRoute(
        name=m.name, provider=m.provider, upstream_model=m.upstream_model or m.name,
        price=Price(p.input_per_mtok, p.output_per_mtok, p.cached_input_per_mtok), is_default=m.is_default,
        capabilities=caps, enabled=m.enabled, available=True, priced=m.priced or m.HasField("price"),
    )


def _health_out(h: ModelHealth) -> pb.ModelHealth:
    return pb.ModelHealth(
        provider=h.provider, model=h.model, state=pb.HealthState.Value(_enum_value("HEALTH_STATE", h.state.value)),
        error_rate=h.error_rate, latency_seconds=h.latency_s or 0.0, ttft_seconds=h.ttft_s or 0.0, samples=h.samples,
    )


def _point_out(point: PricePoint) -> pb.Price:
    return encode_price(point.price, timestamp(point.effective_from))


class ProviderServicer(provider_pb2_grpc.ProviderServiceServicer):
    def __init__(self, *, admin: RegistryAdmin, health: HealthMonitor | None = None, platform_tenant: str) -> None:
        self._admin = admin
        self._health = health
        self._platform = platform_tenant

    def _writer(self, action: str) -> None:
        require_platform_admin(self._platform, action)

    async def ListProviders(self, request: pb.ListProvidersRequest, context: grpc.aio.ServicerContext) -> pb.ListProvidersResponse:  # noqa: N802
        return pb.ListProvidersResponse(providers=[encode_provider(v) for v in await self._admin.list_providers()])

    async def GetProvider(self, request: pb.GetProviderRequest, context: grpc.aio.ServicerContext) -> pb.GetProviderResponse:  # noqa: N802
        return pb.GetProviderResponse(provider=encode_provider(await self._admin.get_provider(request.name)))

    async def PutProvider(self, request: pb.PutProviderRequest, context: grpc.aio.ServicerContext) -> pb.PutProviderResponse:  # noqa: N802
        self._writer("change a provider")
        p = request.provider
        spec = ProviderSpec(p.name, _kind_in(p.kind), base_url=p.base_url or None, label=p.label, enabled=p.enabled)
        key = request.api_key if request.HasField("api_key") else None
        return pb.PutProviderResponse(provider=encode_provider(await self._admin.put_provider(spec, key)))

    async def DeleteProvider(self, request: pb.DeleteProviderRequest, context: grpc.aio.ServicerContext) -> pb.DeleteProviderResponse:  # noqa: N802
        self._writer("delete a provider")
        await self._admin.delete_provider(request.name)
        return pb.DeleteProviderResponse()

    async def ListModels(self, request: pb.ListModelsRequest, context: grpc.aio.ServicerContext) -> pb.ListModelsResponse:  # noqa: N802
        models = await self._admin.list_models(request.provider or None)
        return pb.ListModelsResponse(models=[encode_model(m) for m in models])

    async def PutModel(self, request: pb.PutModelRequest, context: grpc.aio.ServicerContext) -> pb.PutModelResponse:  # noqa: N802
        self._writer("change a model")
        effective = None
        if request.model.price.HasField("effective_from"):
            effective = request.model.price.effective_from.ToDatetime(tzinfo=UTC)
        stored = await self._admin.put_model(decode_model(request.model), price_effective_from=effective)
        return pb.PutModelResponse(model=encode_model(stored))

    async def DeleteModel(self, request: pb.DeleteModelRequest, context: grpc.aio.ServicerContext) -> pb.DeleteModelResponse:  # noqa: N802
        self._writer("delete a model")
        await self._admin.delete_model(request.name)
        return pb.DeleteModelResponse()

    async def ListModelPrices(self, request: pb.ListModelPricesRequest, context: grpc.aio.ServicerContext) -> pb.ListModelPricesResponse:  # noqa: N802
        return pb.ListModelPricesResponse(prices=[_point_out(p) for p in await self._admin.price_history(request.name)])

    async def DiscoverModels(self, request: pb.DiscoverModelsRequest, context: grpc.aio.ServicerContext) -> pb.DiscoverModelsResponse:  # noqa: N802
        self._writer("discover models")
        return pb.DiscoverModelsResponse(models=[encode_model(m) for m in await self._admin.discover(request.provider)])

    async def ListModelHealth(self, request: pb.ListModelHealthRequest, context: grpc.aio.ServicerContext) -> pb.ListModelHealthResponse:  # noqa: N802
        snapshot = self._health.snapshot() if self._health else []
        return pb.ListModelHealthResponse(models=[_health_out(h) for h in snapshot])


def add_provider_service(server: grpc.aio.Server, servicer: ProviderServicer) -> None:
    provider_pb2_grpc.add_ProviderServiceServicer_to_server(servicer, server)


