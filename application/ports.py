"""Ports the application layer needs: persistence (unit of work and repositories) and messaging."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol

import msgspec

from domain.events import DomainEvent
from domain.ports import ProviderClient
from domain.registry import ModelRoute, ProviderSpec
from domain.usage import UsageRecord

__all__ = [
    "EventPublisher",
    "ModelCatalog",
    "OutboxMessage",
    "OutboxRepository",
    "ProcessedEvents",
    "ProviderClients",
    "ProviderRepository",
    "SpendRepository",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "UsageRepository",
]


class OutboxMessage(msgspec.Struct, frozen=True):
    """A serialized domain event waiting to be relayed."""

    event_id: str
    subject: str
    payload: bytes  # lumina.v1.EventEnvelope, protobuf-encoded
    headers: dict[str, str] = {}


class UsageRepository(Protocol):
    async def add(self, record: UsageRecord) -> None: ...

    async def get(self, request_id: str) -> UsageRecord | None: ...


class ProviderRepository(Protocol):
    async def upsert_provider(self, spec: ProviderSpec) -> None: ...

    async def upsert_model(self, route: ModelRoute) -> None: ...

    async def list_providers(self) -> Sequence[ProviderSpec]: ...

    async def list_models(self) -> Sequence[ModelRoute]: ...


class OutboxRepository(Protocol):
    async def add(self, message: OutboxMessage) -> None: ...

    async def claim_unsent(self, limit: int) -> Sequence[OutboxMessage]:
        """Unsent messages in insertion order, locked against other relays (SKIP LOCKED)."""
        ...

    async def mark_sent(self, event_ids: Sequence[str]) -> None: ...


class ProcessedEvents(Protocol):
    async def first_time(self, consumer: str, event_id: str) -> bool:
        """Record that ``consumer`` handled ``event_id``; False when it already had."""
        ...


class SpendRepository(Protocol):
    async def add_spend(self, tenant_id: str, day: str, model: str, cost_micros: int, tokens: int) -> None: ...


class UnitOfWork(Protocol):
    usage: UsageRepository
    providers: ProviderRepository
    outbox: OutboxRepository
    processed: ProcessedEvents
    spend: SpendRepository

    def record(self, event: DomainEvent) -> None:
        """Queue an event; ``commit`` writes it to the outbox in the same transaction."""
        ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...


class EventPublisher(Protocol):
    async def publish(self, message: OutboxMessage) -> None:
        """Publish durably (JetStream ack awaited); de-duplicated on ``event_id``."""
        ...


class ModelCatalog(Protocol):
    async def resolve(self, model: str, provider: str | None = None) -> ModelRoute:
        """The route for a model name ('' means the default), served by ``provider`` when that hint
        is given; raises NotFound."""
        ...

    async def provider(self, name: str) -> ProviderSpec: ...


class ProviderClients(Protocol):
    def get(self, provider: str) -> ProviderClient: ...
