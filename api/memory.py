"""Composition of long-term memory (for ``api/bootstrap.py``): the embedder, the vector store, the
Postgres store, the use cases, and their edges (``MemoryServicer``, the ``/v1/memory`` router) or
the worker's consumers (``RememberTurn``, ``ConsolidateMemory``, ``SweepMemory``).

Two steps, so that a missing model fails at once with one line while anything that needs the
provider registry or the database waits for start-up:

1. ``memory_embedder(settings, embed_texts)`` (synchronous): the local all-MiniLM-L6-v2 ONNX model
   (``memory_embedder = "local"``, fp32, the documented default; ``"local-int8"`` the quantised
   one), or ``"provider:<model>"``: a model of the registry through ``EmbedTexts``. Raises
   ``MemoryModelMissing`` (an ``OSError``: the CLI prints its one line) when the model files
   were never built.
2. ``await open_memory(...)``: learns a provider model's vector size when not configured,
   creates the pgvector collection when missing (``memory`` for the local model, 384
   dimensions; ``memory_<model>_<dims>`` for a provider's), puts the Redis read cache in front
   when ``redis_url`` is set, and builds everything else.

The chat path's hook (``memory_chat_hook``: recall before routing, the turn's event at settlement)
is built with the chat use cases, before the store opens; ``open_memory(chat_hook=...)`` attaches
the search and the store to it (``MemoryModule.chat_hook``).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from dataclasses import dataclass
from typing import Any

import structlog
from litestar import Router
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.onnx import (
    CachedEmbedder,
    MemoryEmbeddingCache,
    ModelFilesMissing,
    OnnxEmbedder,
)
from adapters.onnx.embedder import DEFAULT_MODEL_DIR
from adapters.postgres.engine import create_engine
from adapters.postgres.memory_store import PostgresMemoryStore
from adapters.postgres.memory_watch import MemoryWriteWatch
from adapters.postgres.tenant_policies import (
    PostgresTenantMemory,
    PostgresTenantPolicies,
)
from adapters.provider_embedder import ProviderEmbedder
from adapters.vectorstores.pgvector import PgVectorStore
from api.grpc.memory import MemoryServicer
from api.rest.memory import create_memory_router
from api.settings import Settings
from application.embeddings import EmbedTexts
from application.memory import IngestTurns, SearchMemory
from application.memory.chat_hook import CachedTenantPolicies, MemoryChatHook
from application.memory.consolidate import (
    ConsolidateMemory,
    ExtractiveSummarizer,
    ProviderSummarizer,
    RememberTurn,
    Summarizer,
    SweepMemory,
)
from application.memory.extract import FactExtractor, ProviderFactExtractor
from application.memory.manage import (
    AddMemory,
    DeleteMemory,
    ExportMemories,
    GetMemory,
    ListTopics,
    MemoryNeighbourhood,
    MemoryUseCases,
    SearchMemories,
    UpdateMemory,
)
from application.memory.metering import (
    MeteredEmbedTexts,
    MeteredIngest,
    MeteredSearch,
    RecordProviderUsage,
)
from application.memory.tenant_switch import (
    GetTenantMemory,
    SetTenantMemory,
    switched_tenant,
)
from application.ports import (
    Embedder,
    ModelCatalog,
    ProviderClients,
    UnitOfWorkFactory,
    VectorStore,
)
from application.settlement import UnitOfWorkSettlements
from domain.errors import DomainError
from domain.events import DomainEvent
from domain.ports import Clock, IdGenerator

__all__ = [
    "MemoryModelMissing",
    "MemoryModule",
    "MemoryUnavailable",
    "collection_for",
    "follow_tenant_switches",
    "memory_chat_hook",
    "memory_embedder",
    "open_memory",
    "open_worker_memory",
]

LOCAL_COLLECTION = "memory"


class MemoryModelMissing(ModelFilesMissing):
    """Memory is on, but the local embedding model was never built."""


class MemoryUnavailable(OSError):
    """Memory could not start (one line: what and what to do)."""


def memory_embedder(settings: Settings, embed_texts: EmbedTexts | None = None) -> Embedder:
    choice = settings.memory_embedder
    if choice.startswith("provider:"):
        if embed_texts is None:
            raise MemoryUnavailable(f"memory: {choice} needs the provider layer")
        metered = MeteredEmbedTexts(embed_texts.catalog, embed_texts.providers)  # metered once open_memory has a store
        return ProviderEmbedder(metered, choice.removeprefix("provider:"), dimensions=settings.memory_embedding_dimensions)  # type: ignore[arg-type]
    try:
        return OnnxEmbedder(settings.memory_model_dir or DEFAULT_MODEL_DIR, int8=choice == "local-int8")
    except ModelFilesMissing as exc:
        raise MemoryModelMissing(f"memory: {exc}; or set LUMINA_MEMORY_ENABLED=false") from None


def collection_for(embedder: Embedder) -> str:
    """The pgvector collection of an embedder's vectors: one per model and size."""
    if isinstance(embedder, ProviderEmbedder):
        slug = re.sub(r"[^a-z0-9]+", "_", embedder.model.removeprefix("provider:").lower()).strip("_")[:20] or "model"
        return f"memory_{slug}_{embedder.dimensions}"
    return LOCAL_COLLECTION


