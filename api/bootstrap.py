"""The composition root: the one place that reads settings and wires adapters to ports.

``build_backend`` and ``build_worker`` build everything from settings; every keyword argument is an
override, so tests swap an implementation (a fake unit of work, a scripted provider) through here
instead of patching module globals. The returned objects own the lifetimes of what they built:
``await backend.start()`` / ``await backend.stop()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import structlog
import uvicorn
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres.engine import create_engine
from adapters.postgres.settlement import PostgresSettlements
from adapters.postgres.uow import SqlAlchemyUnitOfWorkFactory
from adapters.system import SystemClock, TimeOrderedIds
from adapters.telemetry.metrics import MeteredSettlements, Metrics
from api.auth import Authenticator
from api.grpc.chat import ChatServicer
from api.grpc.server import build_grpc_server, mark_serving
from api.rest.app import create_rest_app
from api.rest.coalescing import CoalescingHttpToolsProtocol
from api.settings import Settings
from application.catalog import RegistryCatalog
from application.chat import CompleteChat, StreamChat
from application.embeddings import EmbedTexts
from application.ports import Embedder, UnitOfWorkFactory
from application.registry import SeedRegistry
from application.routing import Routing
from application.settlement import UnitOfWorkSettlements
from domain.cost import Price
from domain.errors import NotFound
from domain.ports import Clock, IdGenerator, ProviderClient
from domain.registry import (
    Modality,
    ModelCapabilities,
    ModelRoute,
    ProviderKind,
    ProviderSpec,
)

__all__ = ["Backend", "ProviderPool", "WorkerProcess", "bind_socket", "build_backend", "build_worker", "default_registry"]

log = structlog.get_logger("lumina.bootstrap")

SIMULATOR = "simulator"
_VENDOR_LABELS = {"openai": "OpenAI", "anthropic": "Anthropic", "gemini": "Google Gemini", "deepseek": "DeepSeek", "xai": "xAI"}
# the cheap, capable model each vendor's key makes the default when it is the first one set
_DEFAULT_MODELS = {
    "openai": "gpt-4o-mini", "anthropic": "claude-haiku-4-5", "gemini": "gemini-2.5-flash",
    "deepseek": "deepseek-chat", "xai": "grok-3-mini",
}


class ProviderPool:
    """Provider clients by provider name; one SDK client (and connection pool) per provider."""

    def __init__(self) -> None:
        self._clients: dict[str, ProviderClient] = {}

    def add(self, client: ProviderClient) -> None:
        self._clients[client.name] = client

    def get(self, provider: str) -> ProviderClient:
        try:
            return self._clients[provider]
        except KeyError:
            raise NotFound("provider", provider) from None

    async def aclose(self) -> None:
        for client in self._clients.values():
            await client.aclose()
        self._clients.clear()


def default_registry(settings: Settings) -> tuple[list[ProviderSpec], list[ModelRoute], dict[str, str]]:
    """Providers to register at start: the real vendors whose keys are set; otherwise the provider
    simulator, plainly labelled "simulated". Returns specs, models and each provider's API key."""
    from adapters.catalog import ShippedCatalogue
    from domain.registry import merge_catalogue

    providers: list[ProviderSpec] = []
    models: list[ModelRoute] = []
    keys: dict[str, str] = {}
    catalogue = ShippedCatalogue().entries()
    for kind, key in settings.vendor_keys.items():
        base_url = settings.openai_base_url if kind == "openai" else None
        providers.append(ProviderSpec(kind, ProviderKind(kind), base_url=base_url, label=_VENDOR_LABELS[kind]))
        keys[kind] = key
        for route in merge_catalogue(kind, ProviderKind(kind), catalogue, None):
            if route.name not in {m.name for m in models}:  # the first vendor with a model name serves it
                route.is_default = len(providers) == 1 and route.name == _DEFAULT_MODELS[kind]
                models.append(route)
    if models and not any(m.is_default for m in models):
        models[0].is_default = True
    simulated = not providers
    providers.append(
        ProviderSpec(
            SIMULATOR,
            ProviderKind.OPENAI_COMPATIBLE,
            base_url=f"http://{settings.host}:{settings.sim_port}/v1",
            label="simulated",
            enabled=simulated,
        )
    )
    keys[SIMULATOR] = "sim-key"
    models += [
        ModelRoute("sim-small", SIMULATOR, "sim-small", Price(0.10, 0.40, 0.05), is_default=simulated,
                   capabilities=_sim_capabilities(8_192)),
        ModelRoute("sim-large", SIMULATOR, "sim-large", Price(1.00, 4.00, 0.50), capabilities=_sim_capabilities(131_072)),
    ]
    return providers, models, keys


