"""Composition of budgets and rate limits (for ``api/bootstrap.py``): Redis for the live ledger and
the GCRA meters (one ``BlockingConnectionPool``: a burst waits for a connection instead of
failing), Postgres for definitions, the durable ledger (group-committed by
``PostgresSpendRecorder``) and usage queries; the use cases; their edges (``BudgetService`` /
``UsageService`` servicers, the ``/v1`` budget, rate-limit and usage routes).

The chat path takes ``guard`` (reserve / settle / release around each provider call) and
``limiter`` (``acquire`` / ``adjust``) from here. ``aclose()`` writes the settlements still queued,
then releases the Redis pool; the backend calls it before it disposes of the engine.
"""

from __future__ import annotations

from dataclasses import dataclass

from litestar import Router
from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.budgets import RedisLiveLedger, RedisRateLimiter
from adapters.postgres.budget_recorder import PostgresSpendRecorder
from adapters.postgres.budget_uow import SqlBudgetUnitOfWorkFactory
from adapters.postgres.usage_queries import SqlUsageReader
from api.grpc.budget import BudgetServicer, UsageServicer
from api.rest.budgets import create_budget_router
from api.settings import Settings
from application.budgets import (
    BudgetContext,
    BudgetDirectory,
    BudgetGuard,
    EnforceRateLimits,
    GetBudgetStatus,
    ManageBudgets,
    ManageRateLimits,
    PredictOutputTokens,
    QueryUsage,
)
from domain.ports import Clock, IdGenerator

__all__ = ["REDIS_MAX_CONNECTIONS", "BudgetModule", "build_budgets"]

REDIS_MAX_CONNECTIONS = 64
REDIS_WAIT_SECONDS = 5.0  # a caller waits this long for a free connection, then gets Unavailable (503)


@dataclass
class BudgetModule:
    ctx: BudgetContext
    guard: BudgetGuard
    limiter: EnforceRateLimits
    budgets: ManageBudgets
    rate_limits: ManageRateLimits
    status: GetBudgetStatus
    usage: QueryUsage
    predict: PredictOutputTokens
    redis: Redis
    recorder: PostgresSpendRecorder | None = None

    def servicers(self) -> tuple[BudgetServicer, UsageServicer]:
        return BudgetServicer(self.budgets, self.rate_limits, self.status), UsageServicer(self.usage, self.ctx.clock)

    def router(self) -> Router:
        return create_budget_router(self.budgets, self.rate_limits, self.status, self.usage, self.ctx.clock)

    async def ping(self) -> None:
        """Raises when Redis cannot be reached (readiness: budgets fail closed without it)."""
        await self.redis.ping()

    async def aclose(self) -> None:
        if self.recorder is not None:
            await self.recorder.aclose()
            self.recorder = None
        await self.redis.aclose()


def build_budgets(
    settings: Settings,
    engine: AsyncEngine,
    *,
    clock: Clock,
    ids: IdGenerator,
    redis: Redis | None = None,
    namespace: str = "lumina",
) -> BudgetModule:
    """Everything from ``settings.redis_url`` (or ``redis``, which the module then owns) and the
    backend's engine. Nothing connects until the first call. ``namespace`` prefixes Redis keys."""
    if redis is None:
        if not settings.redis_url:
            raise ValueError("LUMINA_REDIS_URL is not set: budgets and rate limits need Redis")
        pool = BlockingConnectionPool.from_url(
            settings.redis_url, max_connections=REDIS_MAX_CONNECTIONS, timeout=REDIS_WAIT_SECONDS
        )
        redis = Redis(connection_pool=pool)
    uow = SqlBudgetUnitOfWorkFactory(engine)
    recorder = PostgresSpendRecorder(engine)
    ctx = BudgetContext(
        uow=uow,
        ledger=RedisLiveLedger(redis, namespace=f"{namespace}:budget"),
        clock=clock,
        ids=ids,
        directory=BudgetDirectory(uow, clock),
        recorder=recorder,
    )
    predict = PredictOutputTokens(ctx)
    return BudgetModule(
        ctx=ctx,
        guard=BudgetGuard(ctx, predict=predict),
        limiter=EnforceRateLimits(ctx, RedisRateLimiter(redis, namespace=f"{namespace}:ratelimit")),
        budgets=ManageBudgets(ctx),
        rate_limits=ManageRateLimits(ctx),
        status=GetBudgetStatus(ctx),
        usage=QueryUsage(SqlUsageReader(engine)),
        predict=predict,
        redis=redis,
        recorder=recorder,
    )
