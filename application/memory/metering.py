"""Metering of the provider calls memory makes on its own (not on a chat request): embeddings of
memories and queries (``MEMORY_EMBEDDER=provider:<model>``), session summaries and fact
extraction through a chat model. Each call becomes a usage row (``UsageRecord`` with its
``operation``: ``memory.embedding``, ``memory.summary``, ``memory.extraction``; tenant, the
user when known, provider, model, tokens, cost at the registry's price) and is charged to the
budgets that apply, through the budget port the chat path uses (``ChatBudgets``: a reservation
of 0 settled to the actual cost — the work is done by then, so a budget is charged, never asked).

Embeddings are called through the ``Embedder`` port, which knows no tenant: the use cases name
the tenant and user a piece of work is for with ``metered_as(tenant, user)`` (a context
variable), and ``MeteredEmbedTexts`` charges the call to it (calls outside any scope — the
start-up probe — are not metered).
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterator
from typing import Any, Protocol

import msgspec

from application.ports import ModelCatalog, ProviderClients
from domain.budgets import BudgetSubject
from domain.chat import (
    ChatRequest,
    EmbeddingRequest,
    Embeddings,
    ErrorChunk,
    TextDelta,
    Usage,
    UsageChunk,
)
from domain.errors import BudgetExceeded, DomainError
from domain.events import DomainEvent
from domain.ports import Clock, IdGenerator
from domain.usage import UsageRecord

__all__ = [
    "MeteredEmbedTexts",
    "MeteredIngest",
    "MeteredSearch",
    "ProviderCall",
    "ProviderMeter",
    "RecordProviderUsage",
    "complete_text",
    "current_scope",
    "metered_as",
]

log = logging.getLogger(__name__)

_scope: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar("lumina_memory_scope", default=None)


@contextlib.contextmanager
def metered_as(tenant_id: str, user_id: str = "") -> Iterator[None]:
    """Provider calls made inside are charged to ``tenant_id`` (and ``user_id``)."""
    token = _scope.set((tenant_id, user_id))
    try:
        yield
    finally:
        _scope.reset(token)


def current_scope() -> tuple[str, str] | None:
    return _scope.get()


class ProviderCall(msgspec.Struct, frozen=True):
    tenant_id: str
    user_id: str
    provider: str
    model: str
    usage: Usage
    cost_micros: int
    operation: str  # memory.embedding | memory.summary | memory.extraction
    latency_ms: int = 0


class ProviderMeter(Protocol):
    async def record(self, call: ProviderCall) -> None: ...


class UsageSettlements(Protocol):
    async def settle(self, record: UsageRecord, *events: DomainEvent) -> None: ...


class Budgets(Protocol):
    async def reserve(self, subject: BudgetSubject, amount_micros: int, *, task: str = "") -> object: ...

    async def settle(self, reservation: object, actual_micros: int, *, usage: Usage | None = None, request_id: str = "") -> object: ...


class RecordProviderUsage:
    """``ProviderMeter``: one usage row per call (``Settlements``), and the budgets charged."""

    def __init__(self, settlements: UsageSettlements, ids: IdGenerator, clock: Clock, budgets: Budgets | None = None) -> None:
        self._settlements = settlements
        self._ids = ids
        self._clock = clock
        self._budgets = budgets

    async def record(self, call: ProviderCall) -> None:
        request_id = f"mem-{self._ids.new_id()}"
        record = UsageRecord(
            request_id=request_id, tenant_id=call.tenant_id, provider=call.provider, model=call.model,
            input_tokens=call.usage.input_tokens, output_tokens=call.usage.output_tokens,
            cached_input_tokens=call.usage.cached_input_tokens, reasoning_tokens=call.usage.reasoning_tokens,
            cost_micros=call.cost_micros, latency_ms=call.latency_ms, finish_reason="stop", created_at=self._clock.now(),
            user_id=call.user_id or None, operation=call.operation,
        )
        await self._settlements.settle(record)
        if self._budgets is None:
            return
        subject = BudgetSubject(call.tenant_id, user_id=call.user_id, provider=call.provider, model=call.model)
        try:
            reservation = await self._budgets.reserve(subject, 0, task=call.operation)
            await self._budgets.settle(reservation, call.cost_micros, usage=call.usage, request_id=request_id)
        except BudgetExceeded as exc:  # already over a hard budget: the call is recorded, the ledger says so
            log.warning("memory %s over budget %s; usage recorded", call.operation, exc.message)


async def _meter(meter: ProviderMeter | None, call: ProviderCall) -> None:
    if meter is None:
        return
    try:
        await meter.record(call)
    except DomainError as exc:  # metering must not undo work already done; it is logged
        log.warning("memory %s usage not recorded: %s", call.operation, exc.code)


async def complete_text(
    catalog: ModelCatalog,
    providers: ProviderClients,
    request: ChatRequest,
    *,
    meter: ProviderMeter | None,
    tenant_id: str,
    user_id: str,
    operation: str,
    clock: Clock | None = None,
) -> str:
    """The whole text answer of ``request.model`` (resolved in the catalogue), metered. Raises a
    ``DomainError`` on any provider or catalogue failure, or an empty answer."""
    route = await catalog.resolve(request.model)
    client = providers.get(route.provider)
    started = clock.monotonic() if clock is not None else 0.0
    parts: list[str] = []
    usage: Usage | None = None
    stream = client.stream(route.upstream_model, request)
    try:
        async for chunk in stream:
            if isinstance(chunk, TextDelta):
                parts.append(chunk.text)
            elif isinstance(chunk, UsageChunk):
                usage = chunk.usage
            elif isinstance(chunk, ErrorChunk):
                raise DomainError(chunk.code)
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    text = "".join(parts)
    if usage is None:  # the provider reported none: a word-count estimate (4 tokens per 3 words)
        words_in = sum(len(m.content.split()) for m in request.messages)
        usage = Usage(input_tokens=(4 * words_in + 2) // 3, output_tokens=(4 * len(text.split()) + 2) // 3)
    latency = round((clock.monotonic() - started) * 1000) if clock is not None else 0
    await _meter(meter, ProviderCall(tenant_id, user_id, route.provider, route.name, usage, route.price.cost_micros(usage), operation, latency))
    if not text.strip():
        raise DomainError("empty answer")
    return text


class MeteredEmbedTexts:
    """``application.embeddings.EmbedTexts`` with each call metered (``memory.embedding``) to the
    scope set by ``metered_as``. Same call signature."""

    def __init__(self, catalog: ModelCatalog, providers: ProviderClients, meter: ProviderMeter | None = None) -> None:
        self._catalog = catalog
        self._providers = providers
        self.meter = meter  # set by the composition once the usage store is open

    async def __call__(self, request: EmbeddingRequest) -> Embeddings:
        route = await self._catalog.resolve(request.model)
        client = self._providers.get(route.provider)
        result = await client.embed(route.upstream_model, request)
        scope = _scope.get()
        if scope is not None:
            tokens = result.input_tokens or sum((4 * len(t.split()) + 2) // 3 for t in request.inputs)
            usage = Usage(input_tokens=tokens)
            await _meter(self.meter, ProviderCall(scope[0], scope[1], route.provider, route.name, usage, route.price.cost_micros(usage), "memory.embedding"))
        return result


class MeteredSearch:
    """A ``SearchMemory`` whose query embedding is charged to the (tenant, user) searched."""

    def __init__(self, search: Any) -> None:
        self._search = search

    async def __call__(self, tenant: str, user: str, *args: Any, **kwargs: Any) -> Any:
        with metered_as(tenant, user):
            return await self._search(tenant, user, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._search, name)


class MeteredIngest:
    """An ``IngestTurns`` whose embeddings are charged to the (tenant, user) ingested for, and a
    re-index to its tenant (to the enclosing scope's user when there is one)."""

    def __init__(self, ingest: Any) -> None:
        self._ingest = ingest

    async def __call__(self, tenant: str, user: str, *args: Any, **kwargs: Any) -> Any:
        with metered_as(tenant, user):
            return await self._ingest(tenant, user, *args, **kwargs)

    async def reindex(self, tenant: str, memory_ids: Any) -> Any:
        scope = _scope.get()
        if scope is not None and scope[0] == tenant:
            return await self._ingest.reindex(tenant, memory_ids)
        with metered_as(tenant):
            return await self._ingest.reindex(tenant, memory_ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._ingest, name)
