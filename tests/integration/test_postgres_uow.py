"""The PostgreSQL unit of work and repositories against a real, migrated database."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime

import pytest
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.events_codec import decode_event
from adapters.postgres import DatabaseUnavailable, SqlAlchemyUnitOfWorkFactory, create_engine
from application.ports import OutboxMessage
from domain.cost import Price
from domain.events import ChatCompleted
from domain.registry import ModelRoute, ProviderKind, ProviderSpec
from domain.usage import UsageRecord

NOW = datetime(2025, 6, 1, 12, 30, tzinfo=UTC)


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=3)
    yield engine
    await engine.dispose()


@pytest.fixture
def uow(engine: AsyncEngine) -> SqlAlchemyUnitOfWorkFactory:
    return SqlAlchemyUnitOfWorkFactory(engine)


@pytest.fixture(autouse=True)
async def empty_outbox(engine: AsyncEngine) -> AsyncIterator[None]:
    """Start from an empty outbox and leave none of our messages for other tests' relays."""
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM outbox"))
    yield
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM outbox"))


def _usage(request_id: str) -> UsageRecord:
    return UsageRecord(
        request_id=request_id,
        tenant_id="acme",
        provider="openai",
        model="gpt-4o-mini",
        input_tokens=100,
        output_tokens=20,
        cached_input_tokens=40,
        reasoning_tokens=5,
        cost_micros=1234,
        latency_ms=250,
        finish_reason="stop",
        created_at=NOW,
        conversation_id="conv-1",
    )


def _completed(request_id: str) -> ChatCompleted:
    return ChatCompleted(
        event_id=f"evt-{request_id}",
        tenant_id="acme",
        occurred_at=NOW,
        request_id=request_id,
        provider="openai",
        model="gpt-4o-mini",
        input_tokens=100,
        output_tokens=20,
        cost_micros=1234,
        latency_ms=250,
        finish_reason="stop",
    )


def _msg(event_id: str) -> OutboxMessage:
    return OutboxMessage(event_id=event_id, subject=f"lumina.t.test.{event_id}", payload=event_id.encode())


async def _outbox_row(engine: AsyncEngine, event_id: str) -> sa.Row | None:
    async with engine.connect() as conn:
        query = sa.text("SELECT subject, payload, headers, sent_at FROM outbox WHERE event_id = :e")
        return (await conn.execute(query, {"e": event_id})).one_or_none()


async def test_usage_and_its_event_commit_together(
    uow: SqlAlchemyUnitOfWorkFactory, engine: AsyncEngine
) -> None:
    rid = uuid.uuid4().hex
    async with uow() as tx:
        await tx.usage.add(_usage(rid))
        tx.record(_completed(rid))
        await tx.commit()

    async with uow() as tx:
        stored = await tx.usage.get(rid)
    assert stored is not None
    assert dataclasses.asdict(stored) == dataclasses.asdict(_usage(rid))
    row = await _outbox_row(engine, f"evt-{rid}")
    assert row is not None
    assert row.subject == "lumina.acme.chat.completed"
    assert row.sent_at is None
    assert decode_event(bytes(row.payload)) == _completed(rid)


async def test_leaving_without_commit_keeps_neither(
    uow: SqlAlchemyUnitOfWorkFactory, engine: AsyncEngine
) -> None:
    rid = uuid.uuid4().hex
    async with uow() as tx:
        await tx.usage.add(_usage(rid))
        tx.record(_completed(rid))
        await tx.usage.get(rid)  # forces a flush: the row exists inside the transaction

    async with uow() as tx:
        assert await tx.usage.get(rid) is None
    assert await _outbox_row(engine, f"evt-{rid}") is None


async def test_an_exception_rolls_back_state_and_events(
    uow: SqlAlchemyUnitOfWorkFactory, engine: AsyncEngine
) -> None:
    rid = uuid.uuid4().hex
    with pytest.raises(LookupError):
        async with uow() as tx:
            await tx.usage.add(_usage(rid))
            tx.record(_completed(rid))
            await tx.outbox.add(_msg(f"direct-{rid}"))
            raise LookupError("boom")

    async with uow() as tx:
        assert await tx.usage.get(rid) is None
    assert await _outbox_row(engine, f"evt-{rid}") is None
    assert await _outbox_row(engine, f"direct-{rid}") is None


async def test_a_failed_commit_writes_no_event(uow: SqlAlchemyUnitOfWorkFactory, engine: AsyncEngine) -> None:
    rid = uuid.uuid4().hex
    async with uow() as tx:
        await tx.usage.add(_usage(rid))
        await tx.commit()

    with pytest.raises(sa.exc.IntegrityError):
        async with uow() as tx:
            await tx.usage.add(_usage(rid))  # duplicate primary key
            tx.record(_completed(f"{rid}-dup"))
            await tx.commit()
    assert await _outbox_row(engine, f"evt-{rid}-dup") is None


async def test_claim_unsent_in_insertion_order_and_mark_sent(uow: SqlAlchemyUnitOfWorkFactory) -> None:
    # Inserted in an order that differs from the ids' sort order: claims follow insertion.
    ids = [f"order-{c}-{uuid.uuid4().hex[:6]}" for c in "ecadb"]
    async with uow() as tx:
        for event_id in ids:
            await tx.outbox.add(_msg(event_id))
        await tx.commit()

    async with uow() as tx:
        first = await tx.outbox.claim_unsent(3)
        assert [m.event_id for m in first] == ids[:3]
        assert first[0] == _msg(ids[0])
        await tx.outbox.mark_sent([m.event_id for m in first])
        await tx.commit()

    async with uow() as tx:
        rest = await tx.outbox.claim_unsent(10)
    assert [m.event_id for m in rest] == ids[3:]


