"""The gRPC and REST budget edges decode through one set of functions (``api.budgets``): the same
definition sent either way is the same draft, and the same mistake the same field violation."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from api.budgets import (
    DEFAULT_THRESHOLDS,
    DEFAULT_USAGE_LIMIT,
    DEFAULT_USAGE_SPAN,
    budget_draft,
    usage_query,
)
from api.grpc.budget import decode_rate_limit, decode_spec
from api.rest.budgets import BudgetIn, RateLimitIn
from application.budgets.ports import TimeBucket, UsageDimension
from domain.budgets import BudgetScope, Enforcement, PeriodKind, RateLimitScope
from domain.errors import InvalidRequest
from lumina.v1 import budget_pb2 as pb


def test_the_same_budget_sent_over_grpc_or_rest_is_the_same_draft() -> None:
    spec = pb.BudgetSpec(name="eu team", scope=pb.BUDGET_SCOPE_TEAM, scope_id="t1", limit_micros=5_000_000,
                         period=pb.PERIOD_KIND_ROLLING, rolling_seconds=3600, enforcement=pb.ENFORCEMENT_SOFT,
                         provider="openai", model="gpt-4o")
    body = BudgetIn(name="eu team", scope="team", scope_id="t1", limit_micros=5_000_000, period="rolling",
                    rolling_seconds=3600, enforcement="soft", provider="openai", model="gpt-4o")
    assert decode_spec(spec) == body.draft()
    draft = body.draft()
    assert (draft.scope, draft.period.kind, draft.enforcement) == (BudgetScope.TEAM, PeriodKind.ROLLING, Enforcement.SOFT)
    assert draft.thresholds == DEFAULT_THRESHOLDS


def test_the_same_rate_limit_either_way() -> None:
    grpc_draft = decode_rate_limit(pb.RateLimit(scope=pb.RATE_LIMIT_SCOPE_MODEL, scope_id="m", requests_per_minute=5))
    rest_draft = RateLimitIn(scope="model", scope_id="m", requests_per_minute=5).draft()
    assert grpc_draft == rest_draft and grpc_draft.scope is RateLimitScope.MODEL


def test_the_same_mistakes_are_the_same_violations() -> None:
    with pytest.raises(InvalidRequest) as over_grpc:
        decode_spec(pb.BudgetSpec(name="x", limit_micros=5, period=pb.PERIOD_KIND_DAILY, rolling_seconds=60))
    with pytest.raises(InvalidRequest) as shared:
        budget_draft(name="x", scope="", limit_micros=5, period="daily", rolling_seconds=60)
    assert over_grpc.value.violations == shared.value.violations
    assert [v.field for v in shared.value.violations] == ["scope"]  # every enum problem at once, before the period
    with pytest.raises(InvalidRequest) as period:
        BudgetIn(name="x", scope="tenant", limit_micros=5, period="daily", rolling_seconds=60).draft()
    assert [v.field for v in period.value.violations] == ["rolling_seconds"]


def test_usage_queries_default_and_report_every_problem_at_once() -> None:
    now = datetime(2026, 3, 1, tzinfo=UTC)
    query = usage_query(now=now, group_by=[("group_by", "model")], bucket=("bucket", "day"))
    assert (query.start, query.end, query.limit) == (now - DEFAULT_USAGE_SPAN, now, DEFAULT_USAGE_LIMIT)
    assert query.group_by == [UsageDimension.MODEL] and query.bucket is TimeBucket.DAY
    with pytest.raises(InvalidRequest) as bad:
        usage_query(now=now, group_by=[("group_by[0]", "colour")], bucket=("bucket", "fortnight"),
                    filters=[("f[0]", "model", "a"), ("f[1]", "model", "b")], end=now - timedelta(days=1))
    assert [v.field for v in bad.value.violations] == ["group_by[0]", "bucket", "f[1]"]
