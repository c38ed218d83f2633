"""Hand-written in-memory fakes of the application ports, stateful and transactional.

``FakeDatabase`` holds the committed state. ``FakeUnitOfWorkFactory(db)`` hands out
``FakeUnitOfWork``s that behave like the Postgres one:

- changes made inside ``async with uow:`` are staged and become visible to other units of work only
  on ``commit()``; leaving the block without committing (or with an exception) discards them, and
  ``record()``ed events are written to the outbox in the same commit;
- ``outbox.claim_unsent`` skips rows claimed by another open unit of work (``FOR UPDATE SKIP
  LOCKED``) and releases them when that unit of work ends;
- ``processed.first_time`` sees committed rows and this unit of work's own staged ones;
- a duplicate outbox ``event_id``, usage ``request_id`` or processed event fails like a unique
  constraint (``IntegrityViolation``) at commit, changing nothing (Postgres would make a concurrent
  ``first_time`` wait and answer False; the fake fails the later commit instead of double counting);
- ``db.fail_next_commit = exc`` makes the next commit raise ``exc`` and change nothing.

The provider registry (``FakeProviderRepository``) keeps providers, models, price history and
stored keys like the Postgres tables: deletions cascade (a provider takes its models, their prices
and its key; a model its prices), a model needs its provider and a price its model
(``IntegrityViolation`` otherwise), listings are ordered by name and prices by date, and reads hand
out copies, so a caller changing a returned ``ModelRoute`` changes nothing stored.

``FakePublisher`` records what it was asked to publish, de-duplicates on ``event_id`` like
JetStream's ``Nats-Msg-Id`` window (``duplicates`` counts the suppressed ones), and can be told to
fail on the n-th call. Events are encoded to ``OutboxMessage`` with ``fake_encode`` (msgspec JSON),
so these fakes need neither protobuf nor generated code.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Self, TypeVar

import msgspec

from application.ports import OutboxMessage, StoredSecret
from domain.events import DomainEvent
from domain.registry import ModelRoute, PricePoint, ProviderSpec
from domain.usage import UsageRecord

__all__ = [
    "FakeDatabase",
    "FakeOutboxRow",
    "FakeProviderRepository",
    "FakePublisher",
    "FakeUnitOfWork",
    "FakeUnitOfWorkFactory",
    "IntegrityViolation",
    "PublishFailed",
    "fake_decode",
    "fake_encode",
]


class IntegrityViolation(Exception):
    """A unique constraint would be violated (the fake's stand-in for the database's error)."""


class PublishFailed(Exception):
    """Raised by ``FakePublisher`` when told to fail."""


def fake_encode(event: DomainEvent, headers: dict[str, str] | None = None) -> OutboxMessage:
    return OutboxMessage(
        event_id=event.event_id,
        subject=event.subject,
        payload=msgspec.json.encode(event),
        headers=dict(headers or {}),
    )


def fake_decode(payload: bytes) -> DomainEvent:
    return msgspec.json.decode(payload, type=DomainEvent)


@dataclass
class FakeOutboxRow:
    id: int
    message: OutboxMessage
    sent: bool = False


_T = TypeVar("_T")

SpendKey = tuple[str, str, str]  # tenant_id, day (ISO), model


@dataclass
class FakeDatabase:
    """Committed state, shared by every unit of work of one factory."""

    usage: dict[str, UsageRecord] = field(default_factory=dict)
    providers: dict[str, ProviderSpec] = field(default_factory=dict)
    models: dict[str, ModelRoute] = field(default_factory=dict)
    prices: dict[str, list[PricePoint]] = field(default_factory=dict)  # model -> history by date
    secrets: dict[str, StoredSecret] = field(default_factory=dict)  # provider -> its stored key
    outbox: list[FakeOutboxRow] = field(default_factory=list)
    processed: set[tuple[str, str]] = field(default_factory=set)
    spend: dict[SpendKey, tuple[int, int]] = field(default_factory=dict)  # -> (cost_micros, tokens)
    commits: int = 0
    fail_next_commit: Exception | None = None  # raised (once) by the next commit, which changes nothing
    _locked: set[int] = field(default_factory=set)
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def unsent(self) -> list[OutboxMessage]:
        return [row.message for row in self.outbox if not row.sent]

    def sent(self) -> list[OutboxMessage]:
        return [row.message for row in self.outbox if row.sent]

    def spend_total(self, tenant_id: str | None = None) -> tuple[int, int]:
        rows = [v for k, v in self.spend.items() if tenant_id is None or k[0] == tenant_id]
        return sum(c for c, _ in rows), sum(t for _, t in rows)


class _Staged:
    """What one unit of work changed and has not committed yet."""

    def __init__(self) -> None:
        self.usage: dict[str, UsageRecord] = {}
        # registry rows written (None: deleted) by this unit of work
        self.providers: dict[str, ProviderSpec | None] = {}
        self.models: dict[str, ModelRoute | None] = {}
        self.prices: dict[str, list[PricePoint] | None] = {}
        self.secrets: dict[str, StoredSecret | None] = {}
        self.outbox: list[OutboxMessage] = []
        self.sent: set[str] = set()
        self.processed: set[tuple[str, str]] = set()
        self.spend: list[tuple[SpendKey, int, int]] = []


class FakeUsageRepository:
    def __init__(self, db: FakeDatabase, staged: _Staged) -> None:
        self._db, self._staged = db, staged

    async def add(self, record: UsageRecord) -> None:
        self._staged.usage[record.request_id] = record

    async def get(self, request_id: str) -> UsageRecord | None:
        return self._staged.usage.get(request_id) or self._db.usage.get(request_id)


def _merged(committed: dict[str, _T], staged: dict[str, _T | None]) -> dict[str, _T]:
    """Committed rows overlaid with this unit of work's writes and deletions."""
    merged = {**committed, **staged}
    return {k: v for k, v in merged.items() if v is not None}