def _sim_capabilities(window: int) -> ModelCapabilities:
    """What the simulator's chat models do (tools, JSON output, images in), so routing admits them."""
    return ModelCapabilities(
        context_window=window, max_output_tokens=4_096, input_modalities=(Modality.TEXT, Modality.IMAGE),
        tools=True, parallel_tool_calls=True, json_schema=True,
    )


def bind_socket(host: str, port: int, what: str, *, reuse_port: bool = False) -> socket.socket:
    """Bind a listening TCP socket, or fail with one line naming the port. ``reuse_port``: other
    processes of this user that also set SO_REUSEPORT may bind the same port (backend processes)."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(f"{what} port {port} on {host} is busy ({exc.strerror})") from None
    return sock


class _QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process owner decides when to stop."""

    def capture_signals(self) -> contextlib.AbstractContextManager[None]:  # type: ignore[override]
        return contextlib.nullcontext()


@dataclass
class Backend:
    settings: Settings
    engine: AsyncEngine | None
    uow: UnitOfWorkFactory
    providers: Any  # what the use cases call: the registry's live pool, or the clients given (a ProviderPool)
    catalog: RegistryCatalog
    stream_chat: StreamChat
    complete_chat: CompleteChat
    metrics: Metrics
    seed: tuple[list[ProviderSpec], list[ModelRoute]] | None
    registry: Any = None  # api.registry.RegistryModule on the production path
    authenticator: Authenticator | None = None  # resolves every caller's principal (api/auth.py)
    identity: Any = None  # api.identity.IdentityModule on the production path (AuthService, first start)
    keys: dict[str, str] = field(default_factory=dict)
    settlements: PostgresSettlements | None = None  # group commit of usage + events (None: per-request UoW)
    memory_embedder: Any = None  # long-term memory's embedder (None: memory off); the module opens in start()
    memory: Any = None  # api.memory.MemoryModule once started
    memory_hook: Any = None  # application.memory.chat_hook.MemoryChatHook in StreamChat's hooks; attached in start()
    budgets: Any = None  # api.budgets.BudgetModule: guard, limiter, Budget/UsageService (None: no Redis, no budgets)
    clock: Any = None
    ids: Any = None
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _bus: Any = None
    _tasks: list[asyncio.Task[Any]] = field(default_factory=list)
    _grpc: Any = None
    _health: Any = None
    _http: _QuietServer | None = None
    grpc_port: int = 0
    http_port: int = 0

    async def readiness(self) -> dict[str, str]:
        checks: dict[str, str] = {}
        if self.engine is not None:
            try:
                async with asyncio.timeout(2):
                    async with self.engine.connect() as conn:
                        await conn.execute(text("SELECT 1"))
                checks["database"] = "ok"
            except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
                checks["database"] = f"unavailable: {type(exc).__name__}"
        if self.budgets is not None:  # budgets fail closed without Redis: chat would answer 503
            try:
                async with asyncio.timeout(2):
                    await self.budgets.ping()
                checks["redis"] = "ok"
            except Exception as exc:  # noqa: BLE001 - readiness reports, never raises
                checks["redis"] = f"unavailable: {type(exc).__name__}"
        return checks

    async def start(self, *, grpc_port: int | None = None, http_port: int | None = None) -> None:
        """Seed the registry, then listen. Ports: settings unless given (0 = any free port)."""
        s = self.settings
        if self.seed is not None:
            if self.registry is not None:
                await self.registry.seed(*self.seed, self.keys)  # keys stored encrypted
            else:
                await SeedRegistry(self.uow)(*self.seed)
        if self.memory_embedder is not None:
            await self._open_memory()
        grpc_port = s.grpc_port if grpc_port is None else grpc_port
        http_port = s.http_port if http_port is None else http_port
        shared = s.backend_processes > 1  # sibling backend processes listen on the same ports
        http_sock = bind_socket(s.host, http_port, "HTTP", reuse_port=shared)
        self.http_port = http_sock.getsockname()[1]
        chat = ChatServicer(stream=self.stream_chat, complete=self.complete_chat)
        assert self.authenticator is not None, "build_backend always sets an authenticator"
        auth_servicer = None
        if self.identity is not None:
            from api.grpc.auth import AuthServicer

            auth_servicer = AuthServicer(self.identity.operations)
        try:
            self._grpc, self._health, self.grpc_port = build_grpc_server(
                f"{s.host}:{grpc_port}", chat=chat, metrics=self.metrics, authenticator=self.authenticator,
                auth=auth_servicer, reuse_port=shared,
            )
        except (OSError, RuntimeError):
            http_sock.close()
            raise OSError(f"gRPC port {grpc_port} on {s.host} is busy") from None
        if self.registry is not None:
            from api.grpc.provider import add_provider_service

            add_provider_service(self._grpc, self.registry.servicer)
        if self.memory is not None:
            from api.grpc.memory import add_memory_service

            add_memory_service(self._grpc, self.memory.servicer())
        if self.budgets is not None:
            from api.grpc.budget import add_budget_services

            add_budget_services(self._grpc, *self.budgets.servicers())
            await self.budgets.start()  # settled spend an earlier process left in the journal, then periodically
        await self._grpc.start()
        await mark_serving(self._health, True)
        app = create_rest_app(
            stream_chat=self.stream_chat, complete_chat=self.complete_chat, authenticator=self.authenticator,
            auth=self.identity.operations if self.identity is not None else None,
            metrics=self.metrics, readiness=self.readiness,
            catalog=self.catalog, embed_texts=EmbedTexts(self.catalog, self.providers),
            model_health=self.registry.health if self.registry is not None else None,
        )
        if self.memory is not None:
            app.register(self.memory.router())
        if self.budgets is not None:
            app.register(self.budgets.router())
        if self.registry is not None:
            from adapters.providers.transport import load_trust_store

            # provider clients are built on first use: the TLS trust store they share is loaded now,
            # off the event loop, instead of in the first request
            await asyncio.to_thread(load_trust_store)
            app.register(self.registry.router)
            ready = asyncio.Event()
            if s.nats_url:
                from adapters.nats.bus import JetStreamBus

                self._bus = await JetStreamBus.connect(s.nats_url, name="lumina-backend")
            self._tasks.append(asyncio.create_task(self.registry.run(
                self._stop, bus_js=self._bus.js if self._bus else None, stream=self._bus.stream if self._bus else None,
                ready=ready,
            ), name="registry"))
            await asyncio.wait_for(ready.wait(), 10)
        if self.memory is not None:  # writes of memories by any process, announced by the database
            self._tasks.append(asyncio.create_task(self.memory.watch_writes(self._stop), name="memory-writes"))
        if self.memory_hook is not None and self._bus is not None:  # tenant memory switches made on other replicas
            from api.memory import follow_tenant_switches

            self._tasks.append(asyncio.create_task(follow_tenant_switches(
                self.memory_hook, self._bus.js, self._stop, stream=self._bus.stream,
            ), name="memory-tenant-switches"))
        config = uvicorn.Config(app, http=CoalescingHttpToolsProtocol, loop="none", lifespan="on", log_config=None, access_log=False, proxy_headers=False,  # api.auth.TrustedProxies decides
                                timeout_graceful_shutdown=5)
        self._http = _QuietServer(config)
        self._tasks.append(asyncio.create_task(self._http.serve(sockets=[http_sock]), name="http"))
        while not self._http.started:
            if self._tasks[-1].done():
                self._tasks[-1].result()
                raise RuntimeError("HTTP server stopped during start-up")
            await asyncio.sleep(0.01)

    async def _open_memory(self) -> None:
        from adapters.provider_embedder import ProviderEmbedder
        from api.memory import open_memory

        assert self.engine is not None
        if isinstance(self.memory_embedder, ProviderEmbedder) and self.registry is not None:
            await self.registry.reload()  # the provider layer answers before the registry's own loop starts
        self.memory = await open_memory(
            self.settings, self.engine, self.memory_embedder, clock=self.clock, ids=self.ids, uow=self.uow,
            catalog=self.catalog, providers=self.providers, chat_hook=self.memory_hook,
            budgets=self.budgets.guard if self.budgets is not None else None,  # memory's provider calls are charged too
        )

    async def stop(self) -> None:
        if self._health is not None:
            await mark_serving(self._health, False)
        self._stop.set()
        if self._http is not None:
            self._http.should_exit = True
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
        for task in self._tasks:
            try:
                await asyncio.wait_for(task, 10)
            except (TimeoutError, asyncio.CancelledError):
                task.cancel()
        if self.registry is None:  # clients given to build_backend; the registry closes its own
            await self.providers.aclose()
        if self.registry is not None:
            await self.registry.aclose()
        if self._bus is not None:
            await self._bus.close()
        await self.stream_chat.drain()  # clean-up of broken streams (reservations, meters)
        await self.stream_chat.routing.aclose()
        if self.settlements is not None:
            await self.settlements.aclose()
        if self.identity is not None:
            await self.identity.aclose()
        if self.memory is not None:
            await self.memory.aclose()
        if self.budgets is not None:  # queued ledger writes first, then the engine
            await self.budgets.aclose()
        if self.engine is not None:
            await self.engine.dispose()


