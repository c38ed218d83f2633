"""Active health probes through the real provider factory against the real simulator: a provider
whose probes fail turns unhealthy, the change is an event (outbox), and the state shows on the
admin API and in ``GET /v1/models`` (``lumina.health``) read by the unmodified OpenAI SDK.

Model names are unique in the catalogue (no alternative providers for one name), so routing does
not fail over; clients and operators see each model's health instead (docs/providers.md)."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest
from litestar import Litestar
from litestar.di import Provide

from adapters.providers.factory import ProviderClientFactory
from adapters.secrets.local import LocalKeyfileKms
from api.rest.admin import create_admin_router
from api.rest.openai_compat import OpenAIController
from api.rest.problems import EXCEPTION_HANDLERS
from application.catalog import RegistryCatalog
from application.health import HealthMonitor, ProbeProviders
from application.registry import RegistryAdmin, SeedRegistry
from domain.cost import Price
from domain.events import ModelHealthChanged
from domain.health import HealthState
from domain.registry import ModelRoute, ProviderKind, ProviderSpec
from tests.unit.chat_fakes import FixedClock, SequentialIds
from tests.unit.fakes import FakeUnitOfWorkFactory, fake_decode
from tools.provider_sim.testing import async_running_simulator

pytestmark = pytest.mark.timeout(60)


async def test_failing_probes_make_a_provider_unhealthy_visibly(tmp_path: Path) -> None:
    uow = FakeUnitOfWorkFactory()
    kms = LocalKeyfileKms(tmp_path / "kek.key")
    clock, ids = FixedClock(), SequentialIds("ev")
    async with async_running_simulator() as sim_url:
        up = ProviderSpec("up", ProviderKind.OPENAI_COMPATIBLE, base_url=sim_url)
        down = ProviderSpec("down", ProviderKind.OPENAI_COMPATIBLE, base_url="http://127.0.0.1:9/v1")  # nothing listens
        await SeedRegistry(uow, kms)(
            [up, down],
            [ModelRoute("fast", "up", "sim-small", Price(1, 2), is_default=True), ModelRoute("gone", "down", "sim-small")],
            {"up": "sk-up-0123456789abcdef"},
        )
        monitor = HealthMonitor(uow=uow, clock=clock, ids=ids, tenant_id="acme", replica="r1")
        probe = ProbeProviders(uow=uow, kms=kms, factory=ProviderClientFactory(list_timeout=2), monitor=monitor, clock=clock)
        first = {(h.provider, h.model): h.state for h in await probe()}
        assert first == {("up", "sim-small"): HealthState.HEALTHY, ("down", "sim-small"): HealthState.HEALTHY}
        for _ in range(2):  # three consecutive failures make a model unhealthy
            await probe()
        assert monitor.state("down", "sim-small") is HealthState.UNHEALTHY
        assert monitor.state("up", "sim-small") is HealthState.HEALTHY

        changes = [fake_decode(m.payload) for m in uow.db.unsent()]
        [change] = [e for e in changes if isinstance(e, ModelHealthChanged)]  # one event per state change
        assert (change.provider, change.model, change.previous, change.current, change.replica) == (
            "down", "sim-small", "healthy", "unhealthy", "r1")

        admin = RegistryAdmin(uow=uow, kms=kms, clock=clock, ids=ids, tenant_id="acme")
        app = Litestar(
            route_handlers=[OpenAIController, create_admin_router(admin, monitor, platform_tenant="acme")],
            dependencies={
                # the chat handlers' dependencies are not used here
                **{name: Provide(lambda: None, sync_to_thread=False)
                   for name in ("stream_chat", "complete_chat", "embed_texts")},
                "catalog": Provide(lambda: RegistryCatalog(uow, clock), sync_to_thread=False),
                "model_health": Provide(lambda: monitor, sync_to_thread=False),
            },
            exception_handlers=EXCEPTION_HANDLERS,
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://lumina") as http:
            health = {(h["provider"], h["state"]) for h in (await http.get("/admin/health")).json()}
            assert health == {("up", "healthy"), ("down", "unhealthy")}
            client = openai.AsyncOpenAI(api_key="any", base_url="http://lumina/v1", http_client=http, max_retries=0)
            listed = {m.id: (m.model_extra or {}).get("lumina") async for m in client.models.list()}
        assert listed == {"fast": {"health": "healthy"}, "gone": {"health": "unhealthy"}}
