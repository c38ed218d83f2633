"""Ports the application layer needs: persistence (unit of work and repositories) and messaging."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import Protocol

import msgspec

from domain.events import DomainEvent
from domain.memory.vectors import MetadataFilter, QueryHit, VectorRecord
from domain.ports import ProviderClient
from domain.registry import ModelRoute, PricePoint, ProviderSpec
from domain.usage import UsageRecord

__all__ = [
    "Embedder",
    "EventPublisher",
    "ModelCatalog",
    "OutboxMessage",
    "OutboxRepository",
    "ProcessedEvents",
    "ProviderClients",
    "ProviderRepository",
    "RegistryUnitOfWork",
    "RegistryUnitOfWorkFactory",
    "Settlements",
    "SpendRepository",
    "StoredSecret",
    "UnitOfWork",
    "UnitOfWorkFactory",
    "UsageRepository",
    "VectorStore",
]


class Embedder(Protocol):
    """Text embeddings from one model: ``model`` names it (vectors from different models are not
    comparable), ``dimensions`` is each vector's length."""

    dimensions: int
    model: str

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """One vector per text, in order (unit length for cosine-similarity models)."""
        ...


class OutboxMessage(msgspec.Struct, frozen=True):
    """A serialized domain event waiting to be relayed."""

    event_id: str
    subject: str
    payload: bytes  # lumina.v1.EventEnvelope, protobuf-encoded
    headers: dict[str, str] = {}


class UsageRepository(Protocol):
    async def add(self, record: UsageRecord) -> None: ...

    async def get(self, request_id: str) -> UsageRecord | None: ...


class StoredSecret(msgspec.Struct, frozen=True):
    """A provider's API key as stored: ciphertext from the ``Kms`` plus a masked ``hint``."""

    ciphertext: bytes
    hint: str


class ProviderRepository(Protocol):
    """The provider registry's tables: providers, models, price history and encrypted keys.
    Deleting a provider deletes its models, their prices and its key; deleting a model deletes
    its prices. ``upsert_model`` and ``add_price`` need the provider / model to exist."""

    async def upsert_provider(self, spec: ProviderSpec) -> None: ...

    async def upsert_model(self, route: ModelRoute) -> None: ...

    async def list_providers(self) -> Sequence[ProviderSpec]:
        """Ordered by name."""
        ...

    async def list_models(self) -> Sequence[ModelRoute]:
        """Ordered by name."""
        ...

    async def get_provider(self, name: str) -> ProviderSpec | None: ...

    async def get_model(self, name: str) -> ModelRoute | None: ...

    async def delete_provider(self, name: str) -> bool:
        """False when there was no such provider."""
        ...

    async def delete_model(self, name: str) -> bool:
        """False when there was no such model."""
        ...

    async def add_price(self, point: PricePoint) -> None:
        """Add a price period (replacing one with the same ``effective_from``)."""
        ...

    async def price_history(self, model: str) -> Sequence[PricePoint]:
        """Ordered by ``effective_from``."""
        ...

    async def set_secret(self, provider: str, secret: StoredSecret) -> None: ...

    async def delete_secret(self, provider: str) -> None: ...

    async def secrets(self) -> dict[str, StoredSecret]:
        """Provider name -> its stored key."""
        ...


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


class RegistryUnitOfWork(Protocol):
    """The part of ``UnitOfWork`` the registry's use cases need."""

    providers: ProviderRepository

    def record(self, event: DomainEvent) -> None: ...

    async def commit(self) -> None: ...

    async def __aenter__(self) -> RegistryUnitOfWork: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class RegistryUnitOfWorkFactory(Protocol):
    def __call__(self) -> RegistryUnitOfWork: ...


class EventPublisher(Protocol):
    async def publish(self, message: OutboxMessage) -> None:
        """Publish durably (JetStream ack awaited); de-duplicated on ``event_id``."""
        ...


class Settlements(Protocol):
    """Makes a finished request's usage row and its events durable, together.

    ``settle`` returns only once the row and every event's outbox message are committed (an
    implementation may share one transaction between concurrent requests: group commit). It raises
    ``domain.errors.Unavailable`` when they could not be committed; the caller then must not report
    the request as finished. ``events``: ``ChatCompleted`` first, then e.g. ``RouteDecided`` and
    what the chat hooks return."""

    async def settle(self, record: UsageRecord, *events: DomainEvent) -> None: ...


class ModelCatalog(Protocol):
    async def resolve(self, model: str, provider: str | None = None) -> ModelRoute:
        """The route for a model name ('' means the default), served by ``provider`` when that hint
        is given; raises NotFound."""
        ...

    async def provider(self, name: str) -> ProviderSpec: ...


class ProviderClients(Protocol):
    def get(self, provider: str) -> ProviderClient: ...


class VectorStore(Protocol):
    """Embeddings in one collection (one dimension, cosine similarity), always scoped to a tenant:
    no call reads, replaces or deletes another tenant's records. Ids are unique per tenant.

    Raises ``InvalidRequest`` for a bad vector (wrong dimension, zero, non-finite), a ``k``
    outside 1..``MAX_K`` or a record whose ``tenant_id`` differs from ``tenant_id``;
    ``Unavailable`` when the store cannot be reached."""

    @property
    def dimension(self) -> int: ...

    async def upsert(self, tenant_id: str, records: Sequence[VectorRecord]) -> None:
        """Insert, or replace (vector, metadata and text) records with the same id."""
        ...

    async def delete(self, tenant_id: str, ids: Sequence[str]) -> None:
        """Delete these ids; unknown ids are ignored."""
        ...

    async def query(
        self, tenant_id: str, vector: Sequence[float], k: int, filter: MetadataFilter | None = None
    ) -> list[QueryHit]:
        """At most ``k`` records matching ``filter``, nearest first (highest cosine similarity)."""
        ...
