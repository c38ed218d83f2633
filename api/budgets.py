"""Composition of budgets and rate limits (for ``api/bootstrap.py``): Redis for the live ledger and
the GCRA meters (one ``BlockingConnectionPool``: a burst waits for a connection instead of
failing), Postgres for definitions, the durable ledger (group-committed by
``PostgresSpendRecorder``) and usage queries; the use cases; their edges (``BudgetService`` /
``UsageService`` servicers, the ``/v1`` budget, rate-limit and usage routes).

The edges' shared decoding lives here too: ``budget_draft``, ``rate_limit_draft`` and
``usage_query`` turn what a gRPC request or a REST body / query says (enum values as their
lower-case names, "" when unset) into the use cases' inputs, with every problem reported at once
and named as the request names it; ``fields_under`` renames the fields of an ``InvalidRequest``.
The edges only map their wire types to those arguments.

The chat path takes ``guard`` (reserve / settle / release around each provider call) and
``limiter`` (``acquire`` / ``adjust``) from here. ``start()`` drains the spend journal (settled
entries an earlier process left before writing them to Postgres) and keeps draining it in the
background; ``aclose()`` stops that, writes the settlements still queued, then releases the Redis
pool; the backend calls it before it disposes of the engine.
"""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.budgets import RedisLiveLedger, RedisRateLimiter
from adapters.postgres.budget_recorder import PostgresSpendRecorder
from adapters.postgres.budget_uow import SqlBudgetUnitOfWorkFactory
from adapters.postgres.usage_queries import SqlUsageReader
from api.settings import Settings
from application.budgets import (
    BudgetContext,
    BudgetDirectory,
    BudgetDraft,
    BudgetGuard,
    DrainSpendJournal,
    EnforceRateLimits,
    GetBudgetStatus,
    JournalDrainer,
    ManageBudgets,
    ManageRateLimits,
    PredictOutputTokens,
    QueryUsage,
    RateLimitDraft,
)
from application.budgets.ports import TimeBucket, UsageDimension
from domain.budgets import BudgetScope, Enforcement, Period, PeriodKind, RateLimitScope
from domain.errors import FieldViolation, InvalidRequest
from domain.ports import Clock, IdGenerator

if TYPE_CHECKING:
    from litestar import Router

    from api.grpc.budget import BudgetServicer, UsageServicer

__all__ = [
    "BUDGET_RENAMES",
    "DEFAULT_THRESHOLDS",
    "DEFAULT_USAGE_LIMIT",
    "DEFAULT_USAGE_SPAN",
    "REDIS_MAX_CONNECTIONS",
    "BudgetModule",
    "UsageParams",
    "budget_draft",
    "build_budgets",
    "fields_under",
    "rate_limit_draft",
    "usage_query",
]

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
    ledger: RedisLiveLedger | None = None
    drainer: JournalDrainer | None = None

    def servicers(self) -> tuple[BudgetServicer, UsageServicer]:
        from api.grpc.budget import BudgetServicer, UsageServicer

        return BudgetServicer(self.budgets, self.rate_limits, self.status), UsageServicer(self.usage, self.ctx.clock)

    def router(self) -> Router:
        from api.rest.budgets import create_budget_router

        return create_budget_router(self.budgets, self.rate_limits, self.status, self.usage, self.ctx.clock)

    async def ping(self) -> None:
        """Raises when Redis cannot be reached (readiness: budgets fail closed without it)."""
        await self.redis.ping()

    async def start(self) -> None:
        if self.drainer is not None:
            await self.drainer.start()

    async def aclose(self) -> None:
        if self.drainer is not None:
            await self.drainer.aclose()
        if self.recorder is not None:
            await self.recorder.aclose()
            self.recorder = None
        if self.ledger is not None:
            await self.ledger.flush()  # journal trims in flight (a lost one is drained again, harmlessly)
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
    ledger = RedisLiveLedger(redis, namespace=f"{namespace}:budget")
    ctx = BudgetContext(
        uow=uow,
        ledger=ledger,
        clock=clock,
        ids=ids,
        directory=BudgetDirectory(uow, clock),
        recorder=recorder,
        journal=ledger,  # settled entries wait in Redis until they are in Postgres
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
        ledger=ledger,
        drainer=JournalDrainer(DrainSpendJournal(ctx, ledger)),
    )


# --- the edges' shared decoding -----------------------------------------------------------------

E = TypeVar("E", bound=enum.Enum)

DEFAULT_THRESHOLDS = (50, 80, 100)
"""Alert thresholds (percent of the limit) of a budget defined without any."""
DEFAULT_USAGE_SPAN = timedelta(days=30)
"""A usage query without a start covers this much before its end."""
DEFAULT_USAGE_LIMIT = 10_000
"""Rows of a usage query that names no limit."""
_BUDGET_RENAMES = {"period.rolling_seconds": "rolling_seconds"}


@contextlib.contextmanager
def fields_under(prefix: str, renames: Mapping[str, str] | None = None) -> Iterator[None]:
    """Re-raise ``InvalidRequest`` with its fields named as the request names them: ``renames``
    first (a domain name -> the request's), then ``prefix`` in front."""
    try:
        yield
    except InvalidRequest as exc:
        names = renames or {}
        raise InvalidRequest(
            [FieldViolation(prefix + names.get(v.field, v.field), v.description) for v in exc.violations]
        ) from None


