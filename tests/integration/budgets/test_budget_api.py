"""BudgetService and UsageService over real gRPC and REST: a backend built by the composition root
on the session's Postgres and Redis (``backend.budgets`` from ``LUMINA_REDIS_URL``), callers
authenticated by bearer tokens (``StaticAuthenticator``: an admin and two members of one tenant,
an admin of another). Budgets and rate limits end to end (admins write, members read, tenants
isolated), status with a forecast to the period's end after real reservations and settlements,
usage written through the real settlement path and grouped by model, provider, user and key over
day buckets, bad input as BadRequest details / problem+json 422, and Lumina's own quota errors
(a real ``BudgetExceeded`` and ``RateLimitExceeded``) rendered by the edges as RESOURCE_EXHAUSTED
with QuotaFailure / RetryInfo and as 429 with Retry-After and ``x-ratelimit-*``."""

from __future__ import annotations

import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import grpc
import httpx
import pytest
import sqlalchemy as sa
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from litestar import Litestar, get
from redis.asyncio import Redis

from adapters.postgres import create_engine
from adapters.telemetry.metrics import Metrics
from api.auth import StaticAuthenticator
from api.bootstrap import Backend, build_backend
from api.grpc.interceptors import EdgeInterceptor
from api.rest.budgets import rate_limit_headers
from api.rest.problems import EXCEPTION_HANDLERS
from api.settings import load_settings
from domain.budgets import BudgetSubject
from domain.chat import Usage
from domain.errors import BudgetExceeded, DomainError, RateLimitExceeded
from domain.events import ChatCompleted
from domain.identity import Principal, PrincipalKind, Role
from domain.usage import UsageRecord
from lumina.v1 import budget_pb2 as pb
from lumina.v1 import budget_pb2_grpc

pytestmark = pytest.mark.timeout(120)


def _principal(tenant: str, user: str, role: Role = Role.MEMBER) -> Principal:
    return Principal(tenant, user, role, PrincipalKind.API_KEY, f"key-{user}")


def auth(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@dataclass
class Api:
    backend: Backend
    tenant: str
    other: str
    http: httpx.AsyncClient
    channel: grpc.aio.Channel

    @property
    def budgets(self) -> budget_pb2_grpc.BudgetServiceStub:
        return budget_pb2_grpc.BudgetServiceStub(self.channel)

    @property
    def usage(self) -> budget_pb2_grpc.UsageServiceStub:
        return budget_pb2_grpc.UsageServiceStub(self.channel)


@pytest.fixture
async def api(database_url: str, redis_url: str) -> AsyncIterator[Api]:
    tenant, other = f"tb-{uuid.uuid4().hex[:8]}", f"to-{uuid.uuid4().hex[:8]}"
    tokens = {
        "admin": _principal(tenant, "root", Role.ADMIN),
        "ann": _principal(tenant, "ann"),
        "bob": _principal(tenant, "bob"),
        "viewer": _principal(tenant, "vic", Role.VIEWER),
        "other-admin": _principal(other, "boss", Role.ADMIN),
    }
    settings = load_settings({}, database_url=database_url, redis_url=redis_url, tenant_id="budgetapi")
    backend = build_backend(settings, providers=[], authenticator=StaticAuthenticator(tokens))
    assert backend.budgets is not None, "Redis is set: the composition root builds the budget module"
    await backend.start(grpc_port=0, http_port=0)
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{backend.http_port}", timeout=30) as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{backend.grpc_port}") as channel,
        ):
            yield Api(backend, tenant, other, http, channel)
    finally:
        await backend.stop()
        await _cleanup(database_url, redis_url, (tenant, other))


async def _cleanup(database_url: str, redis_url: str, tenants: tuple[str, ...]) -> None:
    redis = Redis.from_url(redis_url)
    try:
        for tenant in tenants:
            keys = [k async for k in redis.scan_iter(match=f"lumina:*{{{tenant}}}*", count=1000)]
            if keys:
                await redis.delete(*keys)
    finally:
        await redis.aclose()
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            for tenant in tenants:
                await conn.execute(sa.text("DELETE FROM outbox WHERE subject LIKE :s"), {"s": f"lumina.{tenant}.%"})
                for table in ("usage_records", "budget_ledger", "budgets", "rate_limits"):
                    await conn.execute(sa.text(f"DELETE FROM {table} WHERE tenant_id = :t"), {"t": tenant})
    finally:
        await engine.dispose()


def _details(error: grpc.aio.AioRpcError) -> list[Any]:
    status = rpc_status.from_call(error)
    assert status is not None
    out: list[Any] = []
    for detail in status.details:
        for kind in (error_details_pb2.BadRequest, error_details_pb2.QuotaFailure, error_details_pb2.RetryInfo,
                     error_details_pb2.ErrorInfo):
            message = kind()
            if detail.Unpack(message):
                out.append(message)
    return out