def build_backend(
    settings: Settings,
    *,
    uow: UnitOfWorkFactory | None = None,
    providers: Iterable[ProviderClient] | None = None,
    seed: tuple[list[ProviderSpec], list[ModelRoute]] | None | bool = True,
    clock: Clock | None = None,
    ids: IdGenerator | None = None,
    metrics: Metrics | None = None,
    authenticator: Authenticator | None = None,
    memory_embedder: Embedder | None = None,
    budgets: Any = None,
) -> Backend:
    """``authenticator``: who may call (a test faking the database passes one, e.g.
    ``api.auth.StaticAuthenticator``); by default the identity module is built on the database and
    Redis (``LUMINA_REDIS_URL``), which also serves AuthService. Long-term memory (``memory_enabled``)
    needs the database: its embedder is built here from settings (``memory_embedder`` overrides it),
    so a missing model fails before anything listens. Budgets and rate limits (``backend.budgets``:
    the guard and limiter for the chat path, BudgetService and UsageService) are built on the
    database and ``LUMINA_REDIS_URL``; ``budgets`` overrides them; without Redis they are off."""
    clock = clock or SystemClock()
    ids = ids or TimeOrderedIds()
    metrics = metrics or Metrics()
    engine = None
    settlements = None
    if uow is None:
        if not settings.database_url:
            raise ValueError("LUMINA_DATABASE_URL is not set (`lumina up` sets it for the embedded database)")
        engine = create_engine(settings.database_url, pool_size=settings.db_pool_size)
        uow = SqlAlchemyUnitOfWorkFactory(engine)
        settlements = PostgresSettlements(engine, synchronous_commit=settings.usage_commit == "durable")
    pool = ProviderPool()
    specs, models, keys = default_registry(settings)
    chosen_seed = (specs, models) if seed is True else (seed or None)
    catalog = RegistryCatalog(uow, clock, default_model=settings.default_model)
    registry = None
    if providers is None:
        # production: provider clients are built from the registry (keys decrypted on demand) and
        # rebuilt when it changes, on this replica or another (RegistryChanged on JetStream)
        from api.registry import build_registry

        registry = build_registry(
            uow=uow, catalog=catalog, clock=clock, ids=ids, tenant_id=settings.tenant_id,  # type: ignore[arg-type]
            data_dir=settings.data_path, metrics=metrics, connect_timeout=settings.routing.timeouts.connect_s,
        )
        source: Any = registry.providers
    else:
        for client in providers:
            pool.add(client)
        source = pool
    identity = None
    if authenticator is None:
        if engine is None:
            raise ValueError("pass authenticator= with a unit-of-work override: there is no identity store to ask")
        from api.identity import build_identity

        identity = build_identity(settings, engine, clock=clock, ids=ids)
        authenticator = identity.authenticator
    if budgets is None and engine is not None and settings.redis_url:
        from api.budgets import build_budgets

        budgets = build_budgets(settings, engine, clock=clock, ids=ids)
    elif budgets is None:
        log.info("budgets and rate limits off: no Redis (LUMINA_REDIS_URL) or no database; chat runs without them")
    embedder = memory_hook = None
    if settings.memory_enabled and engine is not None:
        from api.memory import memory_chat_hook
        from api.memory import memory_embedder as build_memory_embedder

        embedder = memory_embedder or build_memory_embedder(settings, EmbedTexts(catalog, source))
        memory_hook = memory_chat_hook(settings, engine, clock=clock, ids=ids)  # recall + remember in the chat path
    metered = MeteredSettlements(settlements or UnitOfWorkSettlements(uow), metrics)
    routing = _build_routing(settings, catalog, clock, budgets)
    if registry is not None:
        registry.health.subscribe(routing.update_health)  # health and latency EWMAs feed the router
    stream = StreamChat(
        catalog=catalog, providers=source, uow=uow, clock=clock, ids=ids, settlements=metered, routing=routing,
        budgets=budgets.guard if budgets is not None else None, limiter=budgets.limiter if budgets is not None else None,
        definitions=budgets.ctx.directory if budgets is not None else None,
        hooks=[memory_hook] if memory_hook is not None else (),
    )
    return Backend(
        settings=settings, engine=engine, uow=uow, providers=source, catalog=catalog, stream_chat=stream,
        complete_chat=CompleteChat(stream), metrics=metrics, seed=chosen_seed, registry=registry,  # type: ignore[arg-type]
        keys=keys, settlements=settlements, authenticator=authenticator, identity=identity,
        memory_embedder=embedder, memory_hook=memory_hook, clock=clock, ids=ids, budgets=budgets,
    )