def _apply(committed: dict[str, _T], staged: dict[str, _T | None]) -> None:
    for key, value in staged.items():
        if value is None:
            committed.pop(key, None)
        else:
            committed[key] = value


class FakeProviderRepository:
    """``ProviderRepository`` over the fake database (see the module docstring)."""

    def __init__(self, db: FakeDatabase, staged: _Staged) -> None:
        self._db, self._staged = db, staged

    def _providers(self) -> dict[str, ProviderSpec]:
        return _merged(self._db.providers, self._staged.providers)

    def _models(self) -> dict[str, ModelRoute]:
        return _merged(self._db.models, self._staged.models)

    def _secrets(self) -> dict[str, StoredSecret]:
        return _merged(self._db.secrets, self._staged.secrets)

    def _history(self, model: str) -> list[PricePoint]:
        if model in self._staged.prices:
            return list(self._staged.prices[model] or ())
        return list(self._db.prices.get(model, ()))

    async def upsert_provider(self, spec: ProviderSpec) -> None:
        self._staged.providers[spec.name] = dataclasses.replace(spec)

    async def upsert_model(self, route: ModelRoute) -> None:
        if route.provider not in self._providers():
            raise IntegrityViolation(f"model {route.name}: unknown provider {route.provider}")
        self._staged.models[route.name] = dataclasses.replace(route)

    async def list_providers(self) -> Sequence[ProviderSpec]:
        merged = self._providers()
        return [dataclasses.replace(merged[name]) for name in sorted(merged)]

    async def list_models(self) -> Sequence[ModelRoute]:
        merged = self._models()
        return [dataclasses.replace(merged[name]) for name in sorted(merged)]

    async def get_provider(self, name: str) -> ProviderSpec | None:
        spec = self._providers().get(name)
        return None if spec is None else dataclasses.replace(spec)

    async def get_model(self, name: str) -> ModelRoute | None:
        route = self._models().get(name)
        return None if route is None else dataclasses.replace(route)

    async def delete_provider(self, name: str) -> bool:
        if name not in self._providers():
            return False
        for model in [m.name for m in self._models().values() if m.provider == name]:
            await self.delete_model(model)  # ON DELETE CASCADE
        self._staged.providers[name] = None
        self._staged.secrets[name] = None
        return True

    async def delete_model(self, name: str) -> bool:
        if name not in self._models():
            return False
        self._staged.models[name] = None
        self._staged.prices[name] = None
        return True

    async def add_price(self, point: PricePoint) -> None:
        if point.model not in self._models():
            raise IntegrityViolation(f"price of {point.model}: unknown model")
        history = [p for p in self._history(point.model) if p.effective_from != point.effective_from]
        history.append(point)
        self._staged.prices[point.model] = sorted(history, key=lambda p: p.effective_from)

    async def price_history(self, model: str) -> Sequence[PricePoint]:
        return self._history(model)

    async def set_secret(self, provider: str, secret: StoredSecret) -> None:
        if provider not in self._providers():
            raise IntegrityViolation(f"key of {provider}: unknown provider")
        self._staged.secrets[provider] = secret

    async def delete_secret(self, provider: str) -> None:
        self._staged.secrets[provider] = None

    async def secrets(self) -> dict[str, StoredSecret]:
        return self._secrets()


class FakeOutboxRepository:
    def __init__(self, db: FakeDatabase, staged: _Staged, claimed: set[int]) -> None:
        self._db, self._staged, self._claimed = db, staged, claimed

    async def add(self, message: OutboxMessage) -> None:
        self._staged.outbox.append(message)

    async def claim_unsent(self, limit: int) -> Sequence[OutboxMessage]:
        claimed: list[OutboxMessage] = []
        for row in self._db.outbox:
            if len(claimed) >= limit:
                break
            if row.sent or row.message.event_id in self._staged.sent:
                continue
            if row.id in self._db._locked and row.id not in self._claimed:
                continue  # SKIP LOCKED
            self._db._locked.add(row.id)
            self._claimed.add(row.id)
            claimed.append(row.message)
        return claimed

    async def mark_sent(self, event_ids: Sequence[str]) -> None:
        self._staged.sent.update(event_ids)


