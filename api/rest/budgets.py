"""REST mirror of ``BudgetService`` and ``UsageService``: JSON bodies as msgspec Structs (enum values
in lower case, as the domain spells them), errors as problem+json (422 with one entry per field
for bad input), the caller from ``api.auth.current_principal``.

    GET    /v1/budgets                      list                      ({"budgets": [...]})
    POST   /v1/budgets                      create                    (201, a budget)
    GET    /v1/budgets/{id}                 get
    PUT    /v1/budgets/{id}                 replace the definition    (spend so far is kept)
    DELETE /v1/budgets/{id}                 delete                    (204)
    GET    /v1/budgets/{id}/status          spend, holds, headroom and forecast to period end
                                            (?forecast=ewma|linear)
    GET    /v1/rate-limits                  list                      ({"rate_limits": [...]})
    PUT    /v1/rate-limits                  set one node's limit      (replaces that node's)
    DELETE /v1/rate-limits/{id}             delete                    (204)
    GET    /v1/usage                        ?group_by=model,user&bucket=day&from=&to=&limit=
                                            and filters ?tenant= &team= &user= &api_key= &provider= &model=

Changing budgets and rate limits needs the admin role; any member may read them. Usage: admins
see the tenant, other members their own. Decoding is shared with the gRPC edge (``api.budgets``:
``budget_draft``, ``rate_limit_draft``, ``usage_query``); here, JSON bodies and query parameters
are read. ``rate_limit_headers`` renders the ``x-ratelimit-*``
headers of a request that passed the limiter.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from typing import Any, Literal, TypeVar

import msgspec
from litestar import Request, Router, delete, get, post, put
from litestar.params import FromPath, FromQuery

from api.auth import current_principal
from api.budgets import (
    BUDGET_RENAMES,
    UsageParams,
    budget_draft,
    fields_under,
    rate_limit_draft,
    usage_query,
)
from application.budgets import (
    BudgetDraft,
    BudgetReport,
    GetBudgetStatus,
    ManageBudgets,
    ManageRateLimits,
    QueryUsage,
    RateLimitDraft,
)
from application.budgets.ports import UsageDimension, UsageRow
from domain.budgets import (
    Budget,
    ForecastMethod,
    RateLimit,
    RateLimitStatus,
)
from domain.errors import FieldViolation, InvalidRequest
from domain.ports import Clock

__all__ = [
    "BudgetIn",
    "BudgetOut",
    "BudgetStatusOut",
    "RateLimitIn",
    "RateLimitOut",
    "UsageOut",
    "create_budget_router",
    "rate_limit_headers",
]

S = TypeVar("S", bound=msgspec.Struct)

ScopeName = Literal["tenant", "team", "user", "api_key"]
PeriodName = Literal["daily", "weekly", "monthly", "rolling"]
EnforcementName = Literal["hard", "soft"]
RateScopeName = Literal["tenant", "team", "user", "api_key", "model"]

_MAX_BODY = 64 * 1024


def rate_limit_headers(status: RateLimitStatus | None) -> dict[str, str]:
    """The ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}`` headers of a request that
    passed ``EnforceRateLimits.acquire`` (empty when no limit applied): pass them as the
    response's (or stream's) ``headers``. Refusals carry theirs on the 429 already."""
    return status.headers() if status is not None else {}


class BudgetIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A budget as a client defines it; ``scope_id`` empty for a tenant budget, ``rolling_seconds``
    for rolling periods only, ``thresholds`` (percent of the limit) default 50, 80, 100."""

    name: str
    scope: ScopeName
    limit_micros: int
    period: PeriodName
    scope_id: str = ""
    rolling_seconds: int = 0
    enforcement: EnforcementName = "hard"
    thresholds: list[int] | None = None
    provider: str = ""
    model: str = ""
    enabled: bool = True

    def draft(self) -> BudgetDraft:
        return budget_draft(
            name=self.name, scope=self.scope, scope_id=self.scope_id, limit_micros=self.limit_micros,
            period=self.period, rolling_seconds=self.rolling_seconds, enforcement=self.enforcement,
            thresholds=self.thresholds, provider=self.provider, model=self.model, enabled=self.enabled,
        )


class BudgetOut(msgspec.Struct, frozen=True):
    id: str
    name: str
    scope: ScopeName
    scope_id: str
    limit_micros: int
    period: PeriodName
    rolling_seconds: int
    enforcement: EnforcementName
    thresholds: list[int]
    provider: str
    model: str
    enabled: bool
    created_at: datetime | None
    updated_at: datetime | None

    @classmethod
    def of(cls, b: Budget) -> BudgetOut:
        return cls(
            id=b.id, name=b.name, scope=b.scope.value, scope_id=b.scope_id, limit_micros=b.limit_micros,  # type: ignore[arg-type]
            period=b.period.kind.value, rolling_seconds=b.period.rolling_seconds,  # type: ignore[arg-type]
            enforcement=b.enforcement.value, thresholds=list(b.thresholds), provider=b.provider,  # type: ignore[arg-type]
            model=b.model, enabled=b.enabled, created_at=b.created_at, updated_at=b.updated_at,
        )


