"""One contract for the ``LiveLedger`` port, run against the Redis adapter and the in-memory fake the
unit tests use, so the fake cannot drift from the scripts: missing counters, all-or-none holds,
rejection, soft overruns, settle/release idempotency, expiry and rolling buckets."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from redis.asyncio import Redis

from adapters.budgets import RedisLiveLedger
from application.budgets.ports import LiveLedger, ReserveLine, SettleStatus
from domain.budgets import Budget, BudgetScope, Period, counter_for
from tests.unit.budgets.fakes import FakeLiveLedger


class WallClock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return datetime.now(UTC).timestamp()


@pytest.fixture(params=["redis", "fake"])
async def ledger(request: pytest.FixtureRequest, redis_url: str) -> AsyncIterator[LiveLedger]:
    if request.param == "fake":
        yield FakeLiveLedger(WallClock())  # type: ignore[arg-type]
        return
    ns = f"lumina-test:{uuid.uuid4().hex[:10]}"
    redis = Redis.from_url(redis_url)
    yield RedisLiveLedger(redis, namespace=ns)
    keys = [k async for k in redis.scan_iter(match=f"{ns}:*")]
    if keys:
        await redis.delete(*keys)
    await redis.aclose()


def _budget(bid: str, limit: int = 100, period: Period | None = None) -> Budget:
    return Budget(id=bid, tenant_id="acme", name=bid, scope=BudgetScope.TENANT, scope_id="acme", limit_micros=limit,
                  period=period or Period.daily())


NOW = datetime.now(UTC)


async def test_missing_counters_are_reported_until_seeded_and_seeding_never_overwrites(ledger: LiveLedger) -> None:
    a, b = counter_for(_budget("a"), NOW), counter_for(_budget("b"), NOW)
    lines = [ReserveLine(a, 100, True, 10), ReserveLine(b, 100, True, 10)]
    first = await ledger.reserve("acme", "r1", lines, 60)
    assert not first.admitted and first.missing == (0, 1)
    assert (await ledger.status("acme", [a, b])).missing == (0, 1)
    assert (await ledger.settle("acme", "r0", [a], 5)).status is SettleStatus.MISSING
    await ledger.seed("acme", a, 40)
    await ledger.seed("acme", b, 0)
    await ledger.seed("acme", a, 99)  # exists: ignored
    assert (await ledger.reserve("acme", "r1", lines, 60)).admitted
    assert (await ledger.status("acme", [a, b])).lines == ((40, 10), (0, 10))


async def test_holds_are_all_or_none_and_the_first_exceeded_hard_line_is_named(ledger: LiveLedger) -> None:
    a, b, s = (counter_for(_budget(x), NOW) for x in ("a", "b", "s"))
    for c in (a, b, s):
        await ledger.seed("acme", c, 0)
    assert (await ledger.reserve("acme", "r1", [ReserveLine(b, 100, True, 70)], 60)).admitted
    lines = [ReserveLine(a, 100, True, 40), ReserveLine(b, 100, True, 40), ReserveLine(s, 50, False, 40)]
    refused = await ledger.reserve("acme", "r2", lines, 60)
    assert (refused.admitted, refused.rejected) == (False, 1)
    assert (await ledger.status("acme", [a, b, s])).lines == ((0, 0), (0, 70), (0, 0))
    soft = await ledger.reserve("acme", "r3", [ReserveLine(a, 100, True, 30), ReserveLine(s, 50, False, 60)], 60)
    assert soft.admitted and soft.over_soft == (1,)
    again = await ledger.reserve("acme", "r3", [ReserveLine(a, 100, True, 30), ReserveLine(s, 50, False, 60)], 60)
    assert again.admitted  # a retried reserve holds nothing twice
    assert (await ledger.status("acme", [a, s])).lines == ((0, 30), (0, 60))


async def test_settle_moves_spend_once_and_release_after_settle_does_nothing(ledger: LiveLedger) -> None:
    a = counter_for(_budget("a"), NOW)
    await ledger.seed("acme", a, 10)
    await ledger.reserve("acme", "r1", [ReserveLine(a, 100, True, 50)], 60)
    done = await ledger.settle("acme", "r1", [a], 70)
    assert done.status is SettleStatus.SETTLED and done.moves == ((10, 80),)
    dup = await ledger.settle("acme", "r1", [a], 70)
    assert (dup.status, dup.moves) == (SettleStatus.DUPLICATE, ((10, 80),))  # the first settlement's
    assert await ledger.release("acme", "r1", ["a"]) is False
    await ledger.reserve("acme", "r2", [ReserveLine(a, 100, True, 20)], 60)
    assert await ledger.release("acme", "r2", ["a"]) is True
    assert await ledger.release("acme", "r2", ["a"]) is False
    assert (await ledger.settle("acme", "r2", [a], 20)).status is SettleStatus.RELEASED
    assert (await ledger.status("acme", [a])).lines == ((80, 0),)


async def test_expired_holds_free_their_headroom_and_a_late_settle_still_counts(ledger: LiveLedger) -> None:
    a = counter_for(_budget("a"), NOW)
    await ledger.seed("acme", a, 0)
    assert (await ledger.reserve("acme", "r1", [ReserveLine(a, 100, True, 100)], 0.2)).admitted
    assert not (await ledger.reserve("acme", "r2", [ReserveLine(a, 100, True, 1)], 60)).admitted
    await asyncio.sleep(0.3)
    assert (await ledger.status("acme", [a])).lines == ((0, 0),)
    assert (await ledger.settle("acme", "r1", [a], 30)).moves == ((0, 30),)  # the call did happen
    assert (await ledger.reserve("acme", "r2", [ReserveLine(a, 100, True, 70)], 60)).admitted
    assert not (await ledger.reserve("acme", "r3", [ReserveLine(a, 100, True, 1)], 60)).admitted


async def test_rolling_buckets_leave_the_window(ledger: LiveLedger) -> None:
    budget = _budget("roll", 1000, Period.rolling(hours=1))
    t0 = datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC)
    c0 = counter_for(budget, t0)
    await ledger.seed("acme", c0, {})
    await ledger.settle("acme", "r1", [c0], 600)
    c30 = counter_for(budget, t0 + timedelta(minutes=30))
    assert (await ledger.settle("acme", "r2", [c30], 300)).moves == ((600, 900),)
    assert (await ledger.status("acme", [counter_for(budget, t0 + timedelta(minutes=59))])).lines == ((900, 0),)
    later = counter_for(budget, t0 + timedelta(minutes=60))
    assert (await ledger.status("acme", [later])).lines == ((300, 0),)
    assert (await ledger.reserve("acme", "r3", [ReserveLine(later, 1000, True, 700)], 60)).admitted
    # a seeded rolling window starts from the buckets it is given
    other = counter_for(_budget("roll2", 1000, Period.rolling(hours=1)), t0)
    await ledger.seed("acme", other, {other.bucket - 59: 5, other.bucket: 7, other.bucket - 60: 1000})
    assert (await ledger.status("acme", [other])).lines == ((12, 0),)
