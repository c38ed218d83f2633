"""Spend forecast to the end of a budget's period, from its history.

Two run-rate estimates, in micro-dollars per hour:

- ``linear``: the spend so far in the period over the time elapsed in it;
- ``ewma``: an exponentially weighted moving average over hourly spend (complete hours only, the
  latest weighing most; half-life ``half_life_hours``; from the first recorded hour or the
  period's start, at most ``lookback`` back), so a recent change of pace shows quickly.
  With no complete hour yet, it falls back to ``linear``.

The projection is the spend so far plus the run rate times the time left (for a rolling window,
whose end never comes, the steady state: the run rate times the window's length).
``exhausted_at`` is when the projection reaches the limit, if before the period's end.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import msgspec

from domain.budgets.model import Budget
from domain.budgets.periods import Window

__all__ = ["Forecast", "ForecastMethod", "SpendPoint", "forecast_spend", "hourly_series"]

_HOUR = timedelta(hours=1)


class ForecastMethod(enum.StrEnum):
    LINEAR = "linear"
    EWMA = "ewma"


class SpendPoint(msgspec.Struct, frozen=True):
    """Spend recorded in the ledger bucket starting at ``at``."""

    at: datetime
    micros: int


class Forecast(msgspec.Struct, frozen=True):
    method: ForecastMethod
    spent_micros: int
    projected_micros: int
    run_rate_micros_per_hour: float
    period_end: datetime | None
    exhausted_at: datetime | None

    def will_exceed(self, limit_micros: int) -> bool:
        return self.projected_micros > limit_micros


def hourly_series(points: Sequence[SpendPoint], start: datetime, end: datetime) -> list[int]:
    """Spend per whole hour from ``start`` (rounded down to the hour) up to the last hour that is
    complete at ``end``; hours without spend are zeros, points outside are ignored."""
    first = start.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = int((end - first) / _HOUR)
    series = [0] * max(hours, 0)
    for p in points:
        i = int((p.at - first) / _HOUR)
        if 0 <= i < hours:
            series[i] += p.micros
    return series


def forecast_spend(
    budget: Budget,
    window: Window,
    spent_micros: int,
    history: Sequence[SpendPoint],
    now: datetime,
    *,
    method: ForecastMethod = ForecastMethod.EWMA,
    half_life_hours: float = 6.0,
    lookback: timedelta = timedelta(days=7),
) -> Forecast:
    """Project ``budget``'s spend to the end of ``window`` (the period holding ``now``).
    ``history``: ledger buckets from at least ``now - lookback`` (for EWMA) or the window's start."""
    rolling = budget.period.is_rolling
    length_h = window.seconds / 3600 if not rolling else budget.period.rolling_seconds / 3600
    elapsed_h = max((now - window.start).total_seconds() / 3600, 1 / 60)
    linear_rate = spent_micros / (length_h if rolling else elapsed_h)
    rate, used = linear_rate, ForecastMethod.LINEAR
    if method is ForecastMethod.EWMA:
        # hours before the first record (and before this period) are not observed zeros: the
        # budget may not have existed; the series starts at whichever came first
        observed = min([p.at for p in history] + [window.start])
        series = hourly_series(history, max(now - lookback, observed), now)
        if series:
            alpha = 1 - 0.5 ** (1 / half_life_hours)
            ewma = float(series[0])
            for value in series[1:]:
                ewma += alpha * (value - ewma)
            rate, used = ewma, ForecastMethod.EWMA
    if rolling:
        end = None
        projected = math.ceil(rate * length_h)
        remaining_h = length_h
    else:
        end = window.end
        remaining_h = max((window.end - now).total_seconds() / 3600, 0.0)
        projected = spent_micros + math.ceil(rate * remaining_h)
    exhausted: datetime | None = None
    if spent_micros >= budget.limit_micros:
        exhausted = now
    elif rate > 0:
        hours = (budget.limit_micros - spent_micros) / rate
        if hours <= remaining_h:
            exhausted = now + timedelta(hours=hours)
    return Forecast(used, spent_micros, projected, rate, end, exhausted)
