"""The reservation protocol around one provider call:

    reservation = await budgets.reserve(subject, estimate_micros, task="chat")   # BudgetExceeded
    try:
        ... call the provider ...
    except BaseException:
        await budgets.release(reservation)
        raise
    await budgets.settle(reservation, actual_micros, usage=usage, request_id=request_id)

``Reserve`` holds the estimate against every budget that applies to the request (tenant, its
teams, user, API key; the provider- and model-capped ones of the chosen model), atomically across
replicas: all hold or none does, and a hard budget that would be exceeded rejects the request with
``BudgetExceeded`` naming it. Holds expire after the context's ``reservation_ttl`` (a replica that
crashed mid-call frees its headroom). ``Settle`` replaces the hold with the actual cost (in the
live ledger first, then in the durable one, with the threshold alerts it crosses, once per
period); ``Release`` drops it. Both are idempotent by reservation id, so a retry is harmless.
A live counter that is missing (Redis restarted, key evicted) is rebuilt from the durable ledger
before the operation is retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

import msgspec

from application.budgets.context import BudgetContext, seed_counters
from application.budgets.journal import encode_journal_entry
from application.budgets.ports import (
    LedgerEntry,
    ReserveLine,
    SettleOutcome,
    SettleStatus,
)
from domain.budgets import (
    Budget,
    BudgetStatus,
    BudgetSubject,
    Counter,
    applicable_budgets,
    counter_for,
    crossed_thresholds,
    headroom_fraction,
    window_for,
)
from domain.chat import Usage
from domain.errors import BudgetExceeded, InvalidRequest, Unavailable
from domain.events import BudgetThresholdCrossed

__all__ = ["Headroom", "Release", "Reservation", "Reserve", "Settle", "Settlement"]


class Reservation(msgspec.Struct, frozen=True):
    """A hold on every budget that applied (``counters``, one per budget, widest scope first).
    ``over_soft`` names soft budgets this reservation took past their limit (alert only)."""

    id: str
    tenant_id: str
    subject: BudgetSubject
    amount_micros: int
    reserved_at: datetime
    expires_at: datetime
    counters: tuple[Counter, ...] = ()
    task: str = ""
    over_soft: tuple[str, ...] = ()

    @property
    def budget_ids(self) -> tuple[str, ...]:
        return tuple(c.budget_id for c in self.counters)


class Settlement(msgspec.Struct, frozen=True):
    """What ``Settle`` did: ``duplicate`` when the reservation was settled or released before
    (the live counters did not change); ``alerts``: the threshold events it published."""

    reservation_id: str
    actual_micros: int
    duplicate: bool = False
    alerts: tuple[BudgetThresholdCrossed, ...] = ()


class Reserve:
    def __init__(self, ctx: BudgetContext) -> None:
        self._ctx = ctx

    async def __call__(
        self,
        subject: BudgetSubject,
        amount_micros: int,
        *,
        task: str = "",
        ttl_seconds: float | None = None,
        reservation_id: str | None = None,
    ) -> Reservation:
        if amount_micros < 0:
            raise InvalidRequest.single("amount_micros", "cannot be negative")
        ctx = self._ctx
        ttl = ctx.reservation_ttl if ttl_seconds is None else ttl_seconds
        if ttl <= 0:
            raise InvalidRequest.single("ttl_seconds", "must be positive")
        now = ctx.clock.now()
        rid = reservation_id or ctx.ids.new_id()
        budgets = applicable_budgets(await ctx.directory.budgets(subject.tenant_id), subject)
        counters = tuple(counter_for(b, now) for b in budgets)
        reservation = Reservation(
            id=rid,
            tenant_id=subject.tenant_id,
            subject=subject,
            amount_micros=amount_micros,
            reserved_at=now,
            expires_at=now + timedelta(seconds=ttl),
            counters=counters,
            task=task,
        )
        if not budgets:
            return reservation
        lines = [ReserveLine(c, b.limit_micros, b.hard, amount_micros) for b, c in zip(budgets, counters, strict=True)]
        for _ in range(ctx.seed_attempts):
            outcome = await ctx.ledger.reserve(subject.tenant_id, rid, lines, ttl)
            if outcome.missing:
                await seed_counters(ctx, subject.tenant_id, [counters[i] for i in outcome.missing])
                continue
            if not outcome.admitted:
                raise _exceeded(budgets[outcome.rejected], now)
            return msgspec.structs.replace(reservation, over_soft=tuple(budgets[i].name for i in outcome.over_soft))
        raise Unavailable("budget counters could not be rebuilt; try again")


def _exceeded(budget: Budget, now: datetime) -> BudgetExceeded:
    resets = None if budget.period.is_rolling else window_for(budget.period, now).end
    return BudgetExceeded(
        budget.id, budget.name, scope=budget.describe(), limit_micros=budget.limit_micros, resets_at=resets
    )


class Settle:
    def __init__(self, ctx: BudgetContext) -> None:
        self._ctx = ctx

    async def __call__(
        self,
        reservation: Reservation,
        actual_micros: int,
        *,
        usage: Usage | None = None,
        request_id: str = "",
    ) -> Settlement:
        """Charge ``actual_micros`` (the provider-reported cost; it may exceed the hold) to the
        reservation's budgets and record the entry durably, with its output tokens for the
        per-model predictions. Calendar periods are charged in the period the reservation was
        made in; rolling windows at the moment of settlement."""
        if actual_micros < 0:
            raise InvalidRequest.single("actual_micros", "cannot be negative")
        ctx = self._ctx
        now = ctx.clock.now()
        tenant = reservation.tenant_id
        budgets = {b.id: b for b in await ctx.directory.budgets(tenant)}
        counters = [_settle_counter(c, budgets.get(c.budget_id), now) for c in reservation.counters]
        usage = usage or Usage()
        subject = reservation.subject
        entry = LedgerEntry(
            reservation_id=reservation.id,
            tenant_id=tenant,
            reserved_micros=reservation.amount_micros,
            actual_micros=actual_micros,
            reserved_at=reservation.reserved_at,
            settled_at=now,
            budget_ids=reservation.budget_ids,
            request_id=request_id,
            user_id=subject.user_id,
            api_key_id=subject.api_key_id,
            provider=subject.provider,
            model=subject.model,
            task=reservation.task,
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
        )
        buckets = [(c.budget_id, c.ledger_bucket) for c in counters]
        journal = ctx.journal
        outcome = SettleOutcome(SettleStatus.SETTLED)
        if counters:
            # the entry goes into the live ledger's journal with the settlement itself (one atomic
            # step): should this process die before the durable write below, a drain writes it
            payload = encode_journal_entry(entry, buckets) if journal is not None else b""
            for _ in range(ctx.seed_attempts):
                outcome = await ctx.ledger.settle(tenant, reservation.id, counters, actual_micros, journal=payload)
                if outcome.status is not SettleStatus.MISSING:
                    break
                await seed_counters(ctx, tenant, [counters[i] for i in outcome.missing])
            else:
                raise Unavailable("budget counters could not be rebuilt; try again")
        if outcome.status is SettleStatus.RELEASED:  # it cost nothing, as its caller said then
            return Settlement(reservation.id, 0, duplicate=True)
        await ctx.spend_recorder.record(entry, buckets)
        if journal is not None and counters:
            journal.forget_soon(tenant, reservation.id)  # durable now (trims batch up, off the request path)
        crossings = [
            (budgets[c.budget_id], c, threshold, after)
            for c, (before, after) in zip(counters, outcome.moves, strict=True)
            if c.budget_id in budgets
            for threshold in crossed_thresholds(budgets[c.budget_id].thresholds, budgets[c.budget_id].limit_micros, before, after)
        ]
        alerts: list[BudgetThresholdCrossed] = []
        if crossings:  # rare: a transaction of its own, the latch keeping each alert once per period
            async with ctx.uow() as uow:
                for budget, counter, threshold, after in crossings:
                    if await uow.alerts.first_time(budget.id, counter.alert_key, threshold, after):
                        event = _alert(ctx, budget, counter, threshold, after, now)
                        uow.record(event)
                        alerts.append(event)
                await uow.commit()
        return Settlement(reservation.id, actual_micros, outcome.status is SettleStatus.DUPLICATE, tuple(alerts))


def _settle_counter(reserved: Counter, budget: Budget | None, now: datetime) -> Counter:
    """Where a settlement counts: a calendar period's counter from the reservation; a rolling
    window's current bucket."""
    if reserved.rolling and budget is not None and budget.period.is_rolling:
        return counter_for(budget, now)
    return reserved


