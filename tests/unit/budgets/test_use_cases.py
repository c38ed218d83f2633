"""Budget use cases on in-memory fakes: reservations across levels, settle/release/expiry,
thresholds once per period, period boundaries, rolling windows, re-seeding, forecast, management,
rate limits and usage queries."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from application.budgets import (
    BudgetDraft,
    BudgetGuard,
    EnforceRateLimits,
    GetBudgetStatus,
    ManageBudgets,
    ManageRateLimits,
    QueryUsage,
    RateLimitDraft,
)
from application.budgets.ports import UsageDimension
from domain.budgets import (
    BudgetScope,
    BudgetSubject,
    Enforcement,
    ForecastMethod,
    Period,
    RateLimitScope,
)
from domain.chat import Usage
from domain.cost import Price
from domain.errors import BudgetExceeded, InvalidRequest, NotFound, RateLimitExceeded
from domain.events import BudgetThresholdCrossed
from domain.identity import Forbidden, Role
from tests.unit.budgets.fakes import (
    FakeRateLimiter,
    FakeUsageReader,
    World,
    admin,
    make_world,
)

ANN = BudgetSubject("acme", user_id="ann", api_key_id="k1", team_ids=("red",), provider="openai", model="gpt-x")


async def add(world: World, name: str, limit: int, *, scope: BudgetScope = BudgetScope.TENANT, scope_id: str = "",
              period: Period | None = None, **kw: object) -> str:
    b = await ManageBudgets(world.ctx).create(
        admin(), BudgetDraft(name=name, scope=scope, scope_id=scope_id, limit_micros=limit, period=period or Period.daily(), **kw)  # type: ignore[arg-type]
    )
    return b.id


def alerts(world: World) -> list[BudgetThresholdCrossed]:
    return [e for e in world.store.events if isinstance(e, BudgetThresholdCrossed)]


async def test_reserve_holds_on_every_level_or_none_and_names_the_exceeded_budget() -> None:
    w = make_world()
    guard = BudgetGuard(w.ctx)
    await add(w, "company", 1000)
    await add(w, "red team", 1000, scope=BudgetScope.TEAM, scope_id="red")
    user = await add(w, "ann", 300, scope=BudgetScope.USER, scope_id="ann")
    await add(w, "bob", 10, scope=BudgetScope.USER, scope_id="bob")  # not Ann's

    first = await guard.reserve(ANN, 200)
    assert len(first.counters) == 3
    with pytest.raises(BudgetExceeded) as err:
        await guard.reserve(ANN, 200)  # the user budget (300) would be exceeded
    assert err.value.budget_id == user and "'ann'" in err.value.message and err.value.resets_at is not None
    # nothing was held on the other levels by the refused reservation
    statuses = {s.budget.name: s for s in await guard.statuses(ANN)}
    assert {n: s.held_micros for n, s in statuses.items()} == {"company": 200, "red team": 200, "ann": 200}
    # another user of the team still fits under the company and team budgets
    await guard.reserve(BudgetSubject("acme", user_id="cid", team_ids=("red",)), 700)
    with pytest.raises(BudgetExceeded) as err:
        await guard.reserve(BudgetSubject("acme", user_id="dan"), 101)
    assert err.value.budget_name == "company"


async def test_settle_replaces_the_hold_with_the_actual_cost_and_release_frees_it() -> None:
    w = make_world()
    guard = BudgetGuard(w.ctx)
    await add(w, "company", 1000)
    r1 = await guard.reserve(ANN, 600)
    r2 = await guard.reserve(ANN, 400)
    with pytest.raises(BudgetExceeded):
        await guard.reserve(ANN, 1)
    done = await guard.settle(r1, 250, usage=Usage(100, 40), request_id="req1")
    assert not done.duplicate
    assert await guard.release(r2) is True
    assert await guard.release(r2) is False  # idempotent
    (status,) = await guard.statuses(ANN)
    assert (status.spent_micros, status.held_micros) == (250, 0)
    assert await guard.headroom(ANN) == pytest.approx(0.75)
    again = await guard.settle(r1, 250)
    assert again.duplicate
    (status,) = await guard.statuses(ANN)
    assert status.spent_micros == 250  # counted once
    entry = w.store.entries[r1.id]
    assert (entry.actual_micros, entry.reserved_micros, entry.output_tokens, entry.model, entry.request_id) == (
        250, 600, 40, "gpt-x", "req1")


async def test_expired_holds_free_their_headroom() -> None:
    w = make_world()
    guard = BudgetGuard(w.ctx)
    await add(w, "company", 100)
    await guard.reserve(ANN, 100, ttl_seconds=30)
    with pytest.raises(BudgetExceeded):
        await guard.reserve(ANN, 1)
    w.clock.advance(seconds=31)
    late = await guard.reserve(ANN, 100)
    assert late.amount_micros == 100


async def test_soft_budgets_never_reject_but_say_they_are_over() -> None:
    w = make_world()
    guard = BudgetGuard(w.ctx)
    await add(w, "soft", 100, enforcement=Enforcement.SOFT)
    r = await guard.reserve(ANN, 150)
    assert r.over_soft == ("soft",)
    await guard.settle(r, 150)
    assert [a.threshold_percent for a in alerts(w)] == [50, 80, 100]
    assert all(a.enforcement == "soft" for a in alerts(w))


async def test_thresholds_alert_once_per_period_and_again_in_the_next() -> None:
    w = make_world(datetime(2026, 3, 10, 10, tzinfo=UTC))
    guard = BudgetGuard(w.ctx)
    bid = await add(w, "company", 1000)
    for amount in (300, 250, 100, 100):  # 300, 550 (50%), 650, 750
        await guard.settle(await guard.reserve(ANN, amount), amount)
    assert [(a.threshold_percent, a.spent_micros, a.period_key) for a in alerts(w)] == [(50, 550, "d2026-03-10")]
    await guard.settle(await guard.reserve(ANN, 250), 250)  # 1000: 80 and 100 at once
    assert [a.threshold_percent for a in alerts(w)] == [50, 80, 100]
    # the live counter is lost (Redis restart) and rebuilt: crossing 50% again is not re-announced
    w.ledger.drop_counters()
    assert (await guard.statuses(ANN))[0].spent_micros == 1000
    # the next day starts from zero and alerts again
    w.clock.advance(hours=14)
    await guard.settle(await guard.reserve(ANN, 600), 600)
    assert [(a.threshold_percent, a.period_key) for a in alerts(w)][-1] == (50, "d2026-03-11")
    assert all(a.budget_id == bid and a.subject == "lumina.acme.budget.threshold_crossed" for a in alerts(w))


async def test_a_reservation_straddling_midnight_is_charged_to_the_day_it_was_admitted() -> None:
    w = make_world(datetime(2026, 3, 10, 23, 59, 59, tzinfo=UTC))
    guard = BudgetGuard(w.ctx)
    bid = await add(w, "company", 1000)
    r = await guard.reserve(ANN, 500)
    w.clock.advance(seconds=5)
    await guard.settle(r, 400)
    (today,) = await guard.statuses(ANN)
    assert today.window.key == "d2026-03-11" and today.spent_micros == 0
    assert w.store.spend == {(bid, datetime(2026, 3, 10, 23, tzinfo=UTC)): 400}


async def test_rolling_window_spend_leaves_after_the_window() -> None:
    w = make_world(datetime(2026, 3, 10, 12, 0, 30, tzinfo=UTC))
    guard = BudgetGuard(w.ctx)
    await add(w, "hourly", 1000, period=Period.rolling(hours=1))
    await guard.settle(await guard.reserve(ANN, 600), 600)
    w.clock.advance(minutes=30)
    await guard.settle(await guard.reserve(ANN, 300), 300)
    with pytest.raises(BudgetExceeded):
        await guard.reserve(ANN, 200)
    w.clock.advance(minutes=30)  # 12:30:30 + 30 min: the first spend (12:00 bucket) has left
    (status,) = await guard.statuses(ANN)
    assert status.spent_micros == 300
    await guard.reserve(ANN, 700)
    # the rolling counter is rebuilt bucket by bucket from the durable ledger
    w.ledger.drop_counters()
    (status,) = await guard.statuses(ANN)
    assert (status.spent_micros, status.held_micros) == (300, 700)


async def test_missing_counters_are_seeded_from_the_durable_ledger_before_reserving() -> None:
    w = make_world()
    guard = BudgetGuard(w.ctx)
    await add(w, "company", 1000)
    await guard.settle(await guard.reserve(ANN, 900), 900)
    w.ledger.drop_counters()
    with pytest.raises(BudgetExceeded):
        await guard.reserve(ANN, 101)
    await guard.reserve(ANN, 100)


async def test_a_failed_durable_write_can_be_retried_by_settling_again() -> None:
    w = make_world()
    guard = BudgetGuard(w.ctx)
    await add(w, "company", 1000)
    r = await guard.reserve(ANN, 100)
    w.store.fail_next_commit = RuntimeError("database down")
    with pytest.raises(RuntimeError):
        await guard.settle(r, 80)
    assert r.id not in w.store.entries
    retried = await guard.settle(r, 80)
    assert retried.duplicate and w.store.entries[r.id].actual_micros == 80
    (status,) = await guard.statuses(ANN)
    assert status.spent_micros == 80


async def test_no_budget_means_no_hold_but_the_entry_feeds_predictions() -> None:
    w = make_world()
    guard = BudgetGuard(w.ctx)
    for n in range(30):
        r = await guard.reserve(ANN, 10, task="chat")
        assert r.counters == ()
        await guard.settle(r, 10, usage=Usage(10, 100 + n * 10))
    assert await guard.headroom(ANN) == 1.0
    price = Price(input_per_mtok=1.0, output_per_mtok=10.0)
    # p90 of 100..390 is 361 tokens: 1000 in + 361 out
    assert await guard.estimate(price, 1000, model="gpt-x", task="chat", max_tokens=4000) == 1000 + 3610
    assert await guard.estimate(price, 1000, model="gpt-x", task="chat", max_tokens=200) == 1000 + 2000
    assert await guard.estimate(price, 1000, model="gpt-x", predictive=False, max_tokens=4000) == 1000 + 40000
    # an unseen model and task: the cap when known, else the default guess
    assert await guard.estimate(price, 0, model="new", model_max_output=300) == 3000
    stats = await guard.predict.stats("gpt-x", "chat")
    assert stats is not None and stats.samples == 30 and stats.max == 390


async def test_headroom_per_candidate_model_sees_model_caps() -> None:
    w = make_world()
    guard = BudgetGuard(w.ctx)
    await add(w, "company", 1000)
    await add(w, "expensive model", 100, model="gpt-big")
    await guard.settle(await guard.reserve(BudgetSubject("acme", model="gpt-big"), 90), 90)
    room = await guard.headroom_for(BudgetSubject("acme"), [("openai", "gpt-big"), ("openai", "gpt-small")])
    assert room[("openai", "gpt-big")] == pytest.approx(0.1)
    assert room[("openai", "gpt-small")] == pytest.approx(0.91)


async def test_budget_status_reports_spend_headroom_and_forecast() -> None:
    w = make_world(datetime(2026, 3, 10, 0, 0, tzinfo=UTC))
    guard = BudgetGuard(w.ctx)
    bid = await add(w, "company", 100_000)
    for _ in range(12):  # 1000 per hour for 12 hours
        await guard.settle(await guard.reserve(ANN, 1000), 1000)
        w.clock.advance(hours=1)
    held = await guard.reserve(ANN, 500)
    report = await GetBudgetStatus(w.ctx)(admin(role=Role.VIEWER), bid)
    assert (report.status.spent_micros, report.status.held_micros) == (12_000, 500)
    assert report.status.headroom == pytest.approx(0.875)
    assert report.forecast.method is ForecastMethod.EWMA
    assert report.forecast.projected_micros == pytest.approx(24_000, rel=0.01)
    linear = await GetBudgetStatus(w.ctx)(admin(), bid, method=ForecastMethod.LINEAR)
    assert linear.forecast.projected_micros == pytest.approx(24_000, rel=0.01)
    await guard.release(held)
    with pytest.raises(NotFound):
        await GetBudgetStatus(w.ctx)(admin(tenant="other"), bid)


async def test_managing_budgets_needs_an_admin_and_validates() -> None:
    w = make_world()
    manage = ManageBudgets(w.ctx)
    member = admin(role=Role.MEMBER, user="ann")
    draft = BudgetDraft(name="company", scope=BudgetScope.TENANT, limit_micros=100, period=Period.monthly())
    with pytest.raises(Forbidden):
        await manage.create(member, draft)
    created = await manage.create(admin(), draft)
    assert created.scope_id == "acme" and created.tenant_id == "acme"
    with pytest.raises(InvalidRequest):
        await manage.create(admin(), draft)  # same name
    with pytest.raises(InvalidRequest):
        await manage.create(admin(), BudgetDraft(name="u", scope=BudgetScope.USER, limit_micros=100, period=Period.daily()))
    updated = await manage.update(admin(), created.id, BudgetDraft(
        name="company", scope=BudgetScope.TENANT, limit_micros=500, period=Period.monthly()))
    assert updated.limit_micros == 500 and updated.created_at == created.created_at
    assert [b.limit_micros for b in await manage.list(member)] == [500]
    await manage.delete(admin(), created.id)
    with pytest.raises(NotFound):
        await manage.delete(admin(), created.id)
    assert await manage.list(member) == []


async def test_a_limit_change_applies_to_the_next_reservation() -> None:
    w = make_world()
    guard = BudgetGuard(w.ctx)
    bid = await add(w, "company", 100)
    with pytest.raises(BudgetExceeded):
        await guard.reserve(ANN, 150)
    await ManageBudgets(w.ctx).update(admin(), bid, BudgetDraft(
        name="company", scope=BudgetScope.TENANT, limit_micros=200, period=Period.daily()))
    await guard.reserve(ANN, 150)


async def test_rate_limits_allow_the_rate_and_reject_with_retry_after_and_headers() -> None:
    w = make_world()
    limiter = FakeRateLimiter(w.clock)
    limits = EnforceRateLimits(w.ctx, limiter)
    manage = ManageRateLimits(w.ctx)
    await manage.put(admin(), RateLimitDraft(scope=RateLimitScope.API_KEY, scope_id="k1", requests_per_minute=3, tokens_per_minute=1000))
    await manage.put(admin(), RateLimitDraft(scope=RateLimitScope.MODEL, scope_id="gpt-x", requests_per_minute=100))
    statuses = [await limits.acquire(ANN, tokens=100) for _ in range(3)]
    assert [s.requests.remaining for s in statuses if s.requests] == [2, 1, 0]
    assert statuses[0].headers()["x-ratelimit-limit-requests"] == "3"
    assert statuses[-1].headers()["x-ratelimit-remaining-tokens"] == "700"
    with pytest.raises(RateLimitExceeded) as err:
        await limits.acquire(ANN, tokens=100)
    assert err.value.retry_after == pytest.approx(20.0)
    assert "api_key k1" in err.value.message and err.value.headers["x-ratelimit-remaining-requests"] == "0"
    # the refused request charged nothing; 20 s later the meters are full again (tokens: 300
    # used, 333 refilled), so 700 tokens leave 300
    w.clock.advance(seconds=20)
    after = await limits.acquire(ANN, tokens=700)
    assert after.tokens is not None and after.tokens.remaining == 300
    with pytest.raises(RateLimitExceeded):
        await limits.acquire(ANN, tokens=400)
    # actual usage below the estimate gives tokens back: 20 s later (when the request meter lets
    # one more through), 400 tokens leave 600 instead of 233
    await limits.adjust(ANN, tokens=-500)
    w.clock.advance(seconds=20)
    refunded = await limits.acquire(ANN, tokens=400)
    assert refunded.tokens is not None and refunded.tokens.remaining == 600
    with pytest.raises(RateLimitExceeded) as err:
        await limits.acquire(ANN, tokens=5000)  # more than a minute's worth: never passes
    assert err.value.retry_after is None
    # another key is not limited by k1's limit
    other = await limits.acquire(BudgetSubject("acme", api_key_id="k2", model="gpt-x"))
    assert other.tokens is None and other.requests is not None and other.requests.limit == 100
    # putting the same node again replaces its limit
    before = {r.scope_id: r.id for r in await manage.list(admin())}
    again = await manage.put(admin(), RateLimitDraft(scope=RateLimitScope.API_KEY, scope_id="k1", requests_per_minute=5))
    assert [r.requests_per_minute for r in await manage.list(admin()) if r.scope_id == "k1"] == [5]
    assert again.id == before["k1"]


async def test_usage_queries_narrow_members_to_their_own_usage() -> None:
    reader = FakeUsageReader()
    query = QueryUsage(reader)
    start, end = datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)
    await query(admin(), start=start, end=end, group_by=[UsageDimension.MODEL], filters={UsageDimension.TENANT: "x"})
    await query(admin(role=Role.MEMBER, user="ann"), start=start, end=end, filters={UsageDimension.USER: "bob"})
    assert reader.queries[0].filters == {} and reader.queries[0].tenant_id == "acme"
    assert reader.queries[1].filters == {UsageDimension.USER: "ann"}
    with pytest.raises(InvalidRequest):
        await query(admin(), start=end, end=start)
    with pytest.raises(InvalidRequest):
        await query(admin(), start=start, end=start + timedelta(days=500))


async def test_the_alert_latch_keeps_a_recrossed_threshold_silent_in_the_same_period() -> None:
    w = make_world()
    guard = BudgetGuard(w.ctx)
    await add(w, "company", 1000)
    await guard.settle(await guard.reserve(ANN, 600), 600)
    # the live counter comes back lower than the truth (lost between the live and the durable
    # write, say) and the next settlement crosses 50 % a second time
    w.ledger.counters = {k: 100 for k in w.ledger.counters}
    await guard.settle(await guard.reserve(ANN, 500), 500)
    assert [a.threshold_percent for a in alerts(w)] == [50]


async def test_a_retried_settle_finishes_the_alerts_a_failed_one_left_undone() -> None:
    w = make_world()
    guard = BudgetGuard(w.ctx)
    await add(w, "company", 1000)
    r = await guard.reserve(ANN, 600)
    w.store.fail_next_commit = RuntimeError("database down")  # the ledger entry's transaction
    with pytest.raises(RuntimeError):
        await guard.settle(r, 600)
    assert alerts(w) == [] and r.id not in w.store.entries
    retried = await guard.settle(r, 600)
    assert retried.duplicate and [a.threshold_percent for a in retried.alerts] == [50]
    assert [a.threshold_percent for a in alerts(w)] == [50] and w.store.entries[r.id].actual_micros == 600
    assert (await guard.settle(r, 600)).alerts == ()  # once per period, however often it is retried


async def test_settling_a_released_reservation_charges_nothing() -> None:
    w = make_world()
    guard = BudgetGuard(w.ctx)
    await add(w, "company", 1000)
    r = await guard.reserve(ANN, 600)
    assert await guard.release(r)
    late = await guard.settle(r, 600)
    assert late.duplicate and late.actual_micros == 0 and r.id not in w.store.entries
    assert (await guard.statuses(ANN))[0].spent_micros == 0
