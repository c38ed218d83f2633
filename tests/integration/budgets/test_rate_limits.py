"""GCRA rate limits on real Redis, shared by two replicas: the configured rate passes, the rest is
refused with a sane Retry-After, the Lua arithmetic matches the domain's reference, and the use
case reads its limits from Postgres and answers with the x-ratelimit-* values."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import grpc
import pytest

from adapters.budgets import RedisRateLimiter
from api.errors import map_error
from application.budgets import ManageRateLimits, RateLimitDraft
from application.budgets.ports import Meter
from domain.budgets import BudgetSubject, RateLimitScope, gcra
from domain.errors import RateLimitExceeded
from tests.integration.budgets.conftest import Replica, Scope


async def test_two_limiters_share_one_meter_and_refuse_above_the_rate(scope: Scope, replicas: Callable[..., Replica]) -> None:
    a, b = replicas(), replicas()
    limiters = [RedisRateLimiter(a.redis, namespace=scope.namespace), RedisRateLimiter(b.redis, namespace=scope.namespace)]
    meter = Meter("key:k1:rpm", rate=60, cost=1)  # one per second, bursts of 60
    started = time.monotonic()
    results = await asyncio.gather(*(limiters[i % 2].acquire(scope.tenant, [meter]) for i in range(200)))
    elapsed = time.monotonic() - started
    allowed = [r[0] for r in results if r[0].allowed]
    refused = [r[0] for r in results if not r[0].allowed]
    assert 60 <= len(allowed) <= 60 + int(elapsed) + 1
    assert min(r.remaining for r in allowed) == 0 and max(r.remaining for r in allowed) == 59
    assert all(0 < r.retry_after <= 1.0 + elapsed + 0.01 for r in refused)
    assert all(r.remaining == 0 and 58 <= r.reset_after <= 60.01 for r in refused)
    await asyncio.sleep(max(r.retry_after for r in refused) + 0.05)
    (after,) = await limiters[1].acquire(scope.tenant, [meter])
    assert after.allowed


async def test_the_lua_meter_follows_the_domain_reference(scope: Scope, replicas: Callable[..., Replica]) -> None:
    limiter = RedisRateLimiter(replicas().redis, namespace=scope.namespace)
    tokens = Meter("tpm", rate=1000, cost=400)
    (first,) = await limiter.acquire(scope.tenant, [tokens])
    ref = gcra(None, 0.0, rate=1000, cost=400)
    assert first.allowed and first.remaining == ref.remaining == 600
    assert first.reset_after == pytest.approx(ref.reset_after, abs=0.05)
    big = Meter("tpm", rate=1000, cost=700)
    requests = Meter("rpm", rate=10, cost=1)
    second = await limiter.acquire(scope.tenant, [requests, big])
    ref2 = gcra(ref.tat, 0.0, rate=1000, cost=700)
    assert [r.allowed for r in second] == [True, False]  # the requests meter would pass ...
    assert second[1].retry_after == pytest.approx(ref2.retry_after, abs=0.05)  # ~6 s
    (rpm,) = await limiter.acquire(scope.tenant, [requests])
    assert rpm.remaining == 9  # ... but was not charged: all meters or none
    await limiter.adjust(scope.tenant, [Meter("tpm", rate=1000, cost=-300)])  # 300 tokens back
    (refunded,) = await limiter.acquire(scope.tenant, [big])
    assert refunded.allowed and refunded.remaining == pytest.approx(200, abs=1)


async def test_enforce_rate_limits_reads_limits_from_postgres_and_reports_headers(
    scope: Scope, replicas: Callable[..., Replica]
) -> None:
    a, b = replicas(), replicas()
    manage = ManageRateLimits(a.ctx)
    await manage.put(scope.admin, RateLimitDraft(scope=RateLimitScope.USER, scope_id="ann", requests_per_minute=5, tokens_per_minute=10_000))
    await manage.put(scope.admin, RateLimitDraft(scope=RateLimitScope.MODEL, scope_id="sim-small", requests_per_minute=1000))
    ann = BudgetSubject(scope.tenant, user_id="ann", model="sim-small")
    statuses = [await (a, b)[i % 2].limits.acquire(ann, tokens=1000) for i in range(5)]
    headers = statuses[-1].headers()
    assert headers["x-ratelimit-limit-requests"] == "5" and headers["x-ratelimit-remaining-requests"] == "0"
    assert headers["x-ratelimit-limit-tokens"] == "10000"
    assert 5000 <= int(headers["x-ratelimit-remaining-tokens"]) < 5200  # 166 tokens refill per second
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    with pytest.raises(RateLimitExceeded) as err:
        await b.limits.acquire(ann, tokens=1000)
    exc = err.value
    assert exc.retry_after is not None and 11 < exc.retry_after <= 12.01  # 5/min: one every 12 s
    assert "user ann" in exc.message and exc.headers["x-ratelimit-remaining-requests"] == "0"
    mapped = map_error(exc)
    assert (mapped.grpc_code, mapped.http_status) == (grpc.StatusCode.RESOURCE_EXHAUSTED, 429)
    # another user is limited only by the model's limit
    bob = await a.limits.acquire(BudgetSubject(scope.tenant, user_id="bob", model="sim-small"), tokens=1000)
    assert bob.requests is not None and bob.requests.limit == 1000 and bob.tokens is None
