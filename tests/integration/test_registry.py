"""The dynamic registry end to end on real Postgres, NATS and the provider simulator: REST admin and
gRPC ProviderService over in-process replicas; a provider added through the API serves the next
chat request without restart; a change on one replica reaches another through JetStream."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
from lumina.v1 import provider_pb2 as ppb
from lumina.v1 import provider_pb2_grpc

from adapters.nats.bus import JetStreamBus
from adapters.postgres.engine import create_engine
from adapters.postgres.migrate import upgrade_async
from adapters.postgres.uow import SqlAlchemyUnitOfWorkFactory
from adapters.system import SystemClock, TimeOrderedIds
from adapters.telemetry.metrics import Metrics
from api.grpc.provider import add_provider_service
from api.grpc.server import build_grpc_server
from api.grpc.chat import ChatServicer
from api.registry import RegistryModule, build_registry
from api.rest.app import create_rest_app
from application.catalog import RegistryCatalog
from application.chat import CompleteChat, StreamChat
from application.outbox import RelayOutbox
from domain.chat import ChatMessage, ChatRequest, Role, TextDelta
from tests.harness.jetstream import JetStreamNames
from tests.unit.auth_fakes import METADATA, authenticator, bearer, principal
from tools.provider_sim.testing import async_running_simulator


@dataclass
class Replica:
    module: RegistryModule
    stream: StreamChat
    http: httpx.AsyncClient
    grpc_port: int
    metrics: Metrics


@contextlib.asynccontextmanager
async def replica(database_url: str, data_dir: Path, tenant: str, *, bus: JetStreamBus | None = None) -> AsyncIterator[Replica]:
    engine = create_engine(database_url, pool_size=4)
    uow = SqlAlchemyUnitOfWorkFactory(engine)
    clock, ids, metrics = SystemClock(), TimeOrderedIds(), Metrics()
    catalog = RegistryCatalog(uow, clock, ttl=3600)  # only invalidation makes changes visible
    module = build_registry(uow=uow, catalog=catalog, clock=clock, ids=ids, tenant_id=tenant, data_dir=data_dir, metrics=metrics)
    stream = StreamChat(catalog=catalog, providers=module.providers, uow=uow, clock=clock, ids=ids)
    app = create_rest_app(stream_chat=stream, complete_chat=CompleteChat(stream), metrics=metrics,
                          readiness=_ready, authenticator=authenticator(tenant))
    app.register(module.router)
    chat = ChatServicer(stream=stream, complete=CompleteChat(stream))
    server, _, port = build_grpc_server("127.0.0.1:0", chat=chat, metrics=metrics, authenticator=authenticator(tenant))
    add_provider_service(server, module.servicer)
    await server.start()
    stop, ready = asyncio.Event(), asyncio.Event()
    runner = asyncio.create_task(module.run(stop, bus_js=bus.js if bus else None, stream=bus.stream if bus else None, ready=ready))
    await asyncio.wait_for(ready.wait(), 10)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://backend",
                                     headers=bearer()) as http:
            yield Replica(module, stream, http, port, metrics)
    finally:
        stop.set()
        await asyncio.wait_for(runner, 10)
        await server.stop(grace=1)
        await module.aclose()
        await engine.dispose()


async def _ready() -> dict[str, str]:
    return {}


async def _chat(stream: StreamChat, tenant: str, model: str) -> str:
    chunks = await stream(principal(tenant), ChatRequest(messages=(ChatMessage(role=Role.USER, content="hello"),), model=model))
    return "".join([c.text async for c in chunks if isinstance(c, TextDelta)])  # type: ignore[attr-defined]


async def test_provider_added_through_rest_serves_the_next_chat_and_is_visible_over_grpc(
    empty_database_url: str, tmp_path: Path
) -> None:
    await upgrade_async(empty_database_url)
    async with async_running_simulator() as sim_url, replica(empty_database_url, tmp_path, "acme") as r:
        r1 = await r.http.put("/admin/providers/local", json={"kind": "openai_compatible", "base_url": sim_url,
                                                               "label": "simulated", "api_key": "sk-local-0123456789abcdef"})
        assert r1.status_code == 200, r1.text
        body = r1.json()
        assert body["api_key_set"] is True and body["api_key_hint"] == "sk-…cdef" and "api_key" not in body
        r2 = await r.http.put("/admin/models/fast", json={"provider": "local", "upstream_model": "sim-small",
                                                          "price": {"input_per_mtok": 1.0, "output_per_mtok": 2.0},
                                                          "capabilities": {"context_window": 32000, "max_output_tokens": 4096, "tools": True}})
        assert r2.status_code == 200, r2.text
        assert r2.json()["capabilities"]["tools"] is True

        text = await _chat(r.stream, "acme", "fast")  # no restart
        assert text

        # a second price period; the history keeps both
        r3 = await r.http.put("/admin/models/fast", json={"provider": "local", "upstream_model": "sim-small",
                                                          "price": {"input_per_mtok": 5.0, "output_per_mtok": 6.0}})
        assert r3.json()["price"]["input_per_mtok"] == 5.0
        prices = (await r.http.get("/admin/models/fast/prices")).json()
        assert [p["input_per_mtok"] for p in prices] == [1.0, 5.0]

        bad = await r.http.put("/admin/models/x", json={"provider": "nope", "upstream_model": "y"})
        assert bad.status_code == 404 and bad.headers["content-type"].startswith("application/problem+json")
        invalid = await r.http.put("/admin/providers/p2", json={"kind": "openai_compatible"})
        assert invalid.status_code == 422 and invalid.json()["code"] == "invalid_request"

        async with grpc.aio.insecure_channel(f"127.0.0.1:{r.grpc_port}") as channel:
            stub = provider_pb2_grpc.ProviderServiceStub(channel)
            listed = await stub.ListProviders(ppb.ListProvidersRequest(), metadata=METADATA)
            assert [(p.name, p.kind, p.api_key_set) for p in listed.providers] == [("local", ppb.PROVIDER_KIND_OPENAI_COMPATIBLE, True)]
            assert "0123456789" not in str(listed)
            discovered = await stub.DiscoverModels(ppb.DiscoverModelsRequest(provider="local"), metadata=METADATA)
            assert {m.upstream_model for m in discovered.models} >= {"sim-small", "sim-large"}
            assert all(not m.priced and m.source == "discovered" for m in discovered.models)
            health = await stub.ListModelHealth(ppb.ListModelHealthRequest(), metadata=METADATA)
            assert [(h.model, h.state) for h in health.models] == [("sim-small", ppb.HEALTH_STATE_HEALTHY)]
            await stub.DeleteProvider(ppb.DeleteProviderRequest(name="local"), metadata=METADATA)
            try:
                await stub.GetProvider(ppb.GetProviderRequest(name="local"), metadata=METADATA)
                raise AssertionError("deleted provider still found")
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.NOT_FOUND
        metrics = r.metrics.render().decode()
        assert 'lumina_model_health_state{model="sim-small",provider="local"} 0.0' in metrics
        assert (await r.http.get("/admin/models")).json() == []


async def test_a_change_on_one_replica_reaches_another_through_jetstream(
    empty_database_url: str, tmp_path: Path, nats_url: str, js_names: JetStreamNames
) -> None:
    await upgrade_async(empty_database_url)
    tenant = js_names.tenant
    bus_a = await JetStreamBus.connect(nats_url, stream=js_names.stream, subjects=js_names.subjects)
    bus_b = await JetStreamBus.connect(nats_url, stream=js_names.stream, subjects=js_names.subjects)
    engine = create_engine(empty_database_url, pool_size=2)
    relay = RelayOutbox(SqlAlchemyUnitOfWorkFactory(engine), bus_a)
    try:
        async with (
            async_running_simulator() as sim_url,
            replica(empty_database_url, tmp_path, tenant, bus=bus_a) as a,
            replica(empty_database_url, tmp_path, tenant, bus=bus_b) as b,
        ):
            before = b.module.reload.reloads
            await a.http.put("/admin/providers/local", json={"kind": "openai_compatible", "base_url": sim_url, "api_key": "k"})
            await a.http.put("/admin/models/m1", json={"provider": "local", "upstream_model": "sim-small"})
            assert await relay.run_once() == 2
            for _ in range(100):
                if b.module.reload.reloads >= before + 2:
                    break
                await asyncio.sleep(0.05)
            assert b.module.reload.reloads >= before + 2
            assert await _chat(b.stream, tenant, "m1")  # replica B serves it, no restart

            await a.http.delete("/admin/models/m1")
            await relay.run_once()
            for _ in range(100):
                if b.module.reload.reloads >= before + 3:
                    break
                await asyncio.sleep(0.05)
            try:
                await _chat(b.stream, tenant, "m1")
                raise AssertionError("removed model still served")
            except Exception as exc:  # noqa: BLE001
                assert type(exc).__name__ == "NotFound"
    finally:
        await bus_a.close()
        await bus_b.close()
        await engine.dispose()