def _alert(ctx: BudgetContext, budget: Budget, counter: Counter, threshold: int, spent: int, now: datetime) -> BudgetThresholdCrossed:
    return BudgetThresholdCrossed(
        event_id=ctx.ids.new_id(),
        tenant_id=budget.tenant_id,
        occurred_at=now,
        budget_id=budget.id,
        budget_name=budget.name,
        scope=budget.scope.value,
        scope_id=budget.scope_id,
        period_key=counter.alert_key,
        threshold_percent=threshold,
        limit_micros=budget.limit_micros,
        spent_micros=spent,
        enforcement=budget.enforcement.value,
        provider=budget.provider,
        model=budget.model,
    )


class Release:
    def __init__(self, ctx: BudgetContext) -> None:
        self._ctx = ctx

    async def __call__(self, reservation: Reservation) -> bool:
        """Give the held headroom back (the call failed and cost nothing). False when it had been
        settled or released already."""
        if not reservation.counters:
            return True
        return await self._ctx.ledger.release(reservation.tenant_id, reservation.id, reservation.budget_ids)


class Headroom:
    """Live status of the budgets that apply to a subject, and the headroom cost-aware routing
    reads (the smallest fraction of a limit still free; 1.0 when no budget applies)."""

    def __init__(self, ctx: BudgetContext) -> None:
        self._ctx = ctx

    async def statuses(self, subject: BudgetSubject) -> list[BudgetStatus]:
        budgets = applicable_budgets(await self._ctx.directory.budgets(subject.tenant_id), subject)
        return await self.of_budgets(subject.tenant_id, budgets)

    async def __call__(self, subject: BudgetSubject, *, hard_only: bool = False) -> float:
        return headroom_fraction(await self.statuses(subject), hard_only=hard_only)

    async def for_candidates(
        self, subject: BudgetSubject, candidates: Sequence[tuple[str, str]], *, hard_only: bool = False
    ) -> dict[tuple[str, str], float]:
        """Headroom per (provider, model) candidate, in one round trip to the live ledger."""
        all_budgets = await self._ctx.directory.budgets(subject.tenant_id)
        per: dict[tuple[str, str], list[Budget]] = {}
        union: dict[str, Budget] = {}
        for provider, model in candidates:
            found = applicable_budgets(all_budgets, msgspec.structs.replace(subject, provider=provider, model=model))
            per[(provider, model)] = found
            union.update((b.id, b) for b in found)
        statuses = {s.budget.id: s for s in await self.of_budgets(subject.tenant_id, list(union.values()))}
        return {
            key: headroom_fraction((statuses[b.id] for b in found), hard_only=hard_only) for key, found in per.items()
        }

    async def of_budgets(self, tenant_id: str, budgets: Sequence[Budget]) -> list[BudgetStatus]:
        """Live status of ``budgets`` (of ``tenant_id``) in their current windows."""
        if not budgets:
            return []
        ctx = self._ctx
        now = ctx.clock.now()
        counters = [counter_for(b, now) for b in budgets]
        for _ in range(ctx.seed_attempts):
            outcome = await ctx.ledger.status(tenant_id, counters)
            if not outcome.missing:
                return [
                    BudgetStatus(b, window_for(b.period, now), spent, held)
                    for b, (spent, held) in zip(budgets, outcome.lines, strict=True)
                ]
            await seed_counters(ctx, tenant_id, [counters[i] for i in outcome.missing])
        raise Unavailable("budget counters could not be rebuilt; try again")
