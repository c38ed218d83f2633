"""What the budget use cases share, built once by the composition root, and the budget directory:
each tenant's budget and rate-limit definitions, cached for a few seconds (``ttl_seconds``) so the
hot path reads Postgres once per tenant per TTL, not once per request. Changes made through this
replica's ``ManageBudgets`` invalidate its cache at once; other replicas see them within the TTL."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from application.budgets.ports import (
    BudgetUnitOfWorkFactory,
    LedgerEntry,
    LiveLedger,
    SpendJournal,
    SpendRecorder,
)
from domain.budgets import Budget, Counter, RateLimit
from domain.ports import Clock, IdGenerator

__all__ = ["BudgetContext", "BudgetDirectory", "UnitOfWorkSpendRecorder", "seed_counters"]


class BudgetDirectory:
    def __init__(self, uow: BudgetUnitOfWorkFactory, clock: Clock, ttl_seconds: float = 5.0) -> None:
        self._uow = uow
        self._clock = clock
        self._ttl = ttl_seconds
        self._cache: dict[str, tuple[float, Sequence[Budget], Sequence[RateLimit]]] = {}
        self._loading: dict[str, asyncio.Future[tuple[Sequence[Budget], Sequence[RateLimit]]]] = {}

    async def budgets(self, tenant_id: str) -> Sequence[Budget]:
        return (await self._get(tenant_id))[0]

    async def rate_limits(self, tenant_id: str) -> Sequence[RateLimit]:
        return (await self._get(tenant_id))[1]

    def invalidate(self, tenant_id: str) -> None:
        self._cache.pop(tenant_id, None)

    async def _get(self, tenant_id: str) -> tuple[Sequence[Budget], Sequence[RateLimit]]:
        hit = self._cache.get(tenant_id)
        if hit is not None and self._clock.monotonic() - hit[0] < self._ttl:
            return hit[1], hit[2]
        pending = self._loading.get(tenant_id)
        if pending is not None:  # one load per tenant at a time; the others wait for it
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[Sequence[Budget], Sequence[RateLimit]]] = asyncio.get_running_loop().create_future()
        self._loading[tenant_id] = future
        try:
            started = self._clock.monotonic()
            async with self._uow() as uow:
                budgets = tuple(await uow.budgets.list(tenant_id))
                limits = tuple(await uow.rate_limits.list(tenant_id))
            self._cache[tenant_id] = (started, budgets, limits)
            future.set_result((budgets, limits))
            return budgets, limits
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody logs "never retrieved"
            raise
        finally:
            self._loading.pop(tenant_id, None)


class UnitOfWorkSpendRecorder:
    """``SpendRecorder`` over the unit of work: one transaction per settlement."""

    def __init__(self, uow: BudgetUnitOfWorkFactory) -> None:
        self._uow = uow

    async def record(self, entry: LedgerEntry, buckets: Sequence[tuple[str, datetime]]) -> None:
        async with self._uow() as uow:
            await uow.ledger.record(entry, buckets)
            await uow.commit()


@dataclass(frozen=True, slots=True)
class BudgetContext:
    """``reservation_ttl``: seconds a hold lives unless settled or released (a crashed replica's
    holds free their headroom after it). ``recorder``: how settled entries reach the durable
    ledger (default: a unit of work each; the composition root may install group commit).
    ``journal``: where the live ledger keeps settled entries until they are durable (None: no
    journal; a crash between the two writes loses that entry from the durable ledger)."""

    uow: BudgetUnitOfWorkFactory
    ledger: LiveLedger
    clock: Clock
    ids: IdGenerator
    directory: BudgetDirectory
    reservation_ttl: float = 600.0
    seed_attempts: int = 3
    recorder: SpendRecorder | None = None
    journal: SpendJournal | None = None

    @property
    def spend_recorder(self) -> SpendRecorder:
        return self.recorder or UnitOfWorkSpendRecorder(self.uow)


async def seed_counters(ctx: BudgetContext, tenant_id: str, counters: Sequence[Counter]) -> None:
    """Rebuild missing live counters from the durable ledger (after a Redis restart or eviction)."""
    async with ctx.uow() as uow:
        values: list[int | dict[int, int]] = []
        for c in counters:
            if c.rolling:
                points = await uow.ledger.buckets(c.budget_id, c.window_start, c.window_end)
                per_bucket: dict[int, int] = {}
                for p in points:
                    index = int((p.at - c.bucket_start(0)).total_seconds()) // c.bucket_seconds
                    per_bucket[index] = per_bucket.get(index, 0) + p.micros
                values.append(per_bucket)
            else:
                values.append(await uow.ledger.spent(c.budget_id, c.window_start, c.window_end))
    for c, value in zip(counters, values, strict=True):
        await ctx.ledger.seed(tenant_id, c, value)