def _build_routing(settings: Settings, catalog: RegistryCatalog, clock: Clock, budgets: Any) -> Routing:
    """Routing for the chat path: ``settings.routing``, tiktoken counts, and circuit breakers
    shared through Redis when ``LUMINA_REDIS_URL`` is set (the budget module's connection pool),
    else kept in this process."""
    from adapters.tokens import TiktokenCounter

    store = on_close = None
    if settings.redis_url:
        from adapters.redis.breaker import RedisBreakerStore

        redis = getattr(budgets, "redis", None)
        if redis is None:  # no budget module to share a pool with: a connection of its own
            from redis.asyncio import Redis

            redis = Redis.from_url(settings.redis_url)
            on_close = redis.aclose
        store = RedisBreakerStore(redis)
    counter = TiktokenCounter()
    for model in ("gpt-4o", ""):  # load both encodings now, not in the first request (~0.3 s each)
        counter.count_text("warm-up", model)
    return Routing(
        catalog, clock, settings=settings.routing, breakers=store, counter=counter, default_model=settings.default_model,
        on_close=on_close,
    )


@dataclass
class WorkerProcess:
    """The worker's dependencies, built from settings; ``close`` releases them."""

    worker: Any
    bus: Any
    engine: AsyncEngine | None
    memory: Any = None  # api.memory.MemoryModule (None: memory off)

    async def run(self, stop: asyncio.Event) -> None:
        await self.worker.run(stop)

    async def close(self) -> None:
        await self.bus.close()
        if self.memory is not None:
            await self.memory.aclose()
        if self.engine is not None:
            await self.engine.dispose()


