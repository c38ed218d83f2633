"""``ManageBudgets`` and ``ManageRateLimits``: definitions per tenant. Tenant admins change them;
any member of the tenant may read them. Every change invalidates this replica's directory cache
(other replicas pick it up within the directory's TTL)."""

from __future__ import annotations

from datetime import datetime

import msgspec

from application.budgets.context import BudgetContext
from domain.budgets import (
    Budget,
    BudgetScope,
    Enforcement,
    Period,
    RateLimit,
    RateLimitScope,
)
from domain.errors import NotFound
from domain.identity import Principal, Role

__all__ = ["BudgetDraft", "ManageBudgets", "ManageRateLimits", "RateLimitDraft"]


class BudgetDraft(msgspec.Struct, frozen=True):
    """A budget as a caller describes it (the id, tenant and timestamps are the server's).
    ``scope_id`` may be left empty for a tenant budget."""

    name: str
    scope: BudgetScope
    limit_micros: int
    period: Period
    scope_id: str = ""
    enforcement: Enforcement = Enforcement.HARD
    thresholds: tuple[int, ...] = (50, 80, 100)
    provider: str = ""
    model: str = ""
    enabled: bool = True


class RateLimitDraft(msgspec.Struct, frozen=True):
    scope: RateLimitScope
    scope_id: str = ""
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    burst_requests: int = 0
    burst_tokens: int = 0


class ManageBudgets:
    def __init__(self, ctx: BudgetContext) -> None:
        self._ctx = ctx

    def _build(self, principal: Principal, budget_id: str, draft: BudgetDraft, created_at: datetime | None = None) -> Budget:
        now = self._ctx.clock.now()
        scope_id = draft.scope_id or (principal.tenant_id if draft.scope is BudgetScope.TENANT else "")
        return Budget(
            id=budget_id,
            tenant_id=principal.tenant_id,
            name=draft.name.strip(),
            scope=draft.scope,
            scope_id=scope_id,
            limit_micros=draft.limit_micros,
            period=draft.period,
            enforcement=draft.enforcement,
            thresholds=tuple(draft.thresholds),
            provider=draft.provider,
            model=draft.model,
            enabled=draft.enabled,
            created_at=created_at or now,
            updated_at=now,
        )

    async def create(self, principal: Principal, draft: BudgetDraft) -> Budget:
        principal.require(Role.ADMIN, "create budgets")
        budget = self._build(principal, self._ctx.ids.new_id(), draft)
        async with self._ctx.uow() as uow:
            await uow.budgets.add(budget)
            await uow.commit()
        self._ctx.directory.invalidate(principal.tenant_id)
        return budget

    async def update(self, principal: Principal, budget_id: str, draft: BudgetDraft) -> Budget:
        principal.require(Role.ADMIN, "change budgets")
        async with self._ctx.uow() as uow:
            current = await uow.budgets.get(principal.tenant_id, budget_id)
            if current is None:
                raise NotFound("budget", budget_id)
            budget = self._build(principal, budget_id, draft, current.created_at)
            await uow.budgets.update(budget)
            await uow.commit()
        self._ctx.directory.invalidate(principal.tenant_id)
        return budget

    async def delete(self, principal: Principal, budget_id: str) -> None:
        principal.require(Role.ADMIN, "delete budgets")
        async with self._ctx.uow() as uow:
            if not await uow.budgets.delete(principal.tenant_id, budget_id):
                raise NotFound("budget", budget_id)
            await uow.commit()
        self._ctx.directory.invalidate(principal.tenant_id)

    async def get(self, principal: Principal, budget_id: str) -> Budget:
        principal.require(Role.VIEWER, "read budgets")
        async with self._ctx.uow() as uow:
            budget = await uow.budgets.get(principal.tenant_id, budget_id)
        if budget is None:
            raise NotFound("budget", budget_id)
        return budget

    async def list(self, principal: Principal) -> list[Budget]:
        principal.require(Role.VIEWER, "read budgets")
        async with self._ctx.uow() as uow:
            return list(await uow.budgets.list(principal.tenant_id))


class ManageRateLimits:
    def __init__(self, ctx: BudgetContext) -> None:
        self._ctx = ctx

    async def put(self, principal: Principal, draft: RateLimitDraft) -> RateLimit:
        """Set the limit of one node (tenant, team, user, key or model), replacing its previous one."""
        principal.require(Role.ADMIN, "set rate limits")
        scope_id = draft.scope_id or (principal.tenant_id if draft.scope is RateLimitScope.TENANT else "")
        async with self._ctx.uow() as uow:
            existing = next(
                (r for r in await uow.rate_limits.list(principal.tenant_id) if (r.scope, r.scope_id) == (draft.scope, scope_id)),
                None,
            )
            limit = RateLimit(
                id=existing.id if existing else self._ctx.ids.new_id(),
                tenant_id=principal.tenant_id,
                scope=draft.scope,
                scope_id=scope_id,
                requests_per_minute=draft.requests_per_minute,
                tokens_per_minute=draft.tokens_per_minute,
                burst_requests=draft.burst_requests,
                burst_tokens=draft.burst_tokens,
            )
            await uow.rate_limits.put(limit)
            await uow.commit()
        self._ctx.directory.invalidate(principal.tenant_id)
        return limit

    async def delete(self, principal: Principal, limit_id: str) -> None:
        principal.require(Role.ADMIN, "delete rate limits")
        async with self._ctx.uow() as uow:
            if not await uow.rate_limits.delete(principal.tenant_id, limit_id):
                raise NotFound("rate limit", limit_id)
            await uow.commit()
        self._ctx.directory.invalidate(principal.tenant_id)

    async def list(self, principal: Principal) -> list[RateLimit]:
        principal.require(Role.VIEWER, "read rate limits")
        async with self._ctx.uow() as uow:
            return list(await uow.rate_limits.list(principal.tenant_id))
