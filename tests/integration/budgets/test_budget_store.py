"""Budget definitions, status with forecast, output-token predictions and usage queries on real
Postgres (and Redis for the live status)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
import sqlalchemy as sa

from adapters.postgres.usage_queries import SqlUsageReader
from application.budgets import (
    BudgetDraft,
    GetBudgetStatus,
    ManageBudgets,
    PredictOutputTokens,
    QueryUsage,
)
from application.budgets.ports import TimeBucket, UsageDimension
from domain.budgets import (
    BudgetScope,
    BudgetSubject,
    Enforcement,
    ForecastMethod,
    Period,
)
from domain.chat import Usage
from domain.errors import InvalidRequest, NotFound
from domain.identity import Principal, PrincipalKind, Role
from tests.integration.budgets.conftest import Replica, Scope


async def test_budget_definitions_round_trip_and_names_are_unique_per_tenant(
    scope: Scope, replicas: Callable[..., Replica]
) -> None:
    manage = ManageBudgets(replicas().ctx)
    draft = BudgetDraft(
        name="ann's gpt cap", scope=BudgetScope.USER, scope_id="ann", limit_micros=5_000_000,
        period=Period.rolling(hours=6), enforcement=Enforcement.SOFT, thresholds=(25, 75, 120),
        provider="openai", model="gpt-x", enabled=False,
    )
    created = await manage.create(scope.admin, draft)
    (listed,) = await manage.list(scope.admin)
    # the database's timestamps have microsecond precision; everything else comes back as written
    assert listed == msgspec.structs.replace(created, created_at=listed.created_at, updated_at=listed.updated_at)
    assert abs(listed.created_at - created.created_at) < timedelta(milliseconds=1)  # type: ignore[operator]
    assert listed.period == Period.rolling(hours=6) and listed.thresholds == (25, 75, 120)
    with pytest.raises(InvalidRequest):
        await manage.create(scope.admin, draft)
    changed = await manage.update(scope.admin, created.id, BudgetDraft(
        name="renamed", scope=BudgetScope.TENANT, limit_micros=1, period=Period.weekly()))
    got = await manage.get(scope.admin, created.id)
    assert (got.name, got.scope, got.scope_id, got.period, got.enabled) == ("renamed", BudgetScope.TENANT, scope.tenant, Period.weekly(), True)
    assert got.created_at == listed.created_at and changed.limit_micros == 1
    other_tenant = Principal(tenant_id="someone-else", user_id="x", role=Role.OWNER, kind=PrincipalKind.USER, credential_id="s")
    with pytest.raises(NotFound):
        await manage.get(other_tenant, created.id)
    await manage.delete(scope.admin, created.id)
    assert await manage.list(scope.admin) == []


async def test_status_forecast_and_predictions_come_from_the_durable_ledger(
    scope: Scope, replicas: Callable[..., Replica]
) -> None:
    replica = replicas()
    manage = ManageBudgets(replica.ctx)
    budget = await manage.create(scope.admin, BudgetDraft(
        name="monthly", scope=BudgetScope.TENANT, limit_micros=10**9, period=Period.monthly()))
    subject = BudgetSubject(scope.tenant, user_id="ann", model=f"m-{scope.tenant}")
    for n in range(40):
        r = await replica.guard.reserve(subject, 20_000, task="chat")
        await replica.guard.settle(r, 10_000, usage=Usage(500, 100 + 10 * n))
    held = await replica.guard.reserve(subject, 5_000)
    report = await GetBudgetStatus(replica.ctx)(scope.admin, budget.id, method=ForecastMethod.LINEAR)
    assert (report.status.spent_micros, report.status.held_micros) == (400_000, 5_000)
    assert report.forecast.spent_micros == 400_000 and report.forecast.projected_micros >= 400_000
    assert report.forecast.period_end == report.status.window.end
    await replica.guard.release(held)
    predict = PredictOutputTokens(replica.ctx)
    assert await predict(subject.model, "chat", default=4096) == 451  # p90 of 100..490
    assert await predict(subject.model, "tools", default=4096) == 4096  # no history for that task
    stats = await predict.stats(subject.model, "chat")
    assert stats is not None and stats.samples == 40 and stats.p50 == pytest.approx(295)


async def test_usage_is_grouped_by_dimension_and_time_bucket(scope: Scope, replicas: Callable[..., Replica]) -> None:
    replica = replicas()
    t = scope.tenant
    day = datetime(2026, 2, 3, tzinfo=UTC)
    async with replica.engine.begin() as conn:
        await conn.execute(sa.text("INSERT INTO tenants (id, name, created_at) VALUES (:t, 'T', now())"), {"t": t})
        for user in ("ann", "bob"):
            await conn.execute(sa.text("INSERT INTO users (id, tenant_id, email, created_at) VALUES (:u, :t, :e, now())"),
                               {"u": f"{t}-{user}", "t": t, "e": f"{user}@{t}.test"})
        for user, team in (("ann", "red"), ("ann", "blue"), ("bob", "red")):
            await conn.execute(sa.text("INSERT INTO memberships (tenant_id, user_id, team_id, role) VALUES (:t, :u, :team, 'member')"),
                               {"t": t, "u": f"{t}-{user}", "team": team})
        rows = [  # user, key, model, cost, hours after day start
            ("ann", "k1", "gpt-x", 100, 1), ("ann", "k1", "gpt-x", 200, 30), ("ann", None, "claude", 50, 2),
            ("bob", "k2", "gpt-x", 1000, 3), (None, None, "gpt-x", 7, 4),
        ]
        for i, (user, key, model, cost, hours) in enumerate(rows):
            await conn.execute(sa.text(
                "INSERT INTO usage_records (request_id, tenant_id, provider, model, input_tokens, output_tokens, cost_micros,"
                " latency_ms, finish_reason, created_at, user_id, api_key_id)"
                " VALUES (:r, :t, 'p', :m, 10, 5, :c, 1, 'stop', :at, :u, :k)"),
                {"r": f"{t}-{i}", "t": t, "m": model, "c": cost, "at": day + timedelta(hours=hours),
                 "u": f"{t}-{user}" if user else None, "k": key})
    try:
        query = QueryUsage(SqlUsageReader(replica.engine))
        span = {"start": day, "end": day + timedelta(days=3)}
        by_model_day = await query(scope.admin, **span, group_by=[UsageDimension.MODEL], bucket=TimeBucket.DAY)
        assert [(r.bucket_start, r.dimensions["model"], r.requests, r.cost_micros) for r in by_model_day] == [
            (day, "claude", 1, 50), (day, "gpt-x", 3, 1107), (day + timedelta(days=1), "gpt-x", 1, 200)]
        by_team = {r.dimensions["team"]: r.cost_micros for r in await query(scope.admin, **span, group_by=[UsageDimension.TEAM])}
        assert by_team == {"blue": 350, "red": 1350, "": 7}
        by_key = await query(scope.admin, **span, group_by=[UsageDimension.USER], filters={UsageDimension.API_KEY: "k1"})
        assert [(r.dimensions["user"], r.cost_micros, r.input_tokens, r.output_tokens) for r in by_key] == [(f"{t}-ann", 300, 20, 10)]
        (total,) = await query(scope.admin, **span)
        assert (total.requests, total.cost_micros, total.bucket_start, total.dimensions) == (5, 1357, None, {})
        # a member sees only their own usage, whatever they ask for
        bob = Principal(tenant_id=t, user_id=f"{t}-bob", role=Role.MEMBER, kind=PrincipalKind.USER, credential_id="s")
        (own,) = await query(bob, **span, filters={UsageDimension.USER: f"{t}-ann"})
        assert own.cost_micros == 1000
    finally:
        async with replica.engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM usage_records WHERE tenant_id = :t"), {"t": t})
            await conn.execute(sa.text("DELETE FROM tenants WHERE id = :t"), {"t": t})


async def test_group_committed_settlements_share_batches_and_survive_a_deleted_budget(
    scope: Scope, replicas: Callable[..., Replica]
) -> None:
    replica = replicas()
    manage = ManageBudgets(replica.ctx)
    keep = await manage.create(scope.admin, BudgetDraft(name="keep", scope=BudgetScope.TENANT, limit_micros=10**9, period=Period.daily()))
    gone = await manage.create(scope.admin, BudgetDraft(name="gone", scope=BudgetScope.USER, scope_id="ann", limit_micros=10**9, period=Period.daily()))
    subject = BudgetSubject(scope.tenant, user_id="ann")
    held = [await replica.guard.reserve(subject, 100) for _ in range(200)]
    await manage.delete(scope.admin, gone.id)  # its spend rows go with it; settling must not fail
    before = replica.recorder.batches
    await asyncio.gather(*(replica.guard.settle(r, 100) for r in held))
    assert replica.recorder.batches - before < 100  # concurrent settlements shared commits
    async with replica.engine.connect() as conn:
        spend = dict((await conn.execute(sa.text(
            "SELECT budget_id, sum(spent_micros) FROM budget_spend WHERE budget_id IN (:a, :b) GROUP BY budget_id"),
            {"a": keep.id, "b": gone.id})).all())
        entries = await conn.scalar(sa.text("SELECT count(*) FROM budget_ledger WHERE tenant_id = :t"), {"t": scope.tenant})
    assert spend == {keep.id: 200 * 100} and entries == 200
