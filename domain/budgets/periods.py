"""Periods: the window a budget's spend is counted in at a given instant, and where that spend is
counted (``Counter``), in the live ledger and in the durable one.

Calendar periods are UTC: a day from 00:00, an ISO week from Monday 00:00, a month from the 1st.
Their key names the period ("d2026-03-05", "w2026-W10", "m2026-03"); spend is counted under the
key of the period the reservation was made in, so a request that straddles midnight is charged to
the day it was admitted in.

Rolling windows are counted in ``ROLLING_BUCKETS`` buckets of ``ceil(length / 60)`` seconds (at
least one second), aligned to the Unix epoch: the window at instant t is the bucket holding t and
the ones before it, so spend leaves a rolling window in steps of 1/60 of its length and the window
covers between 59/60 and 60/60 of it. Alerts of a rolling budget fire at most once per block of
one window length (the key "r<block>").

The durable ledger keeps spend per budget in buckets (``Counter.ledger_bucket``): one hour for
calendar periods (every calendar period starts on an hour, so a period's spend is the sum of its
hours) and the rolling bucket for rolling windows, so the live counters can be rebuilt exactly.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import msgspec

from domain.budgets.model import Budget, Period, PeriodKind
from domain.errors import InvalidRequest

__all__ = [
    "COUNTER_GRACE",
    "ROLLING_BUCKETS",
    "Counter",
    "Window",
    "bucket_index",
    "counter_for",
    "rolling_bucket_seconds",
    "window_for",
]

ROLLING_BUCKETS = 60
COUNTER_GRACE = timedelta(days=2)
"""How long a live counter outlives its period (late settlements of reservations made in it)."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Window(msgspec.Struct, frozen=True):
    """``[start, end)``: the period holding an instant (rolling: the window ending at it)."""

    start: datetime
    end: datetime
    key: str

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


class Counter(msgspec.Struct, frozen=True):
    """Where a budget's spend at one instant is counted.

    ``key``: the calendar period's key, or "roll" for a rolling window (one set of buckets).
    ``window_start`` / ``window_end``: the ledger buckets this counter sums (a calendar period;
    for a rolling window, its buckets up to the end of the current one).
    ``bucket`` / ``buckets`` / ``bucket_seconds``: rolling only — the current bucket's index and
    the window's length in buckets. ``ledger_bucket``: the start of the durable ledger's bucket.
    ``expires_at``: after it the live counter may be dropped. ``alert_key``: the period alerts fire
    once in."""

    budget_id: str
    key: str
    window_start: datetime
    window_end: datetime
    ledger_bucket: datetime
    expires_at: datetime
    alert_key: str
    rolling: bool = False
    bucket: int = 0
    buckets: int = 0
    bucket_seconds: int = 0

    def bucket_start(self, index: int) -> datetime:
        return _EPOCH + timedelta(seconds=index * self.bucket_seconds)

    @property
    def first_bucket(self) -> int:
        """Rolling: the oldest bucket inside the window."""
        return self.bucket - self.buckets + 1


def _utc(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise InvalidRequest.single("at", "must carry a timezone")
    return at.astimezone(UTC)


def rolling_bucket_seconds(period: Period) -> int:
    return max(1, math.ceil(period.rolling_seconds / ROLLING_BUCKETS))


def bucket_index(at: datetime, bucket_seconds: int) -> int:
    return int((_utc(at) - _EPOCH).total_seconds()) // bucket_seconds


def window_for(period: Period, at: datetime) -> Window:
    at = _utc(at)
    day = at.replace(hour=0, minute=0, second=0, microsecond=0)
    match period.kind:
        case PeriodKind.DAILY:
            return Window(day, day + timedelta(days=1), f"d{day:%Y-%m-%d}")
        case PeriodKind.WEEKLY:
            start = day - timedelta(days=day.weekday())
            year, week, _ = start.isocalendar()
            return Window(start, start + timedelta(days=7), f"w{year}-W{week:02d}")
        case PeriodKind.MONTHLY:
            start = day.replace(day=1)
            end = start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
            return Window(start, end, f"m{start:%Y-%m}")
        case PeriodKind.ROLLING:
            size = rolling_bucket_seconds(period)
            buckets = math.ceil(period.rolling_seconds / size)
            first = bucket_index(at, size) - buckets + 1
            block = int((at - _EPOCH).total_seconds()) // period.rolling_seconds
            return Window(_EPOCH + timedelta(seconds=first * size), at, f"r{block}")


def counter_for(budget: Budget, at: datetime) -> Counter:
    at = _utc(at)
    window = window_for(budget.period, at)
    if budget.period.is_rolling:
        size = rolling_bucket_seconds(budget.period)
        index = bucket_index(at, size)
        buckets = math.ceil(budget.period.rolling_seconds / size)
        return Counter(
            budget_id=budget.id,
            key="roll",
            window_start=_EPOCH + timedelta(seconds=(index - buckets + 1) * size),
            window_end=_EPOCH + timedelta(seconds=(index + 1) * size),
            ledger_bucket=_EPOCH + timedelta(seconds=index * size),
            expires_at=at + timedelta(seconds=budget.period.rolling_seconds) + COUNTER_GRACE,
            alert_key=window.key,
            rolling=True,
            bucket=index,
            buckets=buckets,
            bucket_seconds=size,
        )
    return Counter(
        budget_id=budget.id,
        key=window.key,
        window_start=window.start,
        window_end=window.end,
        ledger_bucket=at.replace(minute=0, second=0, microsecond=0),
        expires_at=window.end + COUNTER_GRACE,
        alert_key=window.key,
    )
