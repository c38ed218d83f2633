"""Composition of the dynamic provider registry for one backend replica (for ``api/bootstrap.py``).

``build_registry`` wires: the local-keyfile KMS, the provider factory, the shipped catalogue, the
live provider pool (wrapped for passive health observation), ``RegistryAdmin`` (whose local
``on_change`` reloads this replica at once), the health monitor (gauges on ``Metrics``) and the two
edges (``ProviderServicer``, the ``/admin`` router). ``run`` keeps the replica current: it listens
for ``RegistryChanged`` on JetStream and probes providers every ``probe_interval`` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from pathlib import Path

from litestar import Router

from adapters.catalog import ShippedCatalogue
from adapters.providers.factory import ProviderClientFactory
from adapters.secrets import LocalKeyfileKms
from adapters.telemetry.metrics import Metrics
from api.grpc.provider import ProviderServicer
from api.rest.admin import create_admin_router
from application.catalog import RegistryCatalog
from application.health import HealthMonitor, ObservedProviders, ProbeProviders
from application.registry import (
    Catalogue,
    Kms,
    LiveProviderPool,
    ProviderFactory,
    RegistryAdmin,
    RegistryUnitOfWorkFactory,
    ReloadRegistry,
    SeedRegistry,
)
from domain.ports import Clock, IdGenerator

__all__ = ["RegistryModule", "build_registry"]


@dataclass
class RegistryModule:
    kms: Kms
    pool: LiveProviderPool
    providers: ObservedProviders  # what StreamChat should use
    admin: RegistryAdmin
    reload: ReloadRegistry
    health: HealthMonitor
    probe: ProbeProviders
    servicer: ProviderServicer
    router: Router
    seed: SeedRegistry
    tenant_id: str

    async def run(self, stop: asyncio.Event, *, bus_js: object | None = None, stream: str | None = None,
                  probe_interval: float = 60.0, ready: asyncio.Event | None = None) -> None:
        """Reload once, then follow changes (when given a JetStream context) and probe, until ``stop``."""
        await self.reload()
        async with asyncio.TaskGroup() as group:
            if bus_js is not None:
                from adapters.nats.registry_listener import listen_registry_changes

                group.create_task(listen_registry_changes(
                    bus_js, tenant_id=self.tenant_id, on_change=self.reload.on_event, stop=stop,  # type: ignore[arg-type]
                    stream=stream, ready=ready,
                ))
            elif ready is not None:
                ready.set()
            group.create_task(self._probe_loop(stop, probe_interval))

    async def _probe_loop(self, stop: asyncio.Event, interval: float) -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            if stop.is_set():
                return
            try:
                await self.probe()
            except Exception:  # noqa: BLE001 - a failed round is just skipped
                pass

    async def aclose(self) -> None:
        await self.pool.aclose()


def build_registry(
    *,
    uow: RegistryUnitOfWorkFactory,
    catalog: RegistryCatalog,
    clock: Clock,
    ids: IdGenerator,
    tenant_id: str,
    data_dir: str | Path,
    metrics: Metrics | None = None,
    kms: Kms | None = None,
    factory: ProviderFactory | None = None,
    catalogue: Catalogue | None = None,
    replica: str = "",
    connect_timeout: float | None = None,
) -> RegistryModule:
    """``connect_timeout``: seconds a provider client may take to connect (the routing settings'
    ``timeouts.connect_s``), for the default factory."""
    kms = kms or LocalKeyfileKms.in_data_dir(data_dir)
    factory = factory or ProviderClientFactory(connect_timeout=connect_timeout)
    catalogue = catalogue or ShippedCatalogue()
    pool = LiveProviderPool(uow, kms, factory)
    reload = ReloadRegistry(catalog, pool)
    health = HealthMonitor(uow=uow, clock=clock, ids=ids, tenant_id=tenant_id, sink=metrics, replica=replica)  # type: ignore[arg-type]
    admin = RegistryAdmin(
        uow=uow, kms=kms, clock=clock, ids=ids, tenant_id=tenant_id, factory=factory, catalogue=catalogue,
        on_change=reload,
    )
    return RegistryModule(
        kms=kms, pool=pool, providers=ObservedProviders(pool, health, clock), admin=admin, reload=reload,
        health=health, probe=ProbeProviders(uow=uow, kms=kms, factory=factory, monitor=health, clock=clock),
        servicer=ProviderServicer(admin=admin, health=health, platform_tenant=tenant_id),
        router=create_admin_router(admin, health, platform_tenant=tenant_id),
        seed=SeedRegistry(uow, kms, clock), tenant_id=tenant_id,
    )
