"""Budget repositories in SQLAlchemy Core over the unit of work's ``AsyncSession``: definitions,
the durable spend ledger, the alert latch and rate limits. Rows map to the domain's Structs here.

``SqlSpendLedger.record`` is one statement: the ledger entry is inserted unless it exists
(``ON CONFLICT DO NOTHING``), and only when it was, its cost is added to each budget's bucket
(budgets deleted meanwhile are skipped), rows locked in budget-id order so concurrent settlements
of overlapping budgets never deadlock.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from adapters.postgres import budget_tables as t
from adapters.postgres.errors import translate_errors
from application.budgets.ports import LedgerEntry
from domain.budgets import (
    Budget,
    BudgetScope,
    Enforcement,
    Period,
    PeriodKind,
    RateLimit,
    RateLimitScope,
    SpendPoint,
)
from domain.errors import InvalidRequest

__all__ = ["SqlAlertLatch", "SqlBudgetRepository", "SqlRateLimitRepository", "SqlSpendLedger"]


class _Repo:
    def __init__(self, session: AsyncSession) -> None:
        self._s = session

    async def _exec(self, what: str, stmt: Any, params: Any = None) -> Any:
        async with translate_errors(what):
            return await self._s.execute(stmt, params)


def _budget_values(b: Budget) -> dict[str, Any]:
    return {
        "id": b.id,
        "tenant_id": b.tenant_id,
        "name": b.name,
        "scope": b.scope.value,
        "scope_id": b.scope_id,
        "provider": b.provider,
        "model": b.model,
        "limit_micros": b.limit_micros,
        "period": b.period.kind.value,
        "rolling_seconds": b.period.rolling_seconds,
        "enforcement": b.enforcement.value,
        "thresholds": list(b.thresholds),
        "enabled": b.enabled,
        **({"created_at": b.created_at} if b.created_at else {}),
        **({"updated_at": b.updated_at} if b.updated_at else {}),
    }


def _budget(row: Any) -> Budget:
    return Budget(
        id=row.id,
        tenant_id=row.tenant_id,
        name=row.name,
        scope=BudgetScope(row.scope),
        scope_id=row.scope_id,
        limit_micros=row.limit_micros,
        period=Period(PeriodKind(row.period), row.rolling_seconds),
        enforcement=Enforcement(row.enforcement),
        thresholds=tuple(row.thresholds),
        provider=row.provider,
        model=row.model,
        enabled=row.enabled,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


class SqlBudgetRepository(_Repo):
    async def add(self, budget: Budget) -> None:
        try:
            async with self._s.begin_nested():
                await self._exec("add budget", sa.insert(t.budgets).values(**_budget_values(budget)))
        except IntegrityError as exc:
            raise InvalidRequest.single("name", "the tenant already has a budget of that name") from exc

    async def update(self, budget: Budget) -> bool:
        values = _budget_values(budget)
        values.pop("created_at", None)
        stmt = (
            sa.update(t.budgets)
            .where(t.budgets.c.id == budget.id, t.budgets.c.tenant_id == budget.tenant_id)
            .values(**values)
        )
        try:
            async with self._s.begin_nested():
                result = await self._exec("update budget", stmt)
        except IntegrityError as exc:
            raise InvalidRequest.single("name", "the tenant already has a budget of that name") from exc
        return bool(result.rowcount)

    async def delete(self, tenant_id: str, budget_id: str) -> bool:
        stmt = sa.delete(t.budgets).where(t.budgets.c.id == budget_id, t.budgets.c.tenant_id == tenant_id)
        return bool((await self._exec("delete budget", stmt)).rowcount)

    async def get(self, tenant_id: str, budget_id: str) -> Budget | None:
        stmt = sa.select(t.budgets).where(t.budgets.c.id == budget_id, t.budgets.c.tenant_id == tenant_id)
        row = (await self._exec("get budget", stmt)).first()
        return None if row is None else _budget(row)

    async def list(self, tenant_id: str) -> Sequence[Budget]:
        stmt = sa.select(t.budgets).where(t.budgets.c.tenant_id == tenant_id).order_by(t.budgets.c.name)
        return [_budget(r) for r in await self._exec("list budgets", stmt)]


_RECORD = sa.text(
    """WITH entry AS (
        INSERT INTO budget_ledger (reservation_id, tenant_id, request_id, user_id, api_key_id, provider, model,
                                   task, reserved_micros, actual_micros, input_tokens, output_tokens, budget_ids,
                                   reserved_at, settled_at)
        VALUES (:reservation_id, :tenant_id, :request_id, :user_id, :api_key_id, :provider, :model, :task,
                :reserved_micros, :actual_micros, :input_tokens, :output_tokens, CAST(:budget_ids AS text[]),
                :reserved_at, :settled_at)
        ON CONFLICT (reservation_id) DO NOTHING
        RETURNING 1
    ), spend AS (
        INSERT INTO budget_spend AS s (budget_id, bucket_start, spent_micros, requests)
        SELECT u.b, u.t, :actual_micros, 1
        FROM unnest(CAST(:ids AS text[]), CAST(:buckets AS timestamptz[])) AS u(b, t)
        JOIN budgets ON budgets.id = u.b
        WHERE EXISTS (SELECT 1 FROM entry)
        ORDER BY u.b, u.t
        ON CONFLICT (budget_id, bucket_start)
        DO UPDATE SET spent_micros = s.spent_micros + EXCLUDED.spent_micros, requests = s.requests + 1
    )
    SELECT count(*) FROM entry"""
)


class SqlSpendLedger(_Repo):
    async def record(self, entry: LedgerEntry, buckets: Sequence[tuple[str, datetime]]) -> bool:
        params = {
            "reservation_id": entry.reservation_id,
            "tenant_id": entry.tenant_id,
            "request_id": entry.request_id,
            "user_id": entry.user_id,
            "api_key_id": entry.api_key_id,
            "provider": entry.provider,
            "model": entry.model,
            "task": entry.task,
            "reserved_micros": entry.reserved_micros,
            "actual_micros": entry.actual_micros,
            "input_tokens": entry.input_tokens,
            "output_tokens": entry.output_tokens,
            "budget_ids": list(entry.budget_ids),
            "reserved_at": entry.reserved_at,
            "settled_at": entry.settled_at,
            "ids": [b for b, _ in buckets],
            "buckets": [at for _, at in buckets],
        }
        result = await self._exec("record settlement", _RECORD, params)
        return bool(result.scalar_one())

    async def spent(self, budget_id: str, start: datetime, end: datetime) -> int:
        s = t.budget_spend
        stmt = sa.select(sa.func.coalesce(sa.func.sum(s.c.spent_micros), 0)).where(
            s.c.budget_id == budget_id, s.c.bucket_start >= start, s.c.bucket_start < end
        )
        return int((await self._exec("read spend", stmt)).scalar_one())

    async def buckets(self, budget_id: str, start: datetime, end: datetime) -> Sequence[SpendPoint]:
        s = t.budget_spend
        stmt = (
            sa.select(s.c.bucket_start, s.c.spent_micros)
            .where(s.c.budget_id == budget_id, s.c.bucket_start >= start, s.c.bucket_start < end)
            .order_by(s.c.bucket_start)
        )
        return [SpendPoint(r.bucket_start, r.spent_micros) for r in await self._exec("read spend history", stmt)]

    async def output_tokens(self, model: str, task: str, since: datetime, limit: int) -> Sequence[int]:
        g = t.budget_ledger
        stmt = (
            sa.select(g.c.output_tokens)
            .where(g.c.model == model, g.c.task == task, g.c.settled_at >= since)
            .order_by(g.c.settled_at.desc())
            .limit(limit)
        )
        return [r.output_tokens for r in await self._exec("read output tokens", stmt)]


class SqlAlertLatch(_Repo):
    async def first_time(self, budget_id: str, period_key: str, threshold: int, spent_micros: int) -> bool:
        stmt = (
            insert(t.budget_alerts)
            .values(budget_id=budget_id, period_key=period_key, threshold=threshold, spent_micros=spent_micros)
            .on_conflict_do_nothing()
            .returning(t.budget_alerts.c.threshold)
        )
        return (await self._exec("latch alert", stmt)).first() is not None


def _rate_limit(row: Any) -> RateLimit:
    return RateLimit(
        id=row.id,
        tenant_id=row.tenant_id,
        scope=RateLimitScope(row.scope),
        scope_id=row.scope_id,
        requests_per_minute=row.requests_per_minute,
        tokens_per_minute=row.tokens_per_minute,
        burst_requests=row.burst_requests,
        burst_tokens=row.burst_tokens,
    )


class SqlRateLimitRepository(_Repo):
    async def put(self, limit: RateLimit) -> None:
        r = t.rate_limits
        values = {
            "requests_per_minute": limit.requests_per_minute,
            "tokens_per_minute": limit.tokens_per_minute,
            "burst_requests": limit.burst_requests,
            "burst_tokens": limit.burst_tokens,
        }
        stmt = (
            insert(r)
            .values(id=limit.id, tenant_id=limit.tenant_id, scope=limit.scope.value, scope_id=limit.scope_id, **values)
            .on_conflict_do_update(constraint="uq_rate_limits_tenant_scope", set_=values)
        )
        await self._exec("put rate limit", stmt)

    async def delete(self, tenant_id: str, limit_id: str) -> bool:
        r = t.rate_limits
        stmt = sa.delete(r).where(r.c.id == limit_id, r.c.tenant_id == tenant_id)
        return bool((await self._exec("delete rate limit", stmt)).rowcount)

    async def list(self, tenant_id: str) -> Sequence[RateLimit]:
        r = t.rate_limits
        stmt = sa.select(r).where(r.c.tenant_id == tenant_id).order_by(r.c.scope, r.c.scope_id)
        return [_rate_limit(row) for row in await self._exec("list rate limits", stmt)]
