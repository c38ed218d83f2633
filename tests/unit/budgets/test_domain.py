"""The pure budget domain: periods and their keys, rolling buckets, which budgets apply, validation,
thresholds, headroom, forecasts, output-token quantiles, reservations and GCRA."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from domain.budgets import (
    Budget,
    BudgetScope,
    BudgetStatus,
    BudgetSubject,
    Enforcement,
    ForecastMethod,
    MeterStatus,
    Period,
    RateLimit,
    RateLimitScope,
    RateLimitStatus,
    SpendPoint,
    applicable_budgets,
    applicable_rate_limits,
    counter_for,
    crossed_thresholds,
    forecast_spend,
    format_reset,
    gcra,
    headroom_fraction,
    predict_output_tokens,
    quantile,
    reservation_micros,
    window_for,
)
from domain.cost import Price
from domain.errors import InvalidRequest


def at(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def budget(bid: str = "b1", *, scope: BudgetScope = BudgetScope.TENANT, scope_id: str = "acme", limit: int = 1000,
           period: Period | None = None, **kw: object) -> Budget:
    return Budget(id=bid, tenant_id="acme", name=bid, scope=scope, scope_id=scope_id, limit_micros=limit,
                  period=period or Period.daily(), **kw)  # type: ignore[arg-type]


# --- periods --------------------------------------------------------------------------------------


def test_daily_window_is_the_utc_day_and_its_key_names_it() -> None:
    w = window_for(Period.daily(), datetime(2026, 3, 10, 23, 59, 59, tzinfo=UTC))
    assert (w.start, w.end, w.key) == (at(2026, 3, 10), at(2026, 3, 11), "d2026-03-10")
    # an instant in another zone belongs to its UTC day
    from datetime import timezone

    tokyo = datetime(2026, 3, 11, 8, 0, tzinfo=timezone(timedelta(hours=9)))
    assert window_for(Period.daily(), tokyo).key == "d2026-03-10"
    assert window_for(Period.daily(), at(2026, 3, 11)).key == "d2026-03-11"


def test_weekly_window_starts_monday_and_uses_the_iso_week_year() -> None:
    w = window_for(Period.weekly(), at(2026, 1, 1, 12))  # a Thursday
    assert (w.start, w.end, w.key) == (at(2025, 12, 29), at(2026, 1, 5), "w2026-W01")
    sunday = window_for(Period.weekly(), datetime(2026, 1, 4, 23, 59, 59, 999999, tzinfo=UTC))
    assert sunday.key == "w2026-W01"
    assert window_for(Period.weekly(), at(2026, 1, 5)).key == "w2026-W02"


def test_monthly_window_handles_december_and_leap_february() -> None:
    dec = window_for(Period.monthly(), at(2025, 12, 31, 23))
    assert (dec.start, dec.end, dec.key) == (at(2025, 12, 1), at(2026, 1, 1), "m2025-12")
    feb = window_for(Period.monthly(), at(2028, 2, 29, 12))
    assert (feb.start, feb.end) == (at(2028, 2, 1), at(2028, 3, 1))


def test_rolling_window_is_sixty_buckets_ending_at_the_instant() -> None:
    p = Period.rolling(hours=1)
    now = datetime(2026, 3, 10, 12, 30, 15, tzinfo=UTC)
    w = window_for(p, now)
    assert w.end == now
    assert w.start == datetime(2026, 3, 10, 11, 31, tzinfo=UTC)  # 59 whole minutes plus the current one
    c = counter_for(budget(period=p), now)
    assert c.rolling and c.buckets == 60 and c.bucket_seconds == 60
    assert c.window_start == w.start and c.window_end == datetime(2026, 3, 10, 12, 31, tzinfo=UTC)
    assert c.ledger_bucket == datetime(2026, 3, 10, 12, 30, tzinfo=UTC)
    # a day-long window has 24-minute buckets
    assert counter_for(budget(period=Period.rolling(days=1)), now).bucket_seconds == 1440


def test_calendar_counter_is_keyed_by_period_and_ledgered_by_hour() -> None:
    c = counter_for(budget(period=Period.monthly()), datetime(2026, 3, 10, 12, 45, 1, tzinfo=UTC))
    assert (c.key, c.alert_key, c.rolling) == ("m2026-03", "m2026-03", False)
    assert c.ledger_bucket == at(2026, 3, 10, 12)
    assert (c.window_start, c.window_end) == (at(2026, 3, 1), at(2026, 4, 1))
    assert c.expires_at > c.window_end


def test_naive_instants_and_bad_periods_are_refused() -> None:
    with pytest.raises(InvalidRequest):
        window_for(Period.daily(), datetime(2026, 1, 1))
    with pytest.raises(InvalidRequest):
        Period.rolling(seconds=30)
    with pytest.raises(InvalidRequest):
        Period(Period.daily().kind, rolling_seconds=60)


# --- budgets --------------------------------------------------------------------------------------


def test_budget_validation_names_every_bad_field() -> None:
    with pytest.raises(InvalidRequest) as err:
        Budget(id="b", tenant_id="acme", name=" ", scope=BudgetScope.TENANT, scope_id="other", limit_micros=0,
               period=Period.daily(), thresholds=(80, 50))
    fields = {v.field for v in err.value.violations}
    assert fields == {"name", "scope_id", "limit_micros", "thresholds"}


def test_applicable_budgets_follow_the_hierarchy_and_caps() -> None:
    budgets = [
        budget("k", scope=BudgetScope.API_KEY, scope_id="key1"),
        budget("u", scope=BudgetScope.USER, scope_id="ann"),
        budget("t", scope=BudgetScope.TEAM, scope_id="red"),
        budget("x"),
        budget("m", model="gpt-x"),
        budget("p", provider="openai"),
        budget("other-user", scope=BudgetScope.USER, scope_id="bob"),
        budget("off", enabled=False),
    ]
    subject = BudgetSubject("acme", user_id="ann", api_key_id="key1", team_ids=("red", "blue"), provider="openai", model="gpt-y")
    assert [b.id for b in applicable_budgets(budgets, subject)] == ["p", "x", "t", "u", "k"]
    other_tenant = BudgetSubject("zeta", user_id="ann")
    assert applicable_budgets(budgets, other_tenant) == []
    # no API key: key budgets do not apply, even one whose scope_id is empty-looking
    assert "k" not in [b.id for b in applicable_budgets(budgets, BudgetSubject("acme", user_id="ann"))]


def test_crossed_thresholds_are_those_reached_by_this_move_only() -> None:
    assert crossed_thresholds((50, 80, 100), 1000, 0, 499) == ()
    assert crossed_thresholds((50, 80, 100), 1000, 0, 500) == (50,)
    assert crossed_thresholds((50, 80, 100), 1000, 500, 1000) == (80, 100)
    assert crossed_thresholds((50, 80, 100), 1000, 800, 1200) == (100,)
    assert crossed_thresholds((50, 80, 100, 120), 1000, 1000, 1300) == (120,)


def test_headroom_is_the_smallest_free_fraction() -> None:
    w = window_for(Period.daily(), at(2026, 3, 10))
    hard = BudgetStatus(budget("h", limit=1000), w, spent_micros=600, held_micros=200)
    soft = BudgetStatus(budget("s", limit=100, enforcement=Enforcement.SOFT), w, spent_micros=95)
    assert hard.remaining_micros == 200 and hard.headroom == pytest.approx(0.2)
    assert headroom_fraction([hard, soft]) == pytest.approx(0.05)
    assert headroom_fraction([hard, soft], hard_only=True) == pytest.approx(0.2)
    assert headroom_fraction([]) == 1.0
    over = BudgetStatus(budget("o", limit=100), w, spent_micros=150)
    assert over.headroom == 0 and over.used_fraction == 1.5


# --- forecast ---------------------------------------------------------------------------------


def test_linear_forecast_extrapolates_the_run_rate_to_period_end() -> None:
    b = budget(limit=10_000_000, period=Period.monthly())
    now = at(2026, 4, 11)  # 10 of 30 days elapsed
    w = window_for(b.period, now)
    f = forecast_spend(b, w, 1_000_000, [], now, method=ForecastMethod.LINEAR)
    assert f.method is ForecastMethod.LINEAR
    assert f.projected_micros == pytest.approx(3_000_000, rel=1e-6)
    assert f.exhausted_at is None and f.period_end == at(2026, 5, 1)
    hot = forecast_spend(b, w, 5_000_000, [], now, method=ForecastMethod.LINEAR)
    assert hot.will_exceed(b.limit_micros)
    assert hot.exhausted_at == now + timedelta(days=10)


def test_ewma_forecast_follows_a_recent_change_of_pace() -> None:
    b = budget(limit=10**12, period=Period.daily())
    now = at(2026, 3, 10, 12)
    w = window_for(b.period, now)
    # 100/h for a week, then 1000/h for the last 12 hours
    history = [SpendPoint(now - timedelta(hours=h), 100 if h > 12 else 1000) for h in range(1, 24 * 7)]
    spent = sum(p.micros for p in history if p.at >= w.start)
    linear = forecast_spend(b, w, spent, history, now, method=ForecastMethod.LINEAR)
    ewma = forecast_spend(b, w, spent, history, now, method=ForecastMethod.EWMA, half_life_hours=3)
    assert ewma.method is ForecastMethod.EWMA
    assert 900 < ewma.run_rate_micros_per_hour <= 1000
    assert ewma.projected_micros - spent == pytest.approx(ewma.run_rate_micros_per_hour * 12, abs=1)
    assert linear.run_rate_micros_per_hour == pytest.approx(1000)  # only this period's 12 hours
    # a quiet period: the EWMA of zeros is zero, nothing more is expected
    quiet = forecast_spend(b, w, 0, [], now)
    assert quiet.projected_micros == 0 and quiet.exhausted_at is None


def test_ewma_falls_back_to_linear_without_a_complete_hour() -> None:
    b = budget(period=Period.daily())
    now = at(2026, 3, 10, 0, 30)
    f = forecast_spend(b, window_for(b.period, now), 10, [], now, lookback=timedelta(minutes=30))
    assert f.method is ForecastMethod.LINEAR and f.run_rate_micros_per_hour == pytest.approx(20)


def test_rolling_forecast_is_the_steady_state_of_the_window() -> None:
    b = budget(limit=1000, period=Period.rolling(hours=24))
    now = at(2026, 3, 10, 12)
    history = [SpendPoint(now - timedelta(hours=h), 50) for h in range(1, 48)]
    f = forecast_spend(b, window_for(b.period, now), 600, history, now)
    assert f.period_end is None
    assert f.projected_micros == 1200 and f.will_exceed(1000)


# --- predictions and reservations -----------------------------------------------------------------


def test_quantile_interpolates_like_percentile_cont() -> None:
    assert quantile([1, 2, 3, 4], 0.5) == 2.5
    assert quantile(list(range(1, 101)), 0.9) == pytest.approx(90.1)
    assert quantile([7], 0.99) == 7
    with pytest.raises(InvalidRequest):
        quantile([], 0.5)


def test_predicted_output_tokens_use_the_quantile_once_history_suffices() -> None:
    few = [100] * 5
    assert predict_output_tokens(few, default=4096) == 4096
    lengths = list(range(10, 1010, 10))  # 100 samples: p90 = 901
    assert predict_output_tokens(lengths, default=4096) == 901
    assert predict_output_tokens(lengths, default=4096, cap=500) == 500
    assert predict_output_tokens(lengths, q=0.5, default=1) == 505


def test_reservation_covers_the_settled_cost_of_the_same_usage() -> None:
    from domain.chat import Usage

    price = Price(input_per_mtok=2.5, output_per_mtok=10.0, cached_input_per_mtok=1.25)
    for tokens_in, tokens_out, cached in [(1, 1, 0), (333, 77, 100), (1_000_000, 3, 999_999), (0, 0, 0)]:
        held = reservation_micros(price, tokens_in, tokens_out, cached_input_tokens=cached)
        assert held >= price.cost_micros(Usage(tokens_in, tokens_out, cached))
    assert reservation_micros(price, 1000, 500) == 7500


# --- rate limits ----------------------------------------------------------------------------------


def test_gcra_allows_the_rate_with_its_burst_and_then_spaces_requests() -> None:
    tat = None
    now = 100.0
    for i in range(10):
        r = gcra(tat, now, rate=10, period=60)
        assert r.allowed and r.remaining == 9 - i
        tat = r.tat
    refused = gcra(tat, now, rate=10, period=60)
    assert not refused.allowed and refused.retry_after == pytest.approx(6.0) and refused.tat == tat
    assert refused.reset_after == pytest.approx(60.0)
    assert gcra(tat, now + 6.0, rate=10, period=60).allowed
    # a smaller burst: at most 2 at once
    r1 = gcra(None, 0.0, rate=60, burst=2)
    r2 = gcra(r1.tat, 0.0, rate=60, burst=2)
    r3 = gcra(r2.tat, 0.0, rate=60, burst=2)
    assert r1.allowed and r2.allowed and not r3.allowed and r3.retry_after == pytest.approx(1.0)


def test_gcra_token_costs_and_headers() -> None:
    r = gcra(None, 0.0, rate=1000, cost=400)
    assert r.allowed and r.remaining == 600 and r.reset_after == pytest.approx(24.0)
    r2 = gcra(r.tat, 0.0, rate=1000, cost=700)
    assert not r2.allowed and r2.retry_after == pytest.approx(6.0)
    status = RateLimitStatus(requests=MeterStatus(60, 59, 1.0), tokens=MeterStatus(1000, 600, 24.0))
    assert status.headers() == {
        "x-ratelimit-limit-requests": "60",
        "x-ratelimit-remaining-requests": "59",
        "x-ratelimit-reset-requests": "1s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "600",
        "x-ratelimit-reset-tokens": "24s",
    }
    assert [format_reset(s) for s in (0.02, 1.5, 360, 3723)] == ["20ms", "1.5s", "6m0s", "1h2m3s"]


def test_rate_limits_apply_by_key_user_team_model_and_tenant() -> None:
    def rl(i: str, scope: RateLimitScope, sid: str) -> RateLimit:
        return RateLimit(id=i, tenant_id="acme", scope=scope, scope_id=sid, requests_per_minute=10)

    limits = [rl("1", RateLimitScope.API_KEY, "k1"), rl("2", RateLimitScope.USER, "ann"), rl("3", RateLimitScope.TEAM, "red"),
              rl("4", RateLimitScope.MODEL, "gpt-x"), rl("5", RateLimitScope.TENANT, "acme"), rl("6", RateLimitScope.USER, "bob")]
    subject = BudgetSubject("acme", user_id="ann", api_key_id="k1", team_ids=("red",), model="gpt-x")
    assert sorted(r.id for r in applicable_rate_limits(limits, subject)) == ["1", "2", "3", "4", "5"]
    with pytest.raises(InvalidRequest):
        RateLimit(id="x", tenant_id="acme", scope=RateLimitScope.USER, scope_id="ann")