async def build_worker(
    settings: Settings, *, uow: UnitOfWorkFactory | None = None, bus: Any | None = None
) -> WorkerProcess:
    from adapters.nats.bus import JetStreamBus
    from api.worker import Worker

    engine = None
    if uow is None:
        if not settings.database_url:
            raise ValueError("LUMINA_DATABASE_URL is not set")
        engine = create_engine(settings.database_url, pool_size=4)
        uow = SqlAlchemyUnitOfWorkFactory(engine)
    memory = None
    if settings.memory_enabled:
        if engine is None:  # memory lives in the database
            if not settings.database_url:
                raise ValueError("LUMINA_DATABASE_URL is not set (memory consolidation needs it)")
            engine = create_engine(settings.database_url, pool_size=4)
        from api.memory import open_worker_memory

        # first: a missing model fails before anything connects
        memory = await open_worker_memory(settings, engine, uow, clock=SystemClock(), ids=TimeOrderedIds())
    if bus is None:
        if not settings.nats_url:
            raise ValueError("LUMINA_NATS_URL is not set")
        try:
            bus = await JetStreamBus.connect(settings.nats_url)
        except BaseException:
            if memory is not None:
                await memory.aclose()
            raise
    if settings.smtp_host and engine is None:  # the mail outbox lives in the database
        if not settings.database_url:
            raise ValueError("LUMINA_DATABASE_URL is not set (mail delivery reads the mail outbox)")
        engine = create_engine(settings.database_url, pool_size=2)
    worker = Worker(uow_factory=uow, bus=bus, poll_interval=settings.outbox_poll_interval,
                    deliver_mail=_mail_delivery(settings, engine), memory=memory,
                    memory_sweep_interval=settings.memory_consolidation_interval)
    return WorkerProcess(worker=worker, bus=bus, engine=engine, memory=memory)


