"""Ports of the budget use cases.

- ``LiveLedger``: the shared, atomic, in-memory ledger every replica reserves against (Redis):
  per budget, settled spend per period (or rolling buckets) and outstanding holds that expire.
- ``BudgetUnitOfWork``: the durable side (Postgres) in one transaction — budget and rate-limit
  definitions, the settled ledger (entries and per-bucket spend), the once-per-period alert latch
  and the outbox for events.
- ``RateLimiter``: GCRA meters shared across replicas (Redis).
- ``UsageReader``: spend and tokens from the usage records, grouped and bucketed.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Protocol, Self

import msgspec

from domain.budgets import Budget, Counter, GcraResult, RateLimit, SpendPoint
from domain.events import DomainEvent

__all__ = [
    "AlertLatch",
    "BudgetRepository",
    "BudgetUnitOfWork",
    "BudgetUnitOfWorkFactory",
    "LedgerEntry",
    "LiveLedger",
    "Meter",
    "RateLimitRepository",
    "RateLimiter",
    "ReserveLine",
    "ReserveOutcome",
    "SettleOutcome",
    "SettleStatus",
    "SpendJournal",
    "SpendLedger",
    "SpendRecorder",
    "StatusOutcome",
    "TimeBucket",
    "UsageDimension",
    "UsageQuery",
    "UsageReader",
    "UsageRow",
]


# --- the live ledger ---------------------------------------------------------------------------


class ReserveLine(msgspec.Struct, frozen=True):
    """Hold ``amount_micros`` against one budget, counted at ``counter``; a hard line rejects when
    spent + held + amount would pass ``limit_micros``."""

    counter: Counter
    limit_micros: int
    hard: bool
    amount_micros: int


class ReserveOutcome(msgspec.Struct, frozen=True):
    """``admitted``; else ``rejected`` is the index of the first hard line that would be exceeded,
    or ``missing`` lists the lines whose counters must be seeded first (nothing was held).
    ``over_soft``: indexes of soft lines the hold took past their limit."""

    admitted: bool
    rejected: int = -1
    missing: tuple[int, ...] = ()
    over_soft: tuple[int, ...] = ()


class SettleStatus(enum.StrEnum):
    SETTLED = "settled"
    DUPLICATE = "duplicate"  # settled before: nothing changed; ``moves`` are that settlement's
    RELEASED = "released"  # released before: nothing changed, nothing to charge
    MISSING = "missing"  # counters to seed first: nothing changed


class SettleOutcome(msgspec.Struct, frozen=True):
    """``moves``: per line, settled spend in the line's window before and after the settlement
    (SETTLED, or DUPLICATE: the first settlement's, so a retry can finish the durable part)."""

    status: SettleStatus
    moves: tuple[tuple[int, int], ...] = ()
    missing: tuple[int, ...] = ()


class StatusOutcome(msgspec.Struct, frozen=True):
    """Per counter: (settled spend in its window, outstanding holds); or the counters to seed."""

    lines: tuple[tuple[int, int], ...] = ()
    missing: tuple[int, ...] = ()


class LiveLedger(Protocol):
    async def reserve(
        self, tenant_id: str, reservation_id: str, lines: Sequence[ReserveLine], ttl_seconds: float
    ) -> ReserveOutcome:
        """All lines or none, atomically across replicas. Expired holds are dropped first.
        Reserving an id that is already held changes nothing and admits."""
        ...

    async def settle(
        self, tenant_id: str, reservation_id: str, counters: Sequence[Counter], actual_micros: int, *, journal: bytes = b""
    ) -> SettleOutcome:
        """Drop the reservation's holds (those not expired) and add ``actual_micros`` to each
        counter, atomically; idempotent by ``reservation_id`` (remembered for a day). A
        ``journal`` entry is kept, in the same atomic step, under the reservation id until
        ``SpendJournal.forget`` (only when this call settles: not for a duplicate)."""
        ...

    async def release(self, tenant_id: str, reservation_id: str, budget_ids: Sequence[str]) -> bool:
        """Drop the holds; False when the reservation was settled or released before."""
        ...

    async def status(self, tenant_id: str, counters: Sequence[Counter]) -> StatusOutcome: ...

    async def seed(self, tenant_id: str, counter: Counter, spent: int | Mapping[int, int]) -> None:
        """Create a missing counter from the durable ledger: a calendar period's total, or a
        rolling window's spend per bucket index. An existing counter is left alone."""
        ...


class SpendJournal(Protocol):
    """The settled entries the live ledger keeps until they are known to be in the durable one
    (``application.budgets.journal``): written by ``LiveLedger.settle`` itself, so a crash
    between the live settlement and the durable write loses no spend."""

    async def pending(self, limit: int = 1000) -> Sequence[bytes]:
        """Up to ``limit`` entries still kept, of every tenant."""
        ...

    async def forget(self, tenant_id: str, reservation_ids: Sequence[str]) -> None:
        """Drop entries that are in the durable ledger now."""
        ...

    def forget_soon(self, tenant_id: str, reservation_id: str) -> None:
        """``forget`` without waiting (batched with others)."""
        ...

    async def flush(self) -> None:
        """Wait for the ``forget_soon`` work still in flight."""
        ...


# --- the durable side ---------------------------------------------------------------------------


class LedgerEntry(msgspec.Struct, frozen=True):
    """One settled reservation, as the durable ledger keeps it."""

    reservation_id: str
    tenant_id: str
    reserved_micros: int
    actual_micros: int
    reserved_at: datetime
    settled_at: datetime
    budget_ids: tuple[str, ...] = ()
    request_id: str = ""
    user_id: str = ""
    api_key_id: str = ""
    provider: str = ""
    model: str = ""
    task: str = ""
    input_tokens: int = 0
    output_tokens: int = 0


class BudgetRepository(Protocol):
    async def add(self, budget: Budget) -> None:
        """Raises ``InvalidRequest`` when the tenant already has a budget of that name."""
        ...

    async def update(self, budget: Budget) -> bool:
        """False when there is no such budget."""
        ...

    async def delete(self, tenant_id: str, budget_id: str) -> bool: ...

    async def get(self, tenant_id: str, budget_id: str) -> Budget | None: ...

    async def list(self, tenant_id: str) -> Sequence[Budget]:
        """Ordered by name."""
        ...


class RateLimitRepository(Protocol):
    async def put(self, limit: RateLimit) -> None:
        """Insert or replace (one limit per tenant, scope and scope id: a put for the same node
        replaces that node's limit)."""
        ...

    async def delete(self, tenant_id: str, limit_id: str) -> bool: ...

    async def list(self, tenant_id: str) -> Sequence[RateLimit]: ...


class SpendLedger(Protocol):
    async def record(self, entry: LedgerEntry, buckets: Sequence[tuple[str, datetime]]) -> bool:
        """Write the entry and add its actual cost to each (budget id, ledger bucket) — the
        budgets that still exist. False (and nothing written) when the entry was recorded before."""
        ...

    async def spent(self, budget_id: str, start: datetime, end: datetime) -> int:
        """Spend in buckets starting in ``[start, end)``."""
        ...

    async def buckets(self, budget_id: str, start: datetime, end: datetime) -> Sequence[SpendPoint]:
        """Per-bucket spend, buckets starting in ``[start, end)``, oldest first."""
        ...

    async def output_tokens(self, model: str, task: str, since: datetime, limit: int) -> Sequence[int]:
        """Output tokens of the most recent settled entries (at most ``limit``) of ``model`` and
        ``task`` since ``since``."""
        ...


class SpendRecorder(Protocol):
    """Writes settled entries to the durable ledger (``SpendLedger.record`` semantics: idempotent
    by reservation id). The Postgres adapter group-commits concurrent settlements."""

    async def record(self, entry: LedgerEntry, buckets: Sequence[tuple[str, datetime]]) -> None: ...


class AlertLatch(Protocol):
    async def first_time(self, budget_id: str, period_key: str, threshold: int, spent_micros: int) -> bool:
        """Record that the threshold fired in the period; False when it already had."""
        ...


class BudgetUnitOfWork(Protocol):
    budgets: BudgetRepository
    rate_limits: RateLimitRepository
    ledger: SpendLedger
    alerts: AlertLatch

    def record(self, event: DomainEvent) -> None: ...

    async def commit(self) -> None: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...


class BudgetUnitOfWorkFactory(Protocol):
    def __call__(self) -> BudgetUnitOfWork: ...


# --- rate limits ----------------------------------------------------------------------------------


class Meter(msgspec.Struct, frozen=True):
    """One GCRA meter: ``rate`` units per ``period`` seconds, bursts of ``burst`` (0: ``rate``)."""

    key: str
    rate: int
    cost: int
    burst: int = 0
    period: float = 60.0


class RateLimiter(Protocol):
    async def acquire(self, tenant_id: str, meters: Sequence[Meter]) -> Sequence[GcraResult]:
        """Charge every meter its cost when all of them allow it, atomically; otherwise charge
        none. One result per meter (``allowed`` False on those that refused)."""
        ...

    async def adjust(self, tenant_id: str, meters: Sequence[Meter]) -> None:
        """Correct meters by ``cost`` units (negative: give back, never below empty)."""
        ...


# --- usage queries -----------------------------------------------------------------------------


class UsageDimension(enum.StrEnum):
    TENANT = "tenant"
    TEAM = "team"  # through the user's team memberships (a user in two teams counts in both)
    USER = "user"
    API_KEY = "api_key"
    PROVIDER = "provider"
    MODEL = "model"


class TimeBucket(enum.StrEnum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


class UsageQuery(msgspec.Struct, frozen=True):
    """Usage of ``tenant_id`` with ``created_at`` in ``[start, end)``, grouped by ``group_by`` and
    (when ``bucket`` is set) by UTC time bucket; ``filters`` keeps only rows whose dimension has
    the given value."""

    tenant_id: str
    start: datetime
    end: datetime
    group_by: tuple[UsageDimension, ...] = ()
    bucket: TimeBucket | None = None
    filters: dict[UsageDimension, str] = {}
    limit: int = 10_000


class UsageRow(msgspec.Struct, frozen=True):
    """One group: its bucket start (None when not bucketed), its dimension values, its totals."""

    bucket_start: datetime | None
    dimensions: dict[str, str]
    requests: int
    input_tokens: int
    output_tokens: int
    cost_micros: int


class UsageReader(Protocol):
    async def query(self, query: UsageQuery) -> Sequence[UsageRow]: ...