def _choice(kind: type[E], name: str, field: str, problems: list[FieldViolation], default: E | None = None) -> E | None:
    """``kind``'s member called ``name`` ("" for unset: ``default``, else "required")."""
    if not name:
        if default is None:
            problems.append(FieldViolation(field, "required"))
        return default
    try:
        return kind(name)
    except ValueError:
        choices = ", ".join(str(m.value) for m in kind)
        problems.append(FieldViolation(field, f"unknown value {name} (one of {choices})"))
        return None


def budget_draft(
    *,
    name: str,
    scope: str,
    limit_micros: int,
    period: str,
    scope_id: str = "",
    rolling_seconds: int = 0,
    enforcement: str = "",
    thresholds: Sequence[int] | None = None,
    provider: str = "",
    model: str = "",
    enabled: bool = True,
) -> BudgetDraft:
    """A budget definition as ``ManageBudgets`` takes it. ``enforcement`` defaults to hard,
    ``thresholds`` (None) to ``DEFAULT_THRESHOLDS``. ``InvalidRequest`` names the fields as the
    request does (``rolling_seconds``), every problem at once; wrap the use case call in
    ``fields_under("", BUDGET_RENAMES)`` (or with the edge's prefix) for its own checks."""
    problems: list[FieldViolation] = []
    scope_v = _choice(BudgetScope, scope, "scope", problems)
    period_v = _choice(PeriodKind, period, "period", problems)
    enforcement_v = _choice(Enforcement, enforcement, "enforcement", problems, default=Enforcement.HARD)
    if problems or scope_v is None or period_v is None or enforcement_v is None:
        raise InvalidRequest(problems)
    with fields_under("", _BUDGET_RENAMES):
        span = Period(period_v, rolling_seconds=rolling_seconds)
    return BudgetDraft(
        name=name, scope=scope_v, scope_id=scope_id, limit_micros=limit_micros, period=span, enforcement=enforcement_v,
        thresholds=DEFAULT_THRESHOLDS if thresholds is None else tuple(thresholds), provider=provider, model=model,
        enabled=enabled,
    )


BUDGET_RENAMES = _BUDGET_RENAMES
"""Domain field names -> the edges' (a budget's period length is ``rolling_seconds`` there)."""


def rate_limit_draft(
    *,
    scope: str,
    scope_id: str = "",
    requests_per_minute: int = 0,
    tokens_per_minute: int = 0,
    burst_requests: int = 0,
    burst_tokens: int = 0,
) -> RateLimitDraft:
    """A rate limit as ``ManageRateLimits.put`` takes it; ``InvalidRequest`` for an unknown scope."""
    problems: list[FieldViolation] = []
    scope_v = _choice(RateLimitScope, scope, "scope", problems)
    if problems or scope_v is None:
        raise InvalidRequest(problems)
    return RateLimitDraft(
        scope=scope_v, scope_id=scope_id, requests_per_minute=requests_per_minute, tokens_per_minute=tokens_per_minute,
        burst_requests=burst_requests, burst_tokens=burst_tokens,
    )


@dataclass(frozen=True, slots=True)
class UsageParams:
    """A usage query, decoded: ``QueryUsage``'s keyword arguments (``as_kwargs``)."""

    start: datetime
    end: datetime
    group_by: list[UsageDimension]
    bucket: TimeBucket | None
    filters: dict[UsageDimension, str]
    limit: int

    def as_kwargs(self) -> dict[str, object]:
        return {
            "start": self.start, "end": self.end, "group_by": self.group_by, "bucket": self.bucket,
            "filters": self.filters, "limit": self.limit,
        }


def usage_query(
    *,
    now: datetime,
    start: datetime | None = None,
    end: datetime | None = None,
    group_by: Sequence[tuple[str, str]] = (),
    bucket: tuple[str, str] | None = None,
    filters: Sequence[tuple[str, str, str]] = (),
    limit: int | None = None,
    problems: Sequence[FieldViolation] = (),
) -> UsageParams:
    """Decode a usage query: ``group_by`` as (field, dimension name) pairs, ``bucket`` as (field,
    bucket name), ``filters`` as (field, dimension name, value); ``end`` defaults to ``now``,
    ``start`` to ``DEFAULT_USAGE_SPAN`` before the end, ``limit`` (None or 0) to
    ``DEFAULT_USAGE_LIMIT``. ``problems``: the edge's own (times it could not read); every
    problem is raised at once as ``InvalidRequest``."""
    found = list(problems)
    dims = [_choice(UsageDimension, name, field, found) for field, name in group_by]
    chosen_bucket = None
    if bucket is not None and bucket[1]:
        chosen_bucket = _choice(TimeBucket, bucket[1], bucket[0], found)
    chosen: dict[UsageDimension, str] = {}
    for field, name, value in filters:
        dim = _choice(UsageDimension, name, field, found)
        if dim is None:
            continue
        if dim in chosen:
            found.append(FieldViolation(field, "a dimension is filtered twice"))
        chosen[dim] = value
    if found:
        raise InvalidRequest(found)
    end = end or now
    return UsageParams(
        start=start or end - DEFAULT_USAGE_SPAN, end=end, group_by=[d for d in dims if d is not None],
        bucket=chosen_bucket, filters=chosen, limit=limit or DEFAULT_USAGE_LIMIT,
    )
