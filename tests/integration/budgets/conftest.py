"""Budgets on real Postgres (migrated) and real Redis. A ``Replica`` is what one backend process
would hold: its own Redis connection pool, its own Postgres engine, its own budget directory and
use cases. Each test works in a tenant and a Redis namespace of its own (the Redis may be shared
with other test runs)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.budgets import RedisLiveLedger, RedisRateLimiter
from adapters.postgres import create_engine
from adapters.postgres.budget_recorder import PostgresSpendRecorder
from adapters.postgres.budget_uow import SqlBudgetUnitOfWorkFactory
from adapters.system import SystemClock, TimeOrderedIds
from application.budgets import (
    BudgetContext,
    BudgetDirectory,
    BudgetDraft,
    BudgetGuard,
    EnforceRateLimits,
    ManageBudgets,
)
from domain.budgets import Budget
from domain.identity import Principal, PrincipalKind, Role


@dataclass
class Replica:
    redis: Redis
    engine: AsyncEngine
    ctx: BudgetContext
    guard: BudgetGuard
    limits: EnforceRateLimits
    ledger: RedisLiveLedger
    recorder: PostgresSpendRecorder

    async def close(self) -> None:
        await self.recorder.aclose()
        await self.redis.aclose()
        await self.engine.dispose()


@dataclass
class Scope:
    tenant: str
    namespace: str
    database_url: str
    redis_url: str

    @property
    def admin(self) -> Principal:
        return Principal(tenant_id=self.tenant, user_id="admin", role=Role.ADMIN, kind=PrincipalKind.USER, credential_id="s")


def build_replica(scope: Scope, *, pool_size: int = 8, reservation_ttl: float = 600.0) -> Replica:
    # a blocking pool: beyond 32 connections, callers wait for one instead of failing
    redis = Redis(connection_pool=BlockingConnectionPool.from_url(scope.redis_url, max_connections=32, timeout=20))
    engine = create_engine(scope.database_url, pool_size=pool_size)
    uow = SqlBudgetUnitOfWorkFactory(engine)
    clock = SystemClock()
    ledger = RedisLiveLedger(redis, namespace=f"{scope.namespace}:budget")
    recorder = PostgresSpendRecorder(engine)  # as the composition root would wire it: group commit
    ctx = BudgetContext(
        uow=uow,
        ledger=ledger,
        clock=clock,
        ids=TimeOrderedIds(),
        directory=BudgetDirectory(uow, clock, ttl_seconds=5.0),
        reservation_ttl=reservation_ttl,
        recorder=recorder,
        journal=ledger,
    )
    limiter = RedisRateLimiter(redis, namespace=f"{scope.namespace}:rl")
    return Replica(redis, engine, ctx, BudgetGuard(ctx), EnforceRateLimits(ctx, limiter), ledger, recorder)


@pytest.fixture
async def scope(database_url: str, redis_url: str) -> AsyncIterator[Scope]:
    tag = uuid.uuid4().hex[:10]
    s = Scope(tenant=f"t-{tag}", namespace=f"lumina-test:{tag}", database_url=database_url, redis_url=redis_url)
    yield s
    redis = Redis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"{s.namespace}:*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM outbox WHERE subject LIKE :s"), {"s": f"lumina.{s.tenant}.%"})
            await conn.execute(sa.text("DELETE FROM budget_ledger WHERE tenant_id = :t"), {"t": s.tenant})
            await conn.execute(sa.text("DELETE FROM budgets WHERE tenant_id = :t"), {"t": s.tenant})
            await conn.execute(sa.text("DELETE FROM rate_limits WHERE tenant_id = :t"), {"t": s.tenant})
    finally:
        await engine.dispose()


@pytest.fixture
async def replicas(scope: Scope) -> AsyncIterator[Callable[..., Replica]]:
    made: list[Replica] = []

    def make(**kwargs: object) -> Replica:
        replica = build_replica(scope, **kwargs)  # type: ignore[arg-type]
        made.append(replica)
        return replica

    yield make
    for replica in made:
        await replica.close()


@pytest.fixture
def create_budget(scope: Scope) -> Callable[[Replica, BudgetDraft], Awaitable[Budget]]:
    async def create(replica: Replica, draft: BudgetDraft) -> Budget:
        return await ManageBudgets(replica.ctx).create(scope.admin, draft)

    return create