class BudgetListOut(msgspec.Struct, frozen=True):
    budgets: list[BudgetOut]


class PeriodOut(msgspec.Struct, frozen=True):
    key: str  # "d2026-03-05", "w2026-W10", "m2026-03", "r<block>"
    start: datetime
    end: datetime


class ForecastOut(msgspec.Struct, frozen=True):
    method: Literal["linear", "ewma"]
    projected_micros: int
    run_rate_micros_per_hour: float
    period_end: datetime | None  # None: a rolling window has no end
    exhausted_at: datetime | None  # when the projection reaches the limit, if before the period's end
    will_exceed: bool


class BudgetStatusOut(msgspec.Struct, frozen=True):
    budget: BudgetOut
    period: PeriodOut
    spent_micros: int
    held_micros: int
    remaining_micros: int
    headroom: float
    forecast: ForecastOut

    @classmethod
    def of(cls, report: BudgetReport) -> BudgetStatusOut:
        s, f = report.status, report.forecast
        return cls(
            budget=BudgetOut.of(s.budget),
            period=PeriodOut(s.window.key, s.window.start, s.window.end),
            spent_micros=s.spent_micros, held_micros=s.held_micros, remaining_micros=s.remaining_micros,
            headroom=s.headroom,
            forecast=ForecastOut(
                f.method.value, f.projected_micros, f.run_rate_micros_per_hour, f.period_end,  # type: ignore[arg-type]
                f.exhausted_at, f.will_exceed(s.budget.limit_micros),
            ),
        )