@dataclass(frozen=True)
class _MailRelayContext:
    uow: Any  # SqlIdentityUnitOfWorkFactory
    clock: Clock


def _mail_delivery(settings: Settings, engine: AsyncEngine | None) -> Any:
    """The worker's mail relay (identity's mail outbox to SMTP), or None when LUMINA_SMTP_HOST is unset."""
    if not settings.smtp_host or engine is None:
        log.info("mail delivery off: LUMINA_SMTP_HOST is not set; mail (password reset links) stays in the outbox")
        return None
    from adapters.identity.smtp import SmtpMailSender
    from adapters.postgres.identity_uow import SqlIdentityUnitOfWorkFactory
    from adapters.secrets import LocalKeyfileKms
    from application.identity import DeliverMail

    sender = SmtpMailSender(
        settings.smtp_host, settings.smtp_port, settings.smtp_from, starttls=settings.smtp_starttls,
        username=settings.smtp_username, password=settings.smtp_password or "",
    )
    uow = SqlIdentityUnitOfWorkFactory(engine, kms=LocalKeyfileKms.in_data_dir(settings.data_path))
    log.info("mail delivery on", smtp=f"{settings.smtp_host}:{settings.smtp_port}", sender=settings.smtp_from)
    return DeliverMail(_MailRelayContext(uow=uow, clock=SystemClock()), sender)
