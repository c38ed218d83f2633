"""Repositories over one ``AsyncSession`` (owned by the unit of work). Entities go through the
imperative mappers; upserts and queue operations use Core statements for atomicity."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import date

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.postgres import tables
from adapters.postgres.errors import translate_errors
from application.ports import OutboxMessage
from application.registry import StoredSecret
from domain.cost import Price
from domain.registry import ModelRoute, PricePoint, ProviderSpec
from domain.usage import UsageRecord

__all__ = [
    "SqlOutboxRepository",
    "SqlProcessedEvents",
    "SqlProviderRepository",
    "SqlSpendRepository",
    "SqlUsageRepository",
]


_USAGE_FIELDS = tuple(f.name for f in dataclasses.fields(UsageRecord))


class SqlUsageRepository:
    """Usage rows through Core statements: ``UsageRecord`` is a plain value, not a mapped entity
    (the chat path makes one per request; an instrumented one cost ~40 µs to build and read)."""

    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, record: UsageRecord) -> None:
        values = {name: getattr(record, name) for name in _USAGE_FIELDS}
        async with translate_errors("usage.add"):
            await self._session.execute(sa.insert(tables.usage_records).values(values))

    async def get(self, request_id: str) -> UsageRecord | None:
        columns = [tables.usage_records.c[name] for name in _USAGE_FIELDS]
        async with translate_errors("usage.get"):
            row = (await self._session.execute(
                sa.select(*columns).where(tables.usage_records.c.request_id == request_id)
            )).one_or_none()
        return None if row is None else UsageRecord(**row._mapping)


class SqlProviderRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def upsert_provider(self, spec: ProviderSpec) -> None:
        values = {
            "name": spec.name,
            "kind": spec.kind,
            "base_url": spec.base_url,
            "label": spec.label,
            "enabled": spec.enabled,
        }
        stmt = insert(tables.providers).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[tables.providers.c.name],
            set_={k: stmt.excluded[k] for k in values if k != "name"},
        )
        async with translate_errors("providers.upsert_provider"):
            await self._session.execute(stmt)

    async def upsert_model(self, route: ModelRoute) -> None:
        values = {
            "name": route.name,
            "provider": route.provider,
            "upstream_model": route.upstream_model,
            "input_per_mtok": route.price.input_per_mtok,
            "output_per_mtok": route.price.output_per_mtok,
            "cached_input_per_mtok": route.price.cached_input_per_mtok,
            "is_default": route.is_default,
            "capabilities": route.capabilities,
            "enabled": route.enabled,
            "available": route.available,
            "priced": route.priced,
            "source": route.source,
        }
        stmt = insert(tables.models).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[tables.models.c.name],
            set_={k: stmt.excluded[k] for k in values if k != "name"},
        )
        async with translate_errors("providers.upsert_model"):
            await self._session.execute(stmt)

    async def list_providers(self) -> Sequence[ProviderSpec]:
        stmt = sa.select(ProviderSpec).order_by(tables.providers.c.name)
        async with translate_errors("providers.list_providers"):
            result = await self._session.scalars(stmt.execution_options(populate_existing=True))
            return list(result)

    async def list_models(self) -> Sequence[ModelRoute]:
        stmt = sa.select(ModelRoute).order_by(tables.models.c.name)
        async with translate_errors("providers.list_models"):
            result = await self._session.scalars(stmt.execution_options(populate_existing=True))
            return list(result)

    async def get_provider(self, name: str) -> ProviderSpec | None:
        stmt = sa.select(ProviderSpec).where(tables.providers.c.name == name)
        async with translate_errors("providers.get_provider"):
            return (await self._session.scalars(stmt.execution_options(populate_existing=True))).one_or_none()

    async def get_model(self, name: str) -> ModelRoute | None:
        stmt = sa.select(ModelRoute).where(tables.models.c.name == name)
        async with translate_errors("providers.get_model"):
            return (await self._session.scalars(stmt.execution_options(populate_existing=True))).one_or_none()

    async def delete_provider(self, name: str) -> bool:
        """Delete a provider; its models, prices and secret go with it (ON DELETE CASCADE)."""
        t = tables.providers
        async with translate_errors("providers.delete_provider"):
            result = await self._session.execute(sa.delete(t).where(t.c.name == name).returning(t.c.name))
            return result.scalar_one_or_none() is not None

    async def delete_model(self, name: str) -> bool:
        t = tables.models
        async with translate_errors("providers.delete_model"):
            result = await self._session.execute(sa.delete(t).where(t.c.name == name).returning(t.c.name))
            return result.scalar_one_or_none() is not None

    async def add_price(self, point: PricePoint) -> None:
        t = tables.model_prices
        values = {
            "model": point.model,
            "effective_from": point.effective_from,
            "input_per_mtok": point.price.input_per_mtok,
            "output_per_mtok": point.price.output_per_mtok,
            "cached_input_per_mtok": point.price.cached_input_per_mtok,
        }
        stmt = insert(t).values(values)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.model, t.c.effective_from],
            set_={k: stmt.excluded[k] for k in values if k not in ("model", "effective_from")},
        )
        async with translate_errors("providers.add_price"):
            await self._session.execute(stmt)

    async def price_history(self, model: str) -> Sequence[PricePoint]:
        t = tables.model_prices
        stmt = sa.select(t).where(t.c.model == model).order_by(t.c.effective_from)
        async with translate_errors("providers.price_history"):
            rows = (await self._session.execute(stmt)).all()
        return [
            PricePoint(r.model, r.effective_from, Price(r.input_per_mtok, r.output_per_mtok, r.cached_input_per_mtok))
            for r in rows
        ]

    async def set_secret(self, provider: str, secret: StoredSecret) -> None:
        t = tables.provider_secrets
        stmt = insert(t).values(provider=provider, ciphertext=secret.ciphertext, hint=secret.hint)
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.provider],
            set_={"ciphertext": stmt.excluded.ciphertext, "hint": stmt.excluded.hint, "updated_at": sa.func.now()},
        )
        async with translate_errors("providers.set_secret"):
            await self._session.execute(stmt)

    async def delete_secret(self, provider: str) -> None:
        t = tables.provider_secrets
        async with translate_errors("providers.delete_secret"):
            await self._session.execute(sa.delete(t).where(t.c.provider == provider))

    async def secrets(self) -> dict[str, StoredSecret]:
        t = tables.provider_secrets
        async with translate_errors("providers.secrets"):
            rows = (await self._session.execute(sa.select(t.c.provider, t.c.ciphertext, t.c.hint))).all()
        return {r.provider: StoredSecret(bytes(r.ciphertext), r.hint) for r in rows}


class SqlOutboxRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add(self, message: OutboxMessage) -> None:
        stmt = sa.insert(tables.outbox).values(
            event_id=message.event_id,
            subject=message.subject,
            payload=message.payload,
            headers=dict(message.headers),
        )
        async with translate_errors("outbox.add"):
            await self._session.execute(stmt)

    async def claim_unsent(self, limit: int) -> Sequence[OutboxMessage]:
        t = tables.outbox
        stmt = (
            sa.select(t.c.event_id, t.c.subject, t.c.payload, t.c.headers)
            .where(t.c.sent_at.is_(None))
            .order_by(t.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        async with translate_errors("outbox.claim_unsent"):
            rows = (await self._session.execute(stmt)).all()
        return [
            OutboxMessage(
                event_id=r.event_id, subject=r.subject, payload=bytes(r.payload), headers=dict(r.headers)
            )
            for r in rows
        ]

    async def mark_sent(self, event_ids: Sequence[str]) -> None:
        if not event_ids:
            return
        t = tables.outbox
        stmt = sa.update(t).where(t.c.event_id.in_(list(event_ids))).values(sent_at=sa.func.now())
        async with translate_errors("outbox.mark_sent"):
            await self._session.execute(stmt)


class SqlProcessedEvents:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def first_time(self, consumer: str, event_id: str) -> bool:
        t = tables.processed_events
        stmt = (
            insert(t)
            .values(consumer=consumer, event_id=event_id)
            .on_conflict_do_nothing(index_elements=[t.c.consumer, t.c.event_id])
            .returning(t.c.event_id)
        )
        async with translate_errors("processed.first_time"):
            inserted = (await self._session.execute(stmt)).scalar_one_or_none()
        return inserted is not None


class SqlSpendRepository:
    def __init__(self, session: AsyncSession) -> None:
        self._session = session

    async def add_spend(self, tenant_id: str, day: str, model: str, cost_micros: int, tokens: int) -> None:
        """Add to the (tenant, day, model) roll-up; ``day`` is an ISO date (YYYY-MM-DD)."""
        t = tables.spend_daily
        stmt = insert(t).values(
            tenant_id=tenant_id,
            day=date.fromisoformat(day),
            model=model,
            cost_micros=cost_micros,
            tokens=tokens,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=[t.c.tenant_id, t.c.day, t.c.model],
            set_={
                "cost_micros": t.c.cost_micros + stmt.excluded.cost_micros,
                "tokens": t.c.tokens + stmt.excluded.tokens,
            },
        )
        async with translate_errors("spend.add_spend"):
            await self._session.execute(stmt)