class FakeProcessedEvents:
    def __init__(self, db: FakeDatabase, staged: _Staged) -> None:
        self._db, self._staged = db, staged

    async def first_time(self, consumer: str, event_id: str) -> bool:
        key = (consumer, event_id)
        if key in self._db.processed or key in self._staged.processed:
            return False
        self._staged.processed.add(key)
        return True


class FakeSpendRepository:
    def __init__(self, db: FakeDatabase, staged: _Staged) -> None:
        self._db, self._staged = db, staged

    async def add_spend(self, tenant_id: str, day: str, model: str, cost_micros: int, tokens: int) -> None:
        self._staged.spend.append(((tenant_id, day, model), cost_micros, tokens))


class FakeUnitOfWork:
    usage: FakeUsageRepository
    providers: FakeProviderRepository
    outbox: FakeOutboxRepository
    processed: FakeProcessedEvents
    spend: FakeSpendRepository

    def __init__(self, db: FakeDatabase, encode: Callable[[DomainEvent], OutboxMessage] = fake_encode) -> None:
        self._db = db
        self._encode = encode
        self._active = False
        self._reset()

    def _reset(self) -> None:
        self._staged = _Staged()
        self._events: list[DomainEvent] = []
        self._claimed: set[int] = set()
        self.usage = FakeUsageRepository(self._db, self._staged)
        self.providers = FakeProviderRepository(self._db, self._staged)
        self.outbox = FakeOutboxRepository(self._db, self._staged, self._claimed)
        self.processed = FakeProcessedEvents(self._db, self._staged)
        self.spend = FakeSpendRepository(self._db, self._staged)

    async def __aenter__(self) -> Self:
        if self._active:
            raise RuntimeError("unit of work is already in use")
        self._active = True
        self._reset()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()
        self._reset()
        self._active = False

    def record(self, event: DomainEvent) -> None:
        self._check_active()
        self._events.append(event)

    async def commit(self) -> None:
        self._check_active()
        staged, db = self._staged, self._db
        if db.fail_next_commit is not None:
            error, db.fail_next_commit = db.fail_next_commit, None
            raise error
        for event in self._events:
            staged.outbox.append(self._encode(event))
        # Check every constraint first, so a failed commit changes nothing.
        existing = {row.message.event_id for row in db.outbox}
        new_ids = [m.event_id for m in staged.outbox]
        if len(set(new_ids)) != len(new_ids) or existing.intersection(new_ids):
            raise IntegrityViolation("duplicate outbox event_id")
        if set(staged.usage).intersection(db.usage):
            raise IntegrityViolation("duplicate usage request_id")
        if db.processed.intersection(staged.processed):
            raise IntegrityViolation("duplicate processed event")
        db.usage.update(staged.usage)
        _apply(db.providers, staged.providers)
        _apply(db.models, staged.models)
        _apply(db.prices, staged.prices)
        _apply(db.secrets, staged.secrets)
        for message in staged.outbox:
            db.outbox.append(FakeOutboxRow(next(db._ids), message))
        for row in db.outbox:
            if row.message.event_id in staged.sent:
                row.sent = True
        db.processed.update(staged.processed)
        for key, cost, tokens in staged.spend:
            old_cost, old_tokens = db.spend.get(key, (0, 0))
            db.spend[key] = (old_cost + cost, old_tokens + tokens)
        db.commits += 1
        self._release()
        self._reset()

    async def rollback(self) -> None:
        self._check_active()
        self._release()
        self._reset()

    def _release(self) -> None:
        self._db._locked.difference_update(self._claimed)
        self._claimed.clear()

    def _check_active(self) -> None:
        if not self._active:
            raise RuntimeError("unit of work used outside 'async with'")


class FakeUnitOfWorkFactory:
    """``UnitOfWorkFactory`` over one ``FakeDatabase`` (``.db``)."""

    def __init__(
        self, db: FakeDatabase | None = None, *, encode: Callable[[DomainEvent], OutboxMessage] = fake_encode
    ) -> None:
        self.db = db if db is not None else FakeDatabase()
        self._encode = encode

    def __call__(self) -> FakeUnitOfWork:
        return FakeUnitOfWork(self.db, self._encode)


class FakePublisher:
    """``EventPublisher`` that keeps what it stored, in order, de-duplicated on event id."""

    def __init__(self, *, fail_on_call: int | None = None) -> None:
        self.published: list[OutboxMessage] = []
        self.calls = 0
        self.duplicates = 0
        self.fail_on_call = fail_on_call  # 1-based call number that raises PublishFailed
        self._seen: set[str] = set()

    async def publish(self, message: OutboxMessage) -> None:
        self.calls += 1
        if self.fail_on_call is not None and self.calls == self.fail_on_call:
            raise PublishFailed(f"publish #{self.calls} of {message.event_id} failed")
        if message.event_id in self._seen:
            self.duplicates += 1
            return
        self._seen.add(message.event_id)
        self.published.append(message)

    @property
    def event_ids(self) -> list[str]:
        return [m.event_id for m in self.published]
