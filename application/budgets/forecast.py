"""``GetBudgetStatus``: one budget's live state in its current period (settled spend, holds,
headroom) and the forecast of its spend to the period's end, from the durable ledger's history."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from application.budgets.context import BudgetContext
from application.budgets.reservations import Headroom
from domain.budgets import BudgetStatus, Forecast, ForecastMethod, forecast_spend
from domain.errors import NotFound
from domain.identity import Principal, Role

__all__ = ["BudgetReport", "GetBudgetStatus"]


class BudgetReport(msgspec.Struct, frozen=True):
    status: BudgetStatus
    forecast: Forecast


class GetBudgetStatus:
    def __init__(self, ctx: BudgetContext, *, lookback: timedelta = timedelta(days=7)) -> None:
        self._ctx = ctx
        self._headroom = Headroom(ctx)
        self._lookback = lookback

    async def __call__(
        self, principal: Principal, budget_id: str, *, method: ForecastMethod = ForecastMethod.EWMA
    ) -> BudgetReport:
        principal.require(Role.VIEWER, "read budgets")
        ctx = self._ctx
        now = ctx.clock.now()
        async with ctx.uow() as uow:
            budget = await uow.budgets.get(principal.tenant_id, budget_id)
        if budget is None:
            raise NotFound("budget", budget_id)
        (status,) = await self._headroom.of_budgets(principal.tenant_id, [budget])
        since = min(status.window.start, now - self._lookback)
        async with ctx.uow() as uow:
            history = await uow.ledger.buckets(budget.id, since, now + timedelta(seconds=1))
        forecast = forecast_spend(budget, status.window, status.spent_micros, history, now, method=method, lookback=self._lookback)
        return BudgetReport(status, forecast)