async def test_concurrent_claimers_get_disjoint_rows(uow: SqlAlchemyUnitOfWorkFactory) -> None:
    ids = [f"skip-{i}-{uuid.uuid4().hex[:6]}" for i in range(6)]
    async with uow() as tx:
        for event_id in ids:
            await tx.outbox.add(_msg(event_id))
        await tx.commit()

    async with uow() as a, uow() as b:
        claimed_a = [m.event_id for m in await a.outbox.claim_unsent(3)]
        claimed_b = [m.event_id for m in await asyncio.wait_for(b.outbox.claim_unsent(10), timeout=5)]
        assert claimed_a == ids[:3]
        assert claimed_b == ids[3:]
        await a.outbox.mark_sent(claimed_a)
        await a.commit()
        # b ends without commit: its claim is released, nothing marked sent

    async with uow() as tx:
        again = [m.event_id for m in await tx.outbox.claim_unsent(10)]
    assert again == ids[3:]


async def test_processed_events_are_idempotent_per_consumer(uow: SqlAlchemyUnitOfWorkFactory) -> None:
    event_id = uuid.uuid4().hex
    async with uow() as tx:
        assert await tx.processed.first_time("memory", event_id) is True
        assert await tx.processed.first_time("memory", event_id) is False
        await tx.commit()

    async with uow() as tx:
        assert await tx.processed.first_time("memory", event_id) is False
        assert await tx.processed.first_time("spend", event_id) is True
        # not committed: "spend" did not really handle it

    async with uow() as tx:
        assert await tx.processed.first_time("spend", event_id) is True


async def test_spend_upsert_adds_up_per_tenant_day_model(
    uow: SqlAlchemyUnitOfWorkFactory, engine: AsyncEngine
) -> None:
    tenant = f"t{uuid.uuid4().hex[:8]}"
    async with uow() as tx:
        await tx.spend.add_spend(tenant, "2025-06-01", "m1", 100, 10)
        await tx.commit()
    async with uow() as tx:
        await tx.spend.add_spend(tenant, "2025-06-01", "m1", 250, 5)
        await tx.spend.add_spend(tenant, "2025-06-01", "m2", 7, 1)
        await tx.spend.add_spend(tenant, "2025-06-02", "m1", 1, 1)
        await tx.commit()

    async with engine.connect() as conn:
        rows = await conn.execute(
            sa.text(
                "SELECT day, model, cost_micros, tokens FROM spend_daily WHERE tenant_id = :t ORDER BY day, model"
            ),
            {"t": tenant},
        )
        got = [tuple(r) for r in rows]
    assert got == [
        (date(2025, 6, 1), "m1", 350, 15),
        (date(2025, 6, 1), "m2", 7, 1),
        (date(2025, 6, 2), "m1", 1, 1),
    ]


async def test_providers_and_models_upsert_and_list_with_price(uow: SqlAlchemyUnitOfWorkFactory) -> None:
    suffix = uuid.uuid4().hex[:8]
    provider = ProviderSpec(name=f"sim-{suffix}", kind=ProviderKind.OPENAI_COMPATIBLE, base_url="http://x/v1")
    route = ModelRoute(
        name=f"model-{suffix}",
        provider=provider.name,
        upstream_model="llama-3",
        price=Price(input_per_mtok=0.15, output_per_mtok=0.6, cached_input_per_mtok=0.075),
    )
    async with uow() as tx:
        await tx.providers.upsert_provider(provider)
        await tx.providers.upsert_model(route)
        await tx.commit()

    async with uow() as tx:
        await tx.providers.upsert_provider(
            ProviderSpec(name=provider.name, kind=ProviderKind.OPENAI, label="simulated", enabled=False)
        )
        await tx.providers.upsert_model(
            ModelRoute(
                name=route.name,
                provider=provider.name,
                upstream_model="llama-3.1",
                price=Price(1.5, 2.5, 0.5),
            )
        )
        await tx.commit()

    async with uow() as tx:
        providers = {p.name: p for p in await tx.providers.list_providers()}
        models = {m.name: m for m in await tx.providers.list_models()}
    got = providers[provider.name]
    assert (got.kind, got.base_url, got.label, got.enabled) == (ProviderKind.OPENAI, None, "simulated", False)
    assert type(got.kind) is ProviderKind
    listed = models[route.name]
    assert (listed.provider, listed.upstream_model, listed.is_default) == (provider.name, "llama-3.1", False)
    assert listed.price == Price(1.5, 2.5, 0.5)


async def test_unreachable_database_raises_database_unavailable(tmp_path: object) -> None:
    engine = create_engine(
        f"postgresql+asyncpg://postgres@/lumina?host={tmp_path}/no-socket-here", pool_size=1
    )
    try:
        with pytest.raises(DatabaseUnavailable):
            async with SqlAlchemyUnitOfWorkFactory(engine)() as tx:
                await tx.usage.get("anything")
    finally:
        await engine.dispose()