@dataclass
class MemoryModule:
    embedder: Embedder
    vectors: VectorStore
    store: PostgresMemoryStore
    collection: str
    ingest: IngestTurns
    search: SearchMemory
    use: MemoryUseCases
    consolidate: ConsolidateMemory
    remember: RememberTurn
    sweep: SweepMemory
    redis: Any = None
    registry: Any = None  # the worker's own provider registry (api.registry.RegistryModule), when it needs one
    budgets: Any = None  # the worker's budget module (api.budgets.BudgetModule), when provider calls are charged
    chat_hook: MemoryChatHook | None = None  # the chat path's hook, attached to this search
    search_cache: Any = None  # adapters.vectorstores.cache.CachedHybridSearch, with Redis
    watch: MemoryWriteWatch | None = None  # tells ``search`` of the database's writes of memories

    async def watch_writes(self, stop: asyncio.Event, ready: asyncio.Event | None = None) -> None:
        """Until ``stop``: the search hears of every write of memories (any process's), so a user
        it found without memories costs no query until one is written."""
        if self.watch is not None:
            await self.watch.run(stop, ready)

    def servicer(self) -> MemoryServicer:
        return MemoryServicer(self.use)

    def router(self) -> Router:
        return create_memory_router(self.use)

    async def aclose(self) -> None:
        await self.store.aclose()
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None
        if self.registry is not None:
            await self.registry.aclose()
            self.registry = None
        if self.budgets is not None:
            await self.budgets.aclose()
            self.budgets = None


