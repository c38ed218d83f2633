"""``BudgetService`` and ``UsageService``: decode, call one use case as the caller
(``api.auth.current_principal``), encode. The use cases authorize (admins change budgets and rate
limits; members read them and their own usage); domain errors become statuses with google.rpc
details in the edge interceptor. Field violations name the request's fields (``spec.limit_micros``,
``rate_limit.scope_id``, ``start_time``). Decoding is shared with the REST edge (``api.budgets``:
``budget_draft``, ``rate_limit_draft``, ``usage_query``); here, protobuf enums become the domain's
names and timestamps datetimes."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from api.auth import current_principal
from api.budgets import (
    BUDGET_RENAMES,
    DEFAULT_USAGE_SPAN,
    budget_draft,
    fields_under,
    rate_limit_draft,
    usage_query,
)
from api.grpc.timestamps import timestamp
from application.budgets import (
    BudgetDraft,
    BudgetReport,
    GetBudgetStatus,
    ManageBudgets,
    ManageRateLimits,
    QueryUsage,
    RateLimitDraft,
)
from application.budgets.ports import TimeBucket, UsageDimension, UsageRow
from domain.budgets import (
    Budget,
    BudgetScope,
    Enforcement,
    ForecastMethod,
    PeriodKind,
    RateLimit,
    RateLimitScope,
    RateLimitStatus,
)
from domain.errors import FieldViolation, InvalidRequest
from domain.ports import Clock
from lumina.v1 import budget_pb2 as pb
from lumina.v1 import budget_pb2_grpc

__all__ = [
    "BUDGET_SERVICE",
    "DEFAULT_USAGE_SPAN",
    "USAGE_SERVICE",
    "BudgetServicer",
    "UsageServicer",
    "add_budget_services",
    "fields_under",
    "rate_limit_metadata",
]

BUDGET_SERVICE = pb.DESCRIPTOR.services_by_name["BudgetService"].full_name
USAGE_SERVICE = pb.DESCRIPTOR.services_by_name["UsageService"].full_name
T = TypeVar("T")

_SCOPES = {
    pb.BUDGET_SCOPE_TENANT: BudgetScope.TENANT,
    pb.BUDGET_SCOPE_TEAM: BudgetScope.TEAM,
    pb.BUDGET_SCOPE_USER: BudgetScope.USER,
    pb.BUDGET_SCOPE_API_KEY: BudgetScope.API_KEY,
}
_PERIODS = {
    pb.PERIOD_KIND_DAILY: PeriodKind.DAILY,
    pb.PERIOD_KIND_WEEKLY: PeriodKind.WEEKLY,
    pb.PERIOD_KIND_MONTHLY: PeriodKind.MONTHLY,
    pb.PERIOD_KIND_ROLLING: PeriodKind.ROLLING,
}
_ENFORCEMENT = {pb.ENFORCEMENT_HARD: Enforcement.HARD, pb.ENFORCEMENT_SOFT: Enforcement.SOFT}
_METHODS = {pb.FORECAST_METHOD_LINEAR: ForecastMethod.LINEAR, pb.FORECAST_METHOD_EWMA: ForecastMethod.EWMA}
_RATE_SCOPES = {
    pb.RATE_LIMIT_SCOPE_TENANT: RateLimitScope.TENANT,
    pb.RATE_LIMIT_SCOPE_TEAM: RateLimitScope.TEAM,
    pb.RATE_LIMIT_SCOPE_USER: RateLimitScope.USER,
    pb.RATE_LIMIT_SCOPE_API_KEY: RateLimitScope.API_KEY,
    pb.RATE_LIMIT_SCOPE_MODEL: RateLimitScope.MODEL,
}
_DIMENSIONS = {
    pb.USAGE_DIMENSION_TENANT: UsageDimension.TENANT,
    pb.USAGE_DIMENSION_TEAM: UsageDimension.TEAM,
    pb.USAGE_DIMENSION_USER: UsageDimension.USER,
    pb.USAGE_DIMENSION_API_KEY: UsageDimension.API_KEY,
    pb.USAGE_DIMENSION_PROVIDER: UsageDimension.PROVIDER,
    pb.USAGE_DIMENSION_MODEL: UsageDimension.MODEL,
}
_BUCKETS = {
    pb.TIME_BUCKET_HOUR: TimeBucket.HOUR,
    pb.TIME_BUCKET_DAY: TimeBucket.DAY,
    pb.TIME_BUCKET_WEEK: TimeBucket.WEEK,
    pb.TIME_BUCKET_MONTH: TimeBucket.MONTH,
}


def _out(table: Mapping[int, object]) -> dict[object, int]:
    return {v: k for k, v in table.items()}


_SCOPES_OUT, _PERIODS_OUT, _ENFORCEMENT_OUT = _out(_SCOPES), _out(_PERIODS), _out(_ENFORCEMENT)
_METHODS_OUT, _RATE_SCOPES_OUT = _out(_METHODS), _out(_RATE_SCOPES)


def _name(table: Mapping[int, BudgetScope | PeriodKind | Enforcement | RateLimitScope | UsageDimension | TimeBucket], value: int) -> str:
    """A protobuf enum value as the domain names it ("" when unset; an unknown number as is)."""
    if value == 0:
        return ""
    found = table.get(value)
    return str(value) if found is None else found.value


def _enum(table: Mapping[int, T], value: int, field: str, *, default: T | None = None) -> T:
    if value in table:
        return table[value]
    if value == 0 and default is not None:
        return default
    raise InvalidRequest.single(field, "required" if value == 0 else f"unknown value {value}")


def _time(stamp: Timestamp, field: str) -> datetime:
    try:
        return stamp.ToDatetime(tzinfo=UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest.single(field, "out of range") from None


_SPEC_RENAMES = BUDGET_RENAMES


def decode_spec(spec: pb.BudgetSpec) -> BudgetDraft:
    """A ``BudgetSpec`` as a draft; ``InvalidRequest`` (fields named as in the spec) on bad input."""
    return budget_draft(
        name=spec.name,
        scope=_name(_SCOPES, spec.scope),
        scope_id=spec.scope_id,
        limit_micros=spec.limit_micros,
        period=_name(_PERIODS, spec.period),
        rolling_seconds=spec.rolling_seconds,
        enforcement=_name(_ENFORCEMENT, spec.enforcement),
        thresholds=list(spec.thresholds) or None,
        provider=spec.provider,
        model=spec.model,
        enabled=spec.enabled if spec.HasField("enabled") else True,
    )


def encode_budget(budget: Budget) -> pb.Budget:
    return pb.Budget(
        id=budget.id,
        spec=pb.BudgetSpec(
            name=budget.name,
            scope=_SCOPES_OUT[budget.scope],  # type: ignore[arg-type]
            scope_id=budget.scope_id,
            limit_micros=budget.limit_micros,
            period=_PERIODS_OUT[budget.period.kind],  # type: ignore[arg-type]
            rolling_seconds=budget.period.rolling_seconds,
            enforcement=_ENFORCEMENT_OUT[budget.enforcement],  # type: ignore[arg-type]
            thresholds=list(budget.thresholds),
            provider=budget.provider,
            model=budget.model,
            enabled=budget.enabled,
        ),
        create_time=timestamp(budget.created_at),
        update_time=timestamp(budget.updated_at),
    )


def encode_status(report: BudgetReport) -> pb.GetBudgetStatusResponse:
    status, forecast = report.status, report.forecast
    return pb.GetBudgetStatusResponse(
        budget=encode_budget(status.budget),
        period_key=status.window.key,
        period_start_time=timestamp(status.window.start),
        period_end_time=timestamp(status.window.end),
        spent_micros=status.spent_micros,
        held_micros=status.held_micros,
        remaining_micros=status.remaining_micros,
        headroom=status.headroom,
        forecast=pb.Forecast(
            method=_METHODS_OUT[forecast.method],  # type: ignore[arg-type]
            projected_micros=forecast.projected_micros,
            run_rate_micros_per_hour=forecast.run_rate_micros_per_hour,
            period_end_time=timestamp(forecast.period_end),
            exhausted_time=timestamp(forecast.exhausted_at),
        ),
    )


def decode_rate_limit(limit: pb.RateLimit) -> RateLimitDraft:
    with fields_under("rate_limit."):
        return rate_limit_draft(
            scope=_name(_RATE_SCOPES, limit.scope),
            scope_id=limit.scope_id,
            requests_per_minute=limit.requests_per_minute,
            tokens_per_minute=limit.tokens_per_minute,
            burst_requests=limit.burst_requests,
            burst_tokens=limit.burst_tokens,
        )


def encode_rate_limit(limit: RateLimit) -> pb.RateLimit:
    return pb.RateLimit(
        id=limit.id,
        scope=_RATE_SCOPES_OUT[limit.scope],  # type: ignore[arg-type]
        scope_id=limit.scope_id,
        requests_per_minute=limit.requests_per_minute,
        tokens_per_minute=limit.tokens_per_minute,
        burst_requests=limit.burst_requests,
        burst_tokens=limit.burst_tokens,
    )


def encode_usage_row(row: UsageRow) -> pb.UsageRow:
    return pb.UsageRow(
        bucket_start_time=timestamp(row.bucket_start),
        dimensions=row.dimensions,
        requests=row.requests,
        input_tokens=row.input_tokens,
        output_tokens=row.output_tokens,
        cost_micros=row.cost_micros,
    )


def rate_limit_metadata(status: RateLimitStatus | None) -> tuple[tuple[str, str], ...]:
    """The ``x-ratelimit-*`` values of ``status`` as gRPC metadata (for initial or trailing
    metadata of a call that passed the limiter)."""
    return tuple(status.headers().items()) if status is not None else ()


class BudgetServicer(budget_pb2_grpc.BudgetServiceServicer):
    def __init__(self, budgets: ManageBudgets, rate_limits: ManageRateLimits, status: GetBudgetStatus) -> None:
        self._budgets = budgets
        self._rate_limits = rate_limits
        self._status = status

    async def CreateBudget(self, request: pb.CreateBudgetRequest, context: grpc.aio.ServicerContext) -> pb.CreateBudgetResponse:
        principal = current_principal()
        with fields_under("spec.", _SPEC_RENAMES):
            budget = await self._budgets.create(principal, decode_spec(request.spec))
        return pb.CreateBudgetResponse(budget=encode_budget(budget))

    async def UpdateBudget(self, request: pb.UpdateBudgetRequest, context: grpc.aio.ServicerContext) -> pb.UpdateBudgetResponse:
        principal = current_principal()
        if not request.budget_id:
            raise InvalidRequest.single("budget_id", "required")
        with fields_under("spec.", _SPEC_RENAMES):
            budget = await self._budgets.update(principal, request.budget_id, decode_spec(request.spec))
        return pb.UpdateBudgetResponse(budget=encode_budget(budget))

    async def DeleteBudget(self, request: pb.DeleteBudgetRequest, context: grpc.aio.ServicerContext) -> pb.DeleteBudgetResponse:
        principal = current_principal()
        if not request.budget_id:
            raise InvalidRequest.single("budget_id", "required")
        await self._budgets.delete(principal, request.budget_id)
        return pb.DeleteBudgetResponse()

    async def GetBudget(self, request: pb.GetBudgetRequest, context: grpc.aio.ServicerContext) -> pb.GetBudgetResponse:
        principal = current_principal()
        if not request.budget_id:
            raise InvalidRequest.single("budget_id", "required")
        return pb.GetBudgetResponse(budget=encode_budget(await self._budgets.get(principal, request.budget_id)))

    async def ListBudgets(self, request: pb.ListBudgetsRequest, context: grpc.aio.ServicerContext) -> pb.ListBudgetsResponse:
        budgets = await self._budgets.list(current_principal())
        return pb.ListBudgetsResponse(budgets=[encode_budget(b) for b in budgets])

    async def GetBudgetStatus(
        self, request: pb.GetBudgetStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetBudgetStatusResponse:
        principal = current_principal()
        if not request.budget_id:
            raise InvalidRequest.single("budget_id", "required")
        method = _enum(_METHODS, request.forecast_method, "forecast_method", default=ForecastMethod.EWMA)
        return encode_status(await self._status(principal, request.budget_id, method=method))

    async def PutRateLimit(self, request: pb.PutRateLimitRequest, context: grpc.aio.ServicerContext) -> pb.PutRateLimitResponse:
        principal = current_principal()
        with fields_under("rate_limit."):
            limit = await self._rate_limits.put(principal, decode_rate_limit(request.rate_limit))
        return pb.PutRateLimitResponse(rate_limit=encode_rate_limit(limit))

    async def DeleteRateLimit(
        self, request: pb.DeleteRateLimitRequest, context: grpc.aio.ServicerContext
    ) -> pb.DeleteRateLimitResponse:
        principal = current_principal()
        if not request.rate_limit_id:
            raise InvalidRequest.single("rate_limit_id", "required")
        await self._rate_limits.delete(principal, request.rate_limit_id)
        return pb.DeleteRateLimitResponse()

    async def ListRateLimits(
        self, request: pb.ListRateLimitsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListRateLimitsResponse:
        limits = await self._rate_limits.list(current_principal())
        return pb.ListRateLimitsResponse(rate_limits=[encode_rate_limit(r) for r in limits])


_USAGE_RENAMES = {"start": "start_time", "end": "end_time"}


class UsageServicer(budget_pb2_grpc.UsageServiceServicer):
    def __init__(self, usage: QueryUsage, clock: Clock) -> None:
        self._usage = usage
        self._clock = clock

    async def QueryUsage(self, request: pb.QueryUsageRequest, context: grpc.aio.ServicerContext) -> pb.QueryUsageResponse:
        principal = current_principal()
        problems: list[FieldViolation] = []
        times: dict[str, datetime] = {}
        for field in ("start_time", "end_time"):
            if request.HasField(field):
                try:
                    times[field] = _time(getattr(request, field), field)
                except InvalidRequest as exc:
                    problems += exc.violations
        query = usage_query(
            now=self._clock.now(), start=times.get("start_time"), end=times.get("end_time"),
            group_by=[(f"group_by[{i}]", _name(_DIMENSIONS, v)) for i, v in enumerate(request.group_by)],
            bucket=("bucket", _name(_BUCKETS, request.bucket)),
            filters=[(f"filters[{i}].dimension", _name(_DIMENSIONS, f.dimension), f.value) for i, f in enumerate(request.filters)],
            limit=request.limit, problems=problems,
        )
        with fields_under("", _USAGE_RENAMES):
            rows = await self._usage(principal, **query.as_kwargs())  # type: ignore[arg-type]
        return pb.QueryUsageResponse(rows=[encode_usage_row(r) for r in rows])


def add_budget_services(server: grpc.aio.Server, budgets: BudgetServicer, usage: UsageServicer) -> None:
    budget_pb2_grpc.add_BudgetServiceServicer_to_server(budgets, server)
    budget_pb2_grpc.add_UsageServiceServicer_to_server(usage, server)