class RateLimitIn(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    scope: RateScopeName
    scope_id: str = ""
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    burst_requests: int = 0
    burst_tokens: int = 0

    def draft(self) -> RateLimitDraft:
        return rate_limit_draft(
            scope=self.scope, scope_id=self.scope_id, requests_per_minute=self.requests_per_minute,
            tokens_per_minute=self.tokens_per_minute, burst_requests=self.burst_requests, burst_tokens=self.burst_tokens,
        )


class RateLimitOut(msgspec.Struct, frozen=True):
    id: str
    scope: RateScopeName
    scope_id: str
    requests_per_minute: int
    tokens_per_minute: int
    burst_requests: int
    burst_tokens: int

    @classmethod
    def of(cls, r: RateLimit) -> RateLimitOut:
        return cls(r.id, r.scope.value, r.scope_id, r.requests_per_minute, r.tokens_per_minute,  # type: ignore[arg-type]
                   r.burst_requests, r.burst_tokens)


class RateLimitListOut(msgspec.Struct, frozen=True):
    rate_limits: list[RateLimitOut]


class UsageRowOut(msgspec.Struct, frozen=True):
    bucket_start: datetime | None  # None when not bucketed
    dimensions: dict[str, str]
    requests: int
    input_tokens: int
    output_tokens: int
    cost_micros: int

    @classmethod
    def of(cls, row: UsageRow) -> UsageRowOut:
        return cls(row.bucket_start, row.dimensions, row.requests, row.input_tokens, row.output_tokens, row.cost_micros)


class UsageOut(msgspec.Struct, frozen=True):
    start: datetime
    end: datetime
    group_by: list[str]
    bucket: str | None
    rows: list[UsageRowOut]


_RENAMES = BUDGET_RENAMES
_AT = re.compile(r"^(?P<message>.*?) - at `\$(?P<path>.*)`$")
_NAMED = re.compile(r"field `(?P<field>[^`]+)`")


async def _decode(request: Request[Any, Any, Any], kind: type[S]) -> S:
    """The JSON body as ``kind``; every decoding failure is a 422 naming the field."""
    body = await request.body()
    if len(body) > _MAX_BODY:
        raise InvalidRequest.single("body", f"larger than {_MAX_BODY} bytes")
    try:
        return msgspec.json.decode(body or b"{}", type=kind)
    except msgspec.ValidationError as exc:
        text = str(exc)
        at = _AT.match(text)
        if at is not None:
            raise InvalidRequest.single(at["path"].lstrip(".") or "body", at["message"]) from None
        named = _NAMED.search(text)
        raise InvalidRequest.single(named["field"] if named else "body", text) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequest.single("body", f"not JSON: {exc}") from None


def _time(value: str, field: str) -> datetime:
    """RFC 3339 (a time zone is required) or a bare date (midnight UTC)."""
    try:
        if len(value) == 10:
            return datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        at = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRequest.single(field, "an RFC 3339 time (2026-03-01T00:00:00Z) or a date (2026-03-01)") from None
    if at.tzinfo is None:
        raise InvalidRequest.single(field, "needs a time zone (e.g. 2026-03-01T00:00:00Z)")
    return at


def _choices(enum: type[Any]) -> str:
    return ", ".join(e.value for e in enum)


def _usage_params(params: Any, now: datetime) -> UsageParams:
    """Decode ``/v1/usage``'s query; every problem at once, named by its parameter."""
    problems: list[FieldViolation] = []
    unknown = set(params.keys()) - {"group_by", "bucket", "from", "to", "limit", *(d.value for d in UsageDimension)}
    problems += [FieldViolation(name, "unknown parameter") for name in sorted(unknown)]
    times: dict[str, datetime] = {}
    for name in ("from", "to"):
        if params.get(name):
            try:
                times[name] = _time(params[name], name)
            except InvalidRequest as exc:
                problems += exc.violations
    limit = None
    if params.get("limit"):
        try:
            limit = int(params["limit"])
        except ValueError:
            problems.append(FieldViolation("limit", "an integer from 1 to 10000"))
    return usage_query(
        now=now, start=times.get("from"), end=times.get("to"),
        group_by=[("group_by", name) for raw in params.getall("group_by", []) for name in filter(None, (x.strip() for x in raw.split(",")))],
        bucket=("bucket", params.get("bucket") or ""),
        filters=[(d.value, d.value, params[d.value]) for d in UsageDimension if d.value in params],
        limit=limit, problems=problems,
    )


def create_budget_router(
    budgets: ManageBudgets, rate_limits: ManageRateLimits, status: GetBudgetStatus, usage: QueryUsage, clock: Clock
) -> Router:
    @get("/budgets")
    async def list_budgets() -> BudgetListOut:
        return BudgetListOut([BudgetOut.of(b) for b in await budgets.list(current_principal())])

    @post("/budgets", status_code=201)
    async def create_budget(request: Request[Any, Any, Any]) -> BudgetOut:
        principal = current_principal()
        draft = (await _decode(request, BudgetIn)).draft()
        with fields_under("", _RENAMES):
            return BudgetOut.of(await budgets.create(principal, draft))

    @get("/budgets/{budget_id:str}")
    async def get_budget(budget_id: FromPath[str]) -> BudgetOut:
        return BudgetOut.of(await budgets.get(current_principal(), budget_id))

    @put("/budgets/{budget_id:str}")
    async def update_budget(budget_id: FromPath[str], request: Request[Any, Any, Any]) -> BudgetOut:
        principal = current_principal()
        draft = (await _decode(request, BudgetIn)).draft()
        with fields_under("", _RENAMES):
            return BudgetOut.of(await budgets.update(principal, budget_id, draft))

    @delete("/budgets/{budget_id:str}", status_code=204)
    async def delete_budget(budget_id: FromPath[str]) -> None:
        await budgets.delete(current_principal(), budget_id)

    @get("/budgets/{budget_id:str}/status")
    async def budget_status(budget_id: FromPath[str], forecast: FromQuery[str] = "ewma") -> BudgetStatusOut:
        principal = current_principal()
        try:
            method = ForecastMethod(forecast)
        except ValueError:
            raise InvalidRequest.single("forecast", f"one of {_choices(ForecastMethod)}") from None
        return BudgetStatusOut.of(await status(principal, budget_id, method=method))

    @get("/rate-limits")
    async def list_rate_limits() -> RateLimitListOut:
        return RateLimitListOut([RateLimitOut.of(r) for r in await rate_limits.list(current_principal())])

    @put("/rate-limits")
    async def put_rate_limit(request: Request[Any, Any, Any]) -> RateLimitOut:
        principal = current_principal()
        draft = (await _decode(request, RateLimitIn)).draft()
        return RateLimitOut.of(await rate_limits.put(principal, draft))

    @delete("/rate-limits/{limit_id:str}", status_code=204)
    async def delete_rate_limit(limit_id: FromPath[str]) -> None:
        await rate_limits.delete(current_principal(), limit_id)

    @get("/usage")
    async def query_usage(request: Request[Any, Any, Any]) -> UsageOut:
        principal = current_principal()
        query = _usage_params(request.query_params, clock.now())
        with fields_under("", {"start": "from", "end": "to"}):
            rows = await usage(principal, **query.as_kwargs())  # type: ignore[arg-type]
        return UsageOut(
            start=query.start, end=query.end, group_by=[d.value for d in query.group_by],
            bucket=query.bucket.value if query.bucket is not None else None,
            rows=[UsageRowOut.of(r) for r in rows],
        )

    return Router(
        path="/v1",
        route_handlers=[
            list_budgets, create_budget, get_budget, update_budget, delete_budget, budget_status,
            list_rate_limits, put_rate_limit, delete_rate_limit, query_usage,
        ],
    )
