"""THE budget test: 1,000 concurrent reservations, from several replicas with their own Redis
connections and Postgres engines, against a hard budget that affords exactly 100 — real Redis, real
Postgres. Plus release, expiry, re-seeding after Redis loses the counters, idempotent settlement
and the once-per-period alerts, on the same real stack."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import pytest
import sqlalchemy as sa

from adapters.events_codec import decode_event
from api.errors import map_error
from application.budgets import BudgetDraft, Reservation
from domain.budgets import Budget, BudgetScope, BudgetSubject, Enforcement, Period
from domain.chat import Usage
from domain.errors import BudgetExceeded
from domain.events import BudgetThresholdCrossed
from tests.integration.budgets.conftest import Replica, Scope

COST = 1_000  # micro-dollars per request
AFFORDS = 100

CreateBudget = Callable[[Replica, BudgetDraft], Awaitable[Budget]]


def hard(name: str, units: int, **kw: object) -> BudgetDraft:
    return BudgetDraft(name=name, scope=kw.pop("scope", BudgetScope.TENANT), limit_micros=units * COST,  # type: ignore[arg-type]
                       period=kw.pop("period", Period.daily()), **kw)  # type: ignore[arg-type]


async def _request(replica: Replica, subject: BudgetSubject, settle: bool = True) -> Reservation | BudgetExceeded:
    try:
        reservation = await replica.guard.reserve(subject, COST, task="chat")
    except BudgetExceeded as exc:
        return exc
    if settle:
        await replica.guard.settle(reservation, COST, usage=Usage(100, 50), request_id=reservation.id)
    return reservation


async def _db_spend(replica: Replica, budget_id: str) -> tuple[int, int]:
    async with replica.engine.connect() as conn:
        spent = await conn.scalar(sa.text("SELECT coalesce(sum(spent_micros), 0) FROM budget_spend WHERE budget_id = :b"), {"b": budget_id})
        entries = await conn.scalar(sa.text("SELECT count(*) FROM budget_ledger WHERE :b = ANY(budget_ids)"), {"b": budget_id})
    return int(spent or 0), int(entries or 0)


async def _alerts(replica: Replica, tenant: str) -> list[BudgetThresholdCrossed]:
    async with replica.engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT payload FROM outbox WHERE subject = :s ORDER BY id"),
                                  {"s": f"lumina.{tenant}.budget.threshold_crossed"})
        return [decode_event(r.payload) for r in rows]  # type: ignore[misc]


async def test_1000_concurrent_reservations_from_three_replicas_never_exceed_a_hard_budget(
    scope: Scope, replicas: Callable[..., Replica], create_budget: CreateBudget
) -> None:
    fleet = [replicas() for _ in range(3)]
    budget = await create_budget(fleet[0], hard("company", AFFORDS))
    subject = BudgetSubject(scope.tenant, user_id="ann", provider="sim", model="sim-small")
    for replica in fleet:  # each has read the definitions: all three race from the first request
        assert (await replica.guard.statuses(subject))[0].spent_micros == 0

    results = await asyncio.gather(*(_request(fleet[i % 3], subject) for i in range(1000)), return_exceptions=True)

    unexpected = [r for r in results if isinstance(r, BaseException) and not isinstance(r, BudgetExceeded)]
    assert unexpected == []
    admitted = [(i % 3, r) for i, r in enumerate(results) if isinstance(r, Reservation)]
    rejected = [r for r in results if isinstance(r, BudgetExceeded)]
    assert len(admitted) == AFFORDS and len(rejected) == 1000 - AFFORDS
    assert len({r.id for _, r in admitted}) == AFFORDS
    # the replicas shared the budget: more than one of them admitted requests
    assert len({replica for replica, _ in admitted}) >= 2
    for exc in rejected:
        assert exc.budget_id == budget.id and "'company'" in exc.message
        mapped = map_error(exc)
        assert (mapped.grpc_code, mapped.http_status) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 429)
    spent, entries = await _db_spend(fleet[1], budget.id)
    assert spent == AFFORDS * COST <= budget.limit_micros and entries == AFFORDS
    (live,) = await fleet[2].guard.statuses(subject)
    assert (live.spent_micros, live.held_micros) == (AFFORDS * COST, 0)
    # the thresholds fired once each, whichever replica's settlement crossed them
    # (in commit order, which concurrent settlements need not keep)
    assert sorted((a.threshold_percent, a.budget_id) for a in await _alerts(fleet[0], scope.tenant)) == [
        (50, budget.id), (80, budget.id), (100, budget.id)]


async def test_concurrent_reservations_across_levels_are_all_or_nothing(
    scope: Scope, replicas: Callable[..., Replica], create_budget: CreateBudget
) -> None:
    fleet = [replicas(), replicas()]
    company = await create_budget(fleet[0], hard("company", AFFORDS))
    ann_budget = await create_budget(fleet[0], hard("ann", 30, scope=BudgetScope.USER, scope_id="ann"))
    ann = BudgetSubject(scope.tenant, user_id="ann")
    bob = BudgetSubject(scope.tenant, user_id="bob")
    calls = [_request(fleet[i % 2], ann if i % 2 else bob, settle=False) for i in range(1000)]
    results = await asyncio.gather(*calls)
    admitted = [r for r in results if isinstance(r, Reservation)]
    ann_admitted = [r for r in admitted if r.subject.user_id == "ann"]
    assert len(admitted) == AFFORDS and len(ann_admitted) <= 30
    rejected = [r for r in results if isinstance(r, BudgetExceeded)]
    assert {r.budget_id for r in rejected} <= {company.id, ann_budget.id}
    statuses = {s.budget.name: s for s in await fleet[1].guard.statuses(ann)}
    assert statuses["company"].held_micros == AFFORDS * COST
    assert statuses["ann"].held_micros == len(ann_admitted) * COST  # no hold leaked from a refused attempt
    # release everything: all headroom returns, on every level
    await asyncio.gather(*(fleet[0].guard.release(r) for r in admitted))
    statuses = {s.budget.name: s for s in await fleet[1].guard.statuses(ann)}
    assert statuses["company"].held_micros == 0 and statuses["ann"].held_micros == 0


async def test_release_returns_headroom_to_concurrent_requests(
    scope: Scope, replicas: Callable[..., Replica], create_budget: CreateBudget
) -> None:
    a, b = replicas(), replicas()
    await create_budget(a, hard("company", AFFORDS))
    subject = BudgetSubject(scope.tenant)
    held = await asyncio.gather(*(_request(a, subject, settle=False) for _ in range(AFFORDS)))
    assert all(isinstance(r, Reservation) for r in held)
    with pytest.raises(BudgetExceeded):
        await b.guard.reserve(subject, COST)
    released = await asyncio.gather(*(b.guard.release(r) for r in held[:50]))  # type: ignore[arg-type]
    assert all(released)
    assert not any(await asyncio.gather(*(a.guard.release(r) for r in held[:50])))  # type: ignore[arg-type]
    again = await asyncio.gather(*(_request(b, subject) for _ in range(200)))
    assert sum(isinstance(r, Reservation) for r in again) == 50


async def test_a_crashed_replicas_expired_reservations_free_their_headroom(
    scope: Scope, replicas: Callable[..., Replica], create_budget: CreateBudget
) -> None:
    crashing = replicas(reservation_ttl=0.5)
    survivor = replicas()
    await create_budget(survivor, hard("company", 10))
    subject = BudgetSubject(scope.tenant)
    for _ in range(10):
        await crashing.guard.reserve(subject, COST)
    await crashing.redis.aclose()  # gone without settling or releasing
    with pytest.raises(BudgetExceeded):
        await survivor.guard.reserve(subject, COST)
    await asyncio.sleep(0.7)
    results = await asyncio.gather(*(_request(survivor, subject) for _ in range(20)))
    assert sum(isinstance(r, Reservation) for r in results) == 10


async def test_counters_lost_by_redis_are_rebuilt_from_postgres(
    scope: Scope, replicas: Callable[..., Replica], create_budget: CreateBudget, redis_url: str
) -> None:
    a = replicas()
    daily = await create_budget(a, hard("daily", AFFORDS))
    rolling = await create_budget(a, hard("rolling", AFFORDS, period=Period.rolling(hours=1)))
    subject = BudgetSubject(scope.tenant)
    results = await asyncio.gather(*(_request(a, subject) for _ in range(60)))
    assert all(isinstance(r, Reservation) for r in results)
    # what a Redis restart without persistence does: every key of this namespace is gone
    keys = [k async for k in a.redis.scan_iter(match=f"{scope.namespace}:*")]
    assert keys
    await a.redis.delete(*keys)
    b = replicas()  # a replica that never saw the spend
    statuses = {s.budget.id: s for s in await b.guard.statuses(subject)}
    assert statuses[daily.id].spent_micros == 60 * COST and statuses[rolling.id].spent_micros == 60 * COST
    more = await asyncio.gather(*(_request(b, subject) for _ in range(100)))
    assert sum(isinstance(r, Reservation) for r in more) == AFFORDS - 60
    # 50 % fired before the loss, 80 and 100 % after it: each once
    assert sorted(x.threshold_percent for x in await _alerts(a, scope.tenant) if x.budget_id == daily.id) == [50, 80, 100]


async def test_settle_is_idempotent_and_may_exceed_the_hold(
    scope: Scope, replicas: Callable[..., Replica], create_budget: CreateBudget
) -> None:
    a, b = replicas(), replicas()
    budget = await create_budget(a, hard("company", AFFORDS))
    subject = BudgetSubject(scope.tenant, model="sim-small")
    r = await a.guard.reserve(subject, COST)
    settled = await asyncio.gather(a.guard.settle(r, 3 * COST), b.guard.settle(r, 3 * COST), a.guard.settle(r, 3 * COST))
    assert sorted(s.duplicate for s in settled) == [False, True, True]
    assert await a.guard.release(r) is False
    spent, entries = await _db_spend(a, budget.id)
    assert (spent, entries) == (3 * COST, 1)
    (live,) = await b.guard.statuses(subject)
    assert (live.spent_micros, live.held_micros) == (3 * COST, 0)


async def test_soft_budget_admits_everything_and_alerts_once(
    scope: Scope, replicas: Callable[..., Replica], create_budget: CreateBudget
) -> None:
    a, b = replicas(), replicas()
    soft = await create_budget(a, hard("soft", 10, enforcement=Enforcement.SOFT, thresholds=(50, 100, 150)))
    subject = BudgetSubject(scope.tenant)
    results = await asyncio.gather(*(_request((a, b)[i % 2], subject) for i in range(40)))
    assert all(isinstance(r, Reservation) for r in results)
    assert sorted(x.threshold_percent for x in await _alerts(a, scope.tenant)) == [50, 100, 150]
    spent, _ = await _db_spend(a, soft.id)
    assert spent == 40 * COST