async def open_memory(
    settings: Settings,
    engine: AsyncEngine,
    embedder: Embedder,
    *,
    clock: Clock,
    ids: IdGenerator,
    uow: UnitOfWorkFactory | None = None,
    catalog: ModelCatalog | None = None,
    providers: ProviderClients | None = None,
    chat_hook: MemoryChatHook | None = None,
    budgets: Any = None,
) -> MemoryModule:
    if isinstance(embedder, ProviderEmbedder) and not embedder.dimensions:
        try:
            await embedder.probe()
        except DomainError as exc:
            raise MemoryUnavailable(
                f"memory: cannot learn the vector size of {embedder.model} ({exc.message}); "
                "set LUMINA_MEMORY_EMBEDDING_DIMENSIONS or check the provider"
            ) from None
    collection = collection_for(embedder)
    pg = await PgVectorStore.open(engine, collection, embedder.dimensions)
    vectors: VectorStore = pg
    redis = None
    if settings.redis_url:
        from redis.asyncio import Redis

        from adapters.vectorstores.cache import CachedVectorStore

        redis = Redis.from_url(settings.redis_url)
        vectors = CachedVectorStore(pg, redis, namespace=collection, ttl_seconds=settings.memory_cache_seconds)
    cached = CachedEmbedder(embedder, MemoryEmbeddingCache(10_000))
    # the store also answers the whole hybrid query in one statement over the pgvector collection;
    # its cheap reads (the count a user without memories costs every chat request) use a pool of
    # their own without a pre-ping round trip per checkout: a read that meets a connection the
    # server dropped fails (memory is skipped for that request) and the connection is replaced
    slots = max(1, settings.db_pool_size // 2)
    reads = create_engine(settings.database_url, pool_size=slots, pre_ping=False) if settings.database_url else None
    store = PostgresMemoryStore(engine, search_collection=collection, read_engine=reads)
    # provider calls memory makes on its own are usage rows and budget charges (application.memory.metering)
    meter = RecordProviderUsage(UnitOfWorkSettlements(uow), ids, clock, budgets) if uow is not None else None
    ingest = IngestTurns(store, vectors, cached, ids)
    hybrid: Any = store
    if redis is not None:  # the read cache answers repeated searches too, under the vector cache's generations
        from adapters.vectorstores.cache import CachedHybridSearch

        hybrid = CachedHybridSearch(store, store, redis, namespace=collection, ttl_seconds=settings.memory_cache_seconds)
    search = SearchMemory(store, vectors, cached, clock, hybrid=hybrid, max_concurrent=slots)
    # the database announces every write of memories: a user known to have none costs no query
    # while this process listens (it runs in the backend: ``MemoryModule.watch_writes``)
    watch = MemoryWriteWatch(engine, search, log=structlog.get_logger("lumina.memory"))
    if isinstance(embedder, ProviderEmbedder) and isinstance(embedder.embed_texts, MeteredEmbedTexts):
        embedder.embed_texts.meter = meter
        # each piece of work names the tenant and user its provider embeddings are charged to
        ingest = MeteredIngest(ingest)  # type: ignore[assignment]
        search = MeteredSearch(search)  # type: ignore[assignment]
    use = MemoryUseCases(
        add=AddMemory(ingest, store, clock, ids, uow),
        search=SearchMemories(search, store),
        get=GetMemory(store),
        update=UpdateMemory(store, ingest.reindex, clock),
        delete=DeleteMemory(store, vectors, ingest.reindex),
        topics=ListTopics(store),
        neighbourhood=MemoryNeighbourhood(store),
        export=ExportMemories(store),
        tenant_get=GetTenantMemory(PostgresTenantMemory(engine), cache_seconds=settings.memory_tenant_cache_seconds),
        tenant_set=SetTenantMemory(
            PostgresTenantMemory(engine), clock, ids, cache_seconds=settings.memory_tenant_cache_seconds,
            on_change=chat_hook.tenant_changed if chat_hook is not None else None,
        ),
    )
    summarizer: Summarizer = ExtractiveSummarizer()
    if settings.memory_summary_model and catalog is not None and providers is not None:
        summarizer = ProviderSummarizer(catalog, providers, settings.memory_summary_model, meter=meter)
    extractor: FactExtractor | None = None
    if settings.memory_extraction_model and catalog is not None and providers is not None:
        extractor = ProviderFactExtractor(catalog, providers, settings.memory_extraction_model, meter=meter)
    consolidate = ConsolidateMemory(
        store, vectors, cached, ids, clock, summarizer, reindex=ingest.reindex, extractor=extractor
    )
    if chat_hook is not None:
        chat_hook.attach(search)
    return MemoryModule(
        embedder=cached, vectors=vectors, store=store, collection=collection, ingest=ingest, search=search,
        use=use, consolidate=consolidate, remember=RememberTurn(ingest, store, consolidate),
        sweep=SweepMemory(store, consolidate), redis=redis, chat_hook=chat_hook,
        search_cache=hybrid if hybrid is not store else None, watch=watch,
    )


def memory_chat_hook(settings: Settings, engine: AsyncEngine, *, clock: Clock, ids: IdGenerator) -> MemoryChatHook:
    """Long-term memory in the chat path (``application.memory.chat_hook``), for ``StreamChat``'s
    hooks: the tenant's switch read from ``tenants`` through a TTL cache, the budget and time box
    from settings. Recalls nothing until ``open_memory(chat_hook=...)`` attaches the search."""
    tenants = CachedTenantPolicies(PostgresTenantPolicies(engine), clock, ttl=settings.memory_tenant_cache_seconds)
    return MemoryChatHook(
        tenants=tenants, clock=clock, ids=ids, token_budget=settings.memory_chat_token_budget,
        max_results=settings.memory_chat_max_results, timeout=settings.memory_chat_timeout_ms / 1000,
        log=structlog.get_logger("lumina.memory"),
    )


async def open_worker_memory(
    settings: Settings, engine: AsyncEngine, uow: UnitOfWorkFactory, *, clock: Clock, ids: IdGenerator
) -> MemoryModule:
    """Memory for the worker's consumers. When memory embeds through a provider or writes summaries
    through one, the worker loads the provider registry itself (once at start, and again before
    each sweep: ``MemoryModule.registry``)."""
    registry = None
    catalog = providers = None
    if settings.memory_embedder.startswith("provider:") or settings.memory_summary_model or settings.memory_extraction_model:
        from api.registry import build_registry
        from application.catalog import RegistryCatalog

        catalog = RegistryCatalog(uow, clock, default_model=settings.default_model)
        registry = build_registry(
            uow=uow, catalog=catalog, clock=clock, ids=ids, tenant_id=settings.tenant_id,  # type: ignore[arg-type]
            data_dir=settings.data_path, replica="worker",
        )
        await registry.reload()
        providers = registry.providers
    embedder = memory_embedder(settings, EmbedTexts(catalog, providers) if catalog is not None else None)  # type: ignore[arg-type]
    budgets = None
    if registry is not None and settings.redis_url:  # provider calls are charged to the tenants' budgets
        from api.budgets import build_budgets

        budgets = build_budgets(settings, engine, clock=clock, ids=ids)
    try:
        module = await open_memory(
            settings, engine, embedder, clock=clock, ids=ids, uow=uow, catalog=catalog, providers=providers,
            budgets=budgets.guard if budgets is not None else None,
        )
    except BaseException:
        if registry is not None:
            await registry.aclose()
        if budgets is not None:
            await budgets.aclose()
        raise
    module.registry = registry
    module.budgets = budgets
    return module


TENANT_SWITCH_SUBJECT = "lumina.*.auth.audited"


async def follow_tenant_switches(
    hook: MemoryChatHook, js: Any, stop: asyncio.Event, *, stream: str | None = None,
    subject: str = TENANT_SWITCH_SUBJECT, ready: asyncio.Event | None = None,
) -> None:
    """Until ``stop``: when any replica switches a tenant's memory (its audit event, relayed to
    JetStream by the worker), this replica's chat hook forgets the tenant's cached switch, so the
    flip is honoured on the next request here too, not after ``MEMORY_TENANT_CACHE_SECONDS``."""
    from adapters.nats import BusError
    from adapters.nats.event_listener import listen_events

    log = structlog.get_logger("lumina.memory")

    async def on_event(event: DomainEvent) -> None:
        tenant = switched_tenant(event)
        if tenant is not None:
            hook.tenant_changed(tenant)

    while not stop.is_set():
        try:
            await listen_events(js, subject=subject, on_event=on_event, stop=stop, stream=stream, ready=ready)
        except BusError as exc:  # NATS away: the cache TTL still bounds staleness; subscribe again
            log.warning("tenant switch listener failed; will retry", error=str(exc) or type(exc).__name__)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), 2.0)