def _violations(error: grpc.aio.AioRpcError) -> dict[str, str]:
    found: dict[str, str] = {}
    for d in _details(error):
        if isinstance(d, error_details_pb2.BadRequest):
            found.update({v.field: v.description for v in d.field_violations})
    return found


def _spec(name: str, **kw: Any) -> pb.BudgetSpec:
    fields: dict[str, Any] = {
        "name": name, "scope": pb.BUDGET_SCOPE_TENANT, "limit_micros": 1_000_000, "period": pb.PERIOD_KIND_DAILY,
    }
    return pb.BudgetSpec(**(fields | kw))


# --- budgets and rate limits ------------------------------------------------------------------


async def test_budgets_and_rate_limits_over_grpc(api: Api) -> None:
    stub = api.budgets
    made = (await stub.CreateBudget(pb.CreateBudgetRequest(spec=_spec("tenant daily")), metadata=auth("admin"))).budget
    assert made.id and made.spec.scope_id == api.tenant and made.spec.enabled  # unset enabled: on
    assert list(made.spec.thresholds) == [50, 80, 100] and made.spec.enforcement == pb.ENFORCEMENT_HARD
    assert made.create_time.seconds > 0
    rolling = (await stub.CreateBudget(pb.CreateBudgetRequest(spec=_spec(
        "ann weekly-ish", scope=pb.BUDGET_SCOPE_USER, scope_id="ann", period=pb.PERIOD_KIND_ROLLING,
        rolling_seconds=7 * 86400, enforcement=pb.ENFORCEMENT_SOFT, thresholds=[90, 150], model="sim-small",
        enabled=False,
    )), metadata=auth("admin"))).budget
    assert rolling.spec.rolling_seconds == 604800 and not rolling.spec.enabled and list(rolling.spec.thresholds) == [90, 150]

    listed = (await stub.ListBudgets(pb.ListBudgetsRequest(), metadata=auth("ann"))).budgets  # members read
    assert [b.spec.name for b in listed] == ["ann weekly-ish", "tenant daily"]  # by name
    got = (await stub.GetBudget(pb.GetBudgetRequest(budget_id=made.id), metadata=auth("viewer"))).budget
    assert got == made

    updated = (await stub.UpdateBudget(
        pb.UpdateBudgetRequest(budget_id=made.id, spec=_spec("tenant daily", limit_micros=5_000_000, period=pb.PERIOD_KIND_MONTHLY)),
        metadata=auth("admin"),
    )).budget
    assert updated.spec.limit_micros == 5_000_000 and updated.spec.period == pb.PERIOD_KIND_MONTHLY
    assert updated.create_time == made.create_time and updated.update_time.ToDatetime() >= made.update_time.ToDatetime()

    for rpc, request in (
        ("CreateBudget", pb.CreateBudgetRequest(spec=_spec("sneaky"))),
        ("UpdateBudget", pb.UpdateBudgetRequest(budget_id=made.id, spec=_spec("sneaky"))),
        ("DeleteBudget", pb.DeleteBudgetRequest(budget_id=made.id)),
        ("PutRateLimit", pb.PutRateLimitRequest(rate_limit=pb.RateLimit(scope=pb.RATE_LIMIT_SCOPE_USER, scope_id="ann", requests_per_minute=1))),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await getattr(stub, rpc)(request, metadata=auth("ann"))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, rpc
    with pytest.raises(grpc.aio.AioRpcError) as foreign:  # another tenant's admin cannot see it
        await stub.GetBudget(pb.GetBudgetRequest(budget_id=made.id), metadata=auth("other-admin"))
    assert foreign.value.code() == grpc.StatusCode.NOT_FOUND
    assert not (await stub.ListBudgets(pb.ListBudgetsRequest(), metadata=auth("other-admin"))).budgets

    await stub.DeleteBudget(pb.DeleteBudgetRequest(budget_id=rolling.id), metadata=auth("admin"))
    with pytest.raises(grpc.aio.AioRpcError) as gone:
        await stub.GetBudgetStatus(pb.GetBudgetStatusRequest(budget_id=rolling.id), metadata=auth("admin"))
    assert gone.value.code() == grpc.StatusCode.NOT_FOUND and rolling.id in (gone.value.details() or "")

    limit = pb.RateLimit(scope=pb.RATE_LIMIT_SCOPE_USER, scope_id="ann", requests_per_minute=10, tokens_per_minute=5000)
    put = (await stub.PutRateLimit(pb.PutRateLimitRequest(rate_limit=limit), metadata=auth("admin"))).rate_limit
    again = (await stub.PutRateLimit(pb.PutRateLimitRequest(rate_limit=pb.RateLimit(
        scope=pb.RATE_LIMIT_SCOPE_USER, scope_id="ann", requests_per_minute=20)), metadata=auth("admin"))).rate_limit
    assert again.id == put.id and again.requests_per_minute == 20 and again.tokens_per_minute == 0  # the node's one limit
    tenant_wide = (await stub.PutRateLimit(pb.PutRateLimitRequest(rate_limit=pb.RateLimit(
        scope=pb.RATE_LIMIT_SCOPE_TENANT, tokens_per_minute=100_000)), metadata=auth("admin"))).rate_limit
    assert tenant_wide.scope_id == api.tenant
    limits = (await stub.ListRateLimits(pb.ListRateLimitsRequest(), metadata=auth("bob"))).rate_limits
    assert {(r.scope, r.scope_id) for r in limits} == {(pb.RATE_LIMIT_SCOPE_USER, "ann"), (pb.RATE_LIMIT_SCOPE_TENANT, api.tenant)}
    await stub.DeleteRateLimit(pb.DeleteRateLimitRequest(rate_limit_id=put.id), metadata=auth("admin"))
    assert [r.id for r in (await stub.ListRateLimits(pb.ListRateLimitsRequest(), metadata=auth("admin"))).rate_limits] == [tenant_wide.id]
    with pytest.raises(grpc.aio.AioRpcError) as missing:
        await stub.DeleteRateLimit(pb.DeleteRateLimitRequest(rate_limit_id=put.id), metadata=auth("admin"))
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND


async def test_budgets_and_rate_limits_over_rest(api: Api) -> None:
    http = api.http
    body = {"name": "api key cap", "scope": "api_key", "scope_id": "key-ann", "limit_micros": 2_500_000,
            "period": "weekly", "provider": "simulator", "thresholds": [25, 75]}
    created = await http.post("/v1/budgets", json=body, headers=bearer("admin"))
    assert created.status_code == 201, created.text
    budget = created.json()
    assert budget["scope"] == "api_key" and budget["period"] == "weekly" and budget["enforcement"] == "hard"
    assert budget["thresholds"] == [25, 75] and budget["enabled"] is True and budget["provider"] == "simulator"
    assert (await http.get(f"/v1/budgets/{budget['id']}", headers=bearer("bob"))).json() == budget
    listing = (await http.get("/v1/budgets", headers=bearer("ann"))).json()
    assert [b["id"] for b in listing["budgets"]] == [budget["id"]]

    replaced = await http.put(f"/v1/budgets/{budget['id']}", json=body | {"enabled": False, "limit_micros": 9}, headers=bearer("admin"))
    assert replaced.status_code == 200 and replaced.json()["enabled"] is False and replaced.json()["limit_micros"] == 9
    assert replaced.json()["created_at"] == budget["created_at"]

    denied = await http.post("/v1/budgets", json=body | {"name": "mine"}, headers=bearer("ann"))
    assert denied.status_code == 403 and denied.headers["content-type"].startswith("application/problem+json")
    assert (await http.delete(f"/v1/budgets/{budget['id']}", headers=bearer("ann"))).status_code == 403
    assert (await http.get(f"/v1/budgets/{budget['id']}", headers=bearer("other-admin"))).status_code == 404
    assert (await http.get("/v1/budgets")).status_code == 401  # no credential
    duplicate = await http.post("/v1/budgets", json=body, headers=bearer("admin"))
    assert duplicate.status_code == 422 and duplicate.json()["errors"][0]["field"] == "name"

    assert (await http.delete(f"/v1/budgets/{budget['id']}", headers=bearer("admin"))).status_code == 204
    assert (await http.get(f"/v1/budgets/{budget['id']}", headers=bearer("admin"))).status_code == 404

    put = await http.put("/v1/rate-limits", json={"scope": "model", "scope_id": "sim-small", "requests_per_minute": 600},
                         headers=bearer("admin"))
    assert put.status_code == 200, put.text
    limit = put.json()
    assert limit["scope"] == "model" and limit["requests_per_minute"] == 600 and limit["tokens_per_minute"] == 0
    assert (await http.put("/v1/rate-limits", json={"scope": "user", "scope_id": "x", "requests_per_minute": 1},
                           headers=bearer("bob"))).status_code == 403
    assert (await http.get("/v1/rate-limits", headers=bearer("bob"))).json() == {"rate_limits": [limit]}
    assert (await http.delete(f"/v1/rate-limits/{limit['id']}", headers=bearer("admin"))).status_code == 204
    assert (await http.get("/v1/rate-limits", headers=bearer("admin"))).json() == {"rate_limits": []}


# --- status and forecast ----------------------------------------------------------------------


async def test_status_reports_spend_holds_headroom_and_a_forecast_to_the_period_end(api: Api) -> None:
    made = (await api.budgets.CreateBudget(pb.CreateBudgetRequest(spec=_spec("daily")), metadata=auth("admin"))).budget
    guard = api.backend.budgets.guard
    subject = BudgetSubject(api.tenant, user_id="ann", api_key_id="key-ann", provider="simulator", model="sim-small")
    first = await guard.reserve(subject, 400_000, task="chat")
    await guard.settle(first, 300_000, usage=Usage(100, 50), request_id="r1")
    outstanding = await guard.reserve(subject, 150_000, task="chat")  # in flight: held, not spent

    before = datetime.now(UTC)
    status = await api.budgets.GetBudgetStatus(
        pb.GetBudgetStatusRequest(budget_id=made.id, forecast_method=pb.FORECAST_METHOD_LINEAR), metadata=auth("ann")
    )
    after = datetime.now(UTC)
    assert (status.spent_micros, status.held_micros, status.remaining_micros) == (300_000, 150_000, 550_000)
    assert status.headroom == pytest.approx(0.55) and status.budget.id == made.id
    start, end = status.period_start_time.ToDatetime(UTC), status.period_end_time.ToDatetime(UTC)
    assert status.period_key == f"d{start:%Y-%m-%d}" and end - start == timedelta(days=1) and start <= before < end
    forecast = status.forecast
    assert forecast.method == pb.FORECAST_METHOD_LINEAR and forecast.period_end_time == status.period_end_time

    def linear(now: datetime) -> float:  # spend so far + (spend / hours elapsed) x hours left
        elapsed = max((now - start).total_seconds() / 3600, 1 / 60)
        return 300_000 + 300_000 / elapsed * (end - now).total_seconds() / 3600

    assert linear(after) - 1 <= forecast.projected_micros <= linear(before) + 1  # later calls project less
    if forecast.projected_micros > 1_000_000:  # on this pace the limit falls before midnight
        exhausted = forecast.exhausted_time.ToDatetime(UTC)
        assert before < exhausted < end
    else:
        assert not forecast.HasField("exhausted_time")

    await guard.release(outstanding)
    rest = await api.http.get(f"/v1/budgets/{made.id}/status", headers=bearer("bob"))  # default: EWMA
    assert rest.status_code == 200, rest.text
    body = rest.json()
    assert body["spent_micros"] == 300_000 and body["held_micros"] == 0 and body["remaining_micros"] == 700_000
    assert body["headroom"] == pytest.approx(0.7) and body["period"]["key"] == status.period_key
    # EWMA over the period's complete hours (none yet in its first hour: then the linear rate, saying so)
    expected = "ewma" if datetime.now(UTC) - start >= timedelta(hours=1) else "linear"
    assert body["forecast"]["method"] == expected and body["forecast"]["projected_micros"] >= 300_000
    assert body["forecast"]["will_exceed"] == (body["forecast"]["projected_micros"] > 1_000_000)
    bad = await api.http.get(f"/v1/budgets/{made.id}/status?forecast=crystal-ball", headers=bearer("bob"))
    assert bad.status_code == 422 and bad.json()["errors"] == [{"field": "forecast", "message": "one of linear, ewma"}]


async def test_ewma_forecast_of_a_rolling_budget_rebuilt_from_the_durable_ledger(api: Api) -> None:
    made = (await api.budgets.CreateBudget(pb.CreateBudgetRequest(spec=_spec(
        "week rolling", period=pb.PERIOD_KIND_ROLLING, rolling_seconds=7 * 86400, limit_micros=10_000_000,
    )), metadata=auth("admin"))).budget
    # history written by earlier settlements (buckets of 7d/60 = 10,080 s), never seen by this Redis
    size = 7 * 86400 // 60
    now_bucket = int(datetime.now(UTC).timestamp()) // size
    history = {now_bucket - 30: 1_000_000, now_bucket - 10: 2_000_000, now_bucket - 1: 500_000}
    engine = api.backend.engine
    assert engine is not None
    async with engine.begin() as conn:
        for bucket, micros in history.items():
            await conn.execute(
                sa.text("INSERT INTO budget_spend (budget_id, bucket_start, spent_micros, requests) VALUES (:b, :at, :m, 1)"),
                {"b": made.id, "at": datetime.fromtimestamp(bucket * size, UTC), "m": micros},
            )
    status = await api.budgets.GetBudgetStatus(pb.GetBudgetStatusRequest(budget_id=made.id), metadata=auth("admin"))
    assert status.spent_micros == 3_500_000 and status.remaining_micros == 6_500_000  # counters seeded from Postgres
    forecast = status.forecast
    assert forecast.method == pb.FORECAST_METHOD_EWMA and forecast.run_rate_micros_per_hour > 0
    assert not forecast.HasField("period_end_time")  # a rolling window never ends: the steady state
    assert forecast.projected_micros == math.ceil(forecast.run_rate_micros_per_hour * 168)
    linear = await api.budgets.GetBudgetStatus(
        pb.GetBudgetStatusRequest(budget_id=made.id, forecast_method=pb.FORECAST_METHOD_LINEAR), metadata=auth("admin")
    )
    assert linear.forecast.method == pb.FORECAST_METHOD_LINEAR
    assert linear.forecast.run_rate_micros_per_hour == pytest.approx(3_500_000 / 168)
    assert forecast.run_rate_micros_per_hour != pytest.approx(linear.forecast.run_rate_micros_per_hour)


# --- usage ------------------------------------------------------------------------------------


async def _record_usage(api: Api) -> datetime:
    """Five requests over three UTC days, through the backend's own settlement path."""
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = [  # day, user, key, provider, model, input, output, cost
        (-2, "ann", "key-ann", "simulator", "sim-small", 10, 20, 100),
        (-2, "bob", "key-bob", "openai", "gpt-4o", 100, 200, 1000),
        (-1, "ann", "key-ann", "openai", "gpt-4o", 200, 400, 2000),
        (0, "ann", None, "simulator", "sim-small", 30, 60, 300),
        (0, "bob", "key-bob", "simulator", "sim-large", 50, 100, 5000),
    ]
    settlements = api.backend.settlements
    assert settlements is not None
    for i, (day, user, key, provider, model, tin, tout, cost) in enumerate(rows):
        at = today + timedelta(days=day, hours=1, minutes=i)
        request_id = f"{api.tenant}-r{i}"
        record = UsageRecord(request_id, api.tenant, provider, model, tin, tout, 0, 0, cost, 10, "stop", at,
                             user_id=user, api_key_id=key)
        event = ChatCompleted(f"{request_id}-e", api.tenant, at, request_id, provider, model, tin, tout, cost, 10, "stop",
                              user_id=user, api_key_id=key or "")
        await settlements.settle(record, event)
    return today


def _rows(response: pb.QueryUsageResponse) -> list[tuple[Any, ...]]:
    return [
        ((r.bucket_start_time.ToDatetime(UTC).date().isoformat() if r.HasField("bucket_start_time") else None),
         dict(r.dimensions), r.requests, r.input_tokens, r.output_tokens, r.cost_micros)
        for r in response.rows
    ]


async def test_usage_grouped_by_model_provider_user_and_key_over_day_buckets(api: Api) -> None:
    today = await _record_usage(api)
    d = [(today + timedelta(days=n)).date().isoformat() for n in (-2, -1, 0)]
    request = pb.QueryUsageRequest(group_by=[pb.USAGE_DIMENSION_MODEL], bucket=pb.TIME_BUCKET_DAY)
    request.start_time.FromDatetime(today - timedelta(days=2))
    request.end_time.FromDatetime(today + timedelta(days=1))
    by_model = _rows(await api.usage.QueryUsage(request, metadata=auth("admin")))
    assert by_model == [
        (d[0], {"model": "gpt-4o"}, 1, 100, 200, 1000),
        (d[0], {"model": "sim-small"}, 1, 10, 20, 100),
        (d[1], {"model": "gpt-4o"}, 1, 200, 400, 2000),
        (d[2], {"model": "sim-large"}, 1, 50, 100, 5000),
        (d[2], {"model": "sim-small"}, 1, 30, 60, 300),
    ]

    def grouped(*dims: int, filters: tuple[tuple[int, str], ...] = ()) -> pb.QueryUsageRequest:
        r = pb.QueryUsageRequest(group_by=list(dims), filters=[pb.UsageFilter(dimension=k, value=v) for k, v in filters])
        r.start_time.CopyFrom(request.start_time)
        r.end_time.CopyFrom(request.end_time)
        return r

    assert _rows(await api.usage.QueryUsage(grouped(pb.USAGE_DIMENSION_PROVIDER), metadata=auth("admin"))) == [
        (None, {"provider": "openai"}, 2, 300, 600, 3000),
        (None, {"provider": "simulator"}, 3, 90, 180, 5400),
    ]
    assert _rows(await api.usage.QueryUsage(grouped(pb.USAGE_DIMENSION_USER), metadata=auth("admin"))) == [
        (None, {"user": "ann"}, 3, 240, 480, 2400),
        (None, {"user": "bob"}, 2, 150, 300, 6000),
    ]
    assert _rows(await api.usage.QueryUsage(grouped(pb.USAGE_DIMENSION_API_KEY), metadata=auth("admin"))) == [
        (None, {"api_key": ""}, 1, 30, 60, 300),  # ann's session call: no key
        (None, {"api_key": "key-ann"}, 2, 210, 420, 2100),
        (None, {"api_key": "key-bob"}, 2, 150, 300, 6000),
    ]
    openai_by_user = grouped(pb.USAGE_DIMENSION_USER, filters=((pb.USAGE_DIMENSION_PROVIDER, "openai"),))
    assert _rows(await api.usage.QueryUsage(openai_by_user, metadata=auth("admin"))) == [
        (None, {"user": "ann"}, 1, 200, 400, 2000),
        (None, {"user": "bob"}, 1, 100, 200, 1000),
    ]
    # a member sees their own usage only, whatever they ask for
    peek = grouped(pb.USAGE_DIMENSION_USER, pb.USAGE_DIMENSION_MODEL, filters=((pb.USAGE_DIMENSION_USER, "bob"),))
    assert _rows(await api.usage.QueryUsage(peek, metadata=auth("ann"))) == [
        (None, {"user": "ann", "model": "gpt-4o"}, 1, 200, 400, 2000),
        (None, {"user": "ann", "model": "sim-small"}, 2, 40, 80, 400),
    ]
    assert _rows(await api.usage.QueryUsage(grouped(), metadata=auth("bob"))) == [(None, {}, 2, 150, 300, 6000)]
    assert _rows(await api.usage.QueryUsage(grouped(), metadata=auth("other-admin"))) == [(None, {}, 0, 0, 0, 0)]

    params = {"group_by": "model,provider", "bucket": "day", "from": d[0], "to": (today + timedelta(days=1)).isoformat()}
    rest = await api.http.get("/v1/usage", params=params, headers=bearer("admin"))
    assert rest.status_code == 200, rest.text
    body = rest.json()
    assert body["group_by"] == ["model", "provider"] and body["bucket"] == "day"
    assert [(r["bucket_start"][:10], r["dimensions"]["model"], r["dimensions"]["provider"], r["cost_micros"]) for r in body["rows"]] == [
        (d[0], "gpt-4o", "openai", 1000), (d[0], "sim-small", "simulator", 100), (d[1], "gpt-4o", "openai", 2000),
        (d[2], "sim-large", "simulator", 5000), (d[2], "sim-small", "simulator", 300),
    ]
    mine = (await api.http.get("/v1/usage", params={"group_by": "api_key", "from": d[0]}, headers=bearer("ann"))).json()
    assert [(r["dimensions"]["api_key"], r["requests"], r["cost_micros"]) for r in mine["rows"]] == [("", 1, 300), ("key-ann", 2, 2100)]
    filtered = (await api.http.get("/v1/usage", params={"group_by": "user", "model": "sim-large", "from": d[0]},
                                   headers=bearer("admin"))).json()
    assert [(r["dimensions"]["user"], r["cost_micros"]) for r in filtered["rows"]] == [("bob", 5000)]


# --- bad input --------------------------------------------------------------------------------


async def test_bad_input_is_invalid_argument_with_field_violations_and_problem_422(api: Api) -> None:
    stub = api.budgets
    cases = [
        (pb.CreateBudgetRequest(spec=_spec("x", scope=0)), {"spec.scope": "required"}),
        (pb.CreateBudgetRequest(spec=_spec("x", period=pb.PERIOD_KIND_ROLLING, rolling_seconds=10)), {"spec.rolling_seconds"}),
        (pb.CreateBudgetRequest(spec=_spec("x", rolling_seconds=3600)), {"spec.rolling_seconds"}),
        (pb.CreateBudgetRequest(spec=_spec(" ", limit_micros=0, thresholds=[80, 50])),
         {"spec.name", "spec.limit_micros", "spec.thresholds"}),
        (pb.CreateBudgetRequest(spec=_spec("x", scope=pb.BUDGET_SCOPE_TEAM)), {"spec.scope_id"}),
        (pb.CreateBudgetRequest(spec=_spec("x", enforcement=7)), {"spec.enforcement": "unknown value 7 (one of hard, soft)"}),
    ]
    for request, expected in cases:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.CreateBudget(request, metadata=auth("admin"))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        found = _violations(err.value)
        if isinstance(expected, dict):
            assert all(found.get(k) == v for k, v in expected.items()), found
        else:
            assert set(found) == expected, found
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.PutRateLimit(pb.PutRateLimitRequest(rate_limit=pb.RateLimit(scope=pb.RATE_LIMIT_SCOPE_USER, scope_id="ann")),
                                metadata=auth("admin"))
    assert set(_violations(err.value)) == {"rate_limit.requests_per_minute"}
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GetBudgetStatus(pb.GetBudgetStatusRequest(), metadata=auth("admin"))
    assert set(_violations(err.value)) == {"budget_id"}

    usage = pb.QueryUsageRequest(group_by=[99], bucket=9, filters=[pb.UsageFilter(dimension=0, value="x")])
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.usage.QueryUsage(usage, metadata=auth("admin"))
    assert set(_violations(err.value)) == {"group_by[0]", "bucket", "filters[0].dimension"}
    backwards = pb.QueryUsageRequest(limit=20_000)
    backwards.start_time.FromSeconds(2_000_000_000)
    backwards.end_time.FromSeconds(1_000_000_000)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await api.usage.QueryUsage(backwards, metadata=auth("admin"))
    assert set(_violations(err.value)) == {"end_time"}

    http = api.http
    base = {"name": "b", "scope": "tenant", "limit_micros": 5, "period": "daily"}
    rest_cases = [
        (base | {"scope": "galaxy"}, "scope"),
        (base | {"limit_micros": "ten"}, "limit_micros"),
        (base | {"colour": "red"}, "colour"),
        ({k: v for k, v in base.items() if k != "name"}, "name"),
        (base | {"period": "rolling", "rolling_seconds": 5}, "rolling_seconds"),
        (base | {"limit_micros": -1}, "limit_micros"),
        (base | {"thresholds": [100, 100]}, "thresholds"),
    ]
    for payload, field in rest_cases:
        answer = await http.post("/v1/budgets", json=payload, headers=bearer("admin"))
        assert answer.status_code == 422, (payload, answer.text)
        assert answer.headers["content-type"].startswith("application/problem+json")
        assert [e["field"] for e in answer.json()["errors"]] == [field], answer.json()
    not_json = await http.post("/v1/budgets", content=b"{nope", headers=bearer("admin") | {"content-type": "application/json"})
    assert not_json.status_code == 422 and not_json.json()["errors"][0]["field"] == "body"
    limit = await http.put("/v1/rate-limits", json={"scope": "tenant", "requests_per_minute": -3}, headers=bearer("admin"))
    assert limit.status_code == 422 and [e["field"] for e in limit.json()["errors"]] == ["requests_per_minute"]
    usage_bad = await http.get("/v1/usage", params={"group_by": "model,colour", "bucket": "fortnight", "from": "yesterday",
                                                    "to": "2026-01-01T00:00:00", "shape": "round"}, headers=bearer("admin"))
    assert usage_bad.status_code == 422
    assert sorted(e["field"] for e in usage_bad.json()["errors"]) == ["bucket", "from", "group_by", "shape", "to"]
    too_long = await http.get("/v1/usage", params={"from": "2020-01-01", "to": "2026-01-01"}, headers=bearer("admin"))
    assert too_long.status_code == 422 and too_long.json()["errors"][0]["field"] == "to"


# --- Lumina's own quota errors at the edges ---------------------------------------------------


class _QuotaEdges:
    """One real gRPC server (the backend's edge interceptor) and one Litestar app (the backend's
    problem handlers) whose only call raises the error they are handed."""

    def __init__(self, principal: Principal) -> None:
        self.error: DomainError | None = None
        self.authenticator = StaticAuthenticator({"admin": principal})

    async def fail(self, request: Any, context: Any) -> Any:
        assert self.error is not None
        raise self.error

    def grpc_server(self) -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server(interceptors=[EdgeInterceptor(Metrics(), self.authenticator)])
        handler = grpc.unary_unary_rpc_method_handler(
            self.fail, request_deserializer=empty_pb2.Empty.FromString, response_serializer=empty_pb2.Empty.SerializeToString
        )
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Quota", {"Fail": handler}),))
        return server, server.add_insecure_port("127.0.0.1:0")

    def rest_app(self) -> Litestar:
        @get("/fail", sync_to_thread=False)
        def fail() -> None:
            assert self.error is not None
            raise self.error

        return Litestar(route_handlers=[fail], exception_handlers=EXCEPTION_HANDLERS, logging_config=None)


async def test_budget_and_rate_limit_refusals_are_resource_exhausted_and_429_with_details(api: Api) -> None:
    budgets = api.backend.budgets
    made = (await api.budgets.CreateBudget(pb.CreateBudgetRequest(spec=_spec("tiny", limit_micros=1000)), metadata=auth("admin"))).budget
    subject = BudgetSubject(api.tenant, user_id="ann", api_key_id="key-ann", provider="simulator", model="sim-small")
    with pytest.raises(BudgetExceeded) as over:
        await budgets.guard.reserve(subject, 5000, task="chat")
    budget_error = over.value
    assert budget_error.budget_id == made.id and budget_error.resets_at is not None

    put = await api.http.put("/v1/rate-limits", json={"scope": "user", "scope_id": "ann", "requests_per_minute": 2,
                                                      "tokens_per_minute": 10_000}, headers=bearer("admin"))
    assert put.status_code == 200
    passed = [await budgets.limiter.acquire(subject, tokens=100) for _ in range(2)]
    headers = rate_limit_headers(passed[-1])
    assert headers["x-ratelimit-limit-requests"] == "2" and headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-tokens"] == "10000" and rate_limit_headers(None) == {}
    with pytest.raises(RateLimitExceeded) as limited:
        await budgets.limiter.acquire(subject, tokens=100)
    limit_error = limited.value
    assert limit_error.retry_after is not None and 0 < limit_error.retry_after <= 30.01  # 2/min: one every 30 s

    edges = _QuotaEdges(_principal(api.tenant, "root", Role.ADMIN))
    server, port = edges.grpc_server()
    await server.start()
    try:
        async with (
            grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel,
            httpx.AsyncClient(transport=httpx.ASGITransport(app=edges.rest_app()), base_url="http://edge") as http,
        ):
            call = channel.unary_unary("/test.Quota/Fail", request_serializer=empty_pb2.Empty.SerializeToString,
                                       response_deserializer=empty_pb2.Empty.FromString)

            edges.error = budget_error
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(empty_pb2.Empty(), metadata=auth("admin"))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "'tiny'" in (err.value.details() or "")
            details = _details(err.value)
            quota = next(d for d in details if isinstance(d, error_details_pb2.QuotaFailure))
            assert quota.violations[0].subject == f"budget:{made.id}" and "'tiny'" in quota.violations[0].description
            info = next(d for d in details if isinstance(d, error_details_pb2.ErrorInfo))
            assert info.reason == "BUDGET_EXCEEDED" and info.metadata["budget_id"] == made.id
            retry = next(d for d in details if isinstance(d, error_details_pb2.RetryInfo))
            until_reset = (budget_error.resets_at - datetime.now(UTC)).total_seconds()
            assert until_reset - 5 <= retry.retry_delay.ToTimedelta().total_seconds() <= until_reset + 1

            answer = await http.get("/fail")
            assert answer.status_code == 429 and answer.headers["content-type"].startswith("application/problem+json")
            problem = answer.json()
            assert "'tiny'" in problem["detail"] and problem["code"] == "budget_exceeded"
            assert problem["budget"]["id"] == made.id and problem["budget"]["name"] == "tiny"
            assert abs(int(answer.headers["retry-after"]) - until_reset) <= 5

            edges.error = limit_error
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(empty_pb2.Empty(), metadata=auth("admin"))
            assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "user ann" in (err.value.details() or "")
            details = _details(err.value)
            quota = next(d for d in details if isinstance(d, error_details_pb2.QuotaFailure))
            assert quota.violations[0].subject == f"rate_limit:{limit_error.limit_id}"
            retry = next(d for d in details if isinstance(d, error_details_pb2.RetryInfo))
            assert retry.retry_delay.ToTimedelta().total_seconds() == pytest.approx(limit_error.retry_after, abs=0.002)
            trailers = dict(err.value.trailing_metadata() or ())
            assert trailers["x-ratelimit-limit-requests"] == "2" and trailers["x-ratelimit-remaining-requests"] == "0"

            answer = await http.get("/fail")
            assert answer.status_code == 429 and "user ann" in answer.json()["detail"]
            assert answer.headers["retry-after"] == str(math.ceil(limit_error.retry_after))
            assert answer.headers["x-ratelimit-limit-requests"] == "2" and answer.headers["x-ratelimit-remaining-requests"] == "0"
            assert answer.json()["rate_limit_id"] == limit_error.limit_id

            edges.error = RateLimitExceeded("rate limit of user ann: 2 requests per minute; this request alone needs 5",
                                            limit_id="x", retry_after=None)
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call(empty_pb2.Empty(), metadata=auth("admin"))
            assert not any(isinstance(d, error_details_pb2.RetryInfo) for d in _details(err.value))  # it never passes
            answer = await http.get("/fail")
            assert answer.status_code == 429 and "retry-after" not in answer.headers
    finally:
        await server.stop(None)
