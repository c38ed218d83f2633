"""In-memory fakes of the budget ports, with the semantics of the Redis scripts and the Postgres
repositories (all-or-nothing holds, expiry on the clock, idempotent settle/release, missing
counters until seeded; a unit of work whose changes land on commit only)."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from types import TracebackType
from typing import Self

from application.budgets import BudgetContext, BudgetDirectory
from application.budgets.ports import (
    LedgerEntry,
    Meter,
    ReserveLine,
    ReserveOutcome,
    SettleOutcome,
    SettleStatus,
    StatusOutcome,
    UsageQuery,
    UsageRow,
)
from domain.budgets import Budget, Counter, GcraResult, RateLimit, SpendPoint, gcra
from domain.errors import InvalidRequest
from domain.events import DomainEvent
from domain.identity import Principal, PrincipalKind, Role


class MovableClock:
    def __init__(self, at: datetime | None = None) -> None:
        self.at = at or datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
        self.mono = 1000.0

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return self.mono

    def advance(self, **kwargs: float) -> None:
        delta = timedelta(**kwargs)
        self.at += delta
        self.mono += delta.total_seconds()


class Ids:
    def __init__(self) -> None:
        self._n = itertools.count(1)

    def new_id(self) -> str:
        return f"id{next(self._n):06d}"


def _ckey(c: Counter) -> tuple[str, str]:
    return (c.budget_id, "roll" if c.rolling else c.key)


class FakeLiveLedger:
    def __init__(self, clock: MovableClock) -> None:
        self._clock = clock
        self.holds: dict[str, dict[str, tuple[int, datetime]]] = {}  # budget -> rid -> (amount, expiry)
        self.counters: dict[tuple[str, str], int | dict[int, int]] = {}
        self.done: dict[str, tuple[tuple[int, int], ...] | None] = {}  # rid -> moves (None: released)
        self.journal: dict[tuple[str, str], bytes] = {}  # (tenant, rid) -> settled entry not yet durable
        self.calls = 0

    def _purge(self, budget_id: str) -> None:
        now = self._clock.now()
        held = self.holds.setdefault(budget_id, {})
        for rid in [r for r, (_, exp) in held.items() if exp <= now]:
            del held[rid]

    def _spent(self, c: Counter) -> int | None:
        value = self.counters.get(_ckey(c))
        if value is None:
            return None
        if isinstance(value, dict):
            first = c.first_bucket
            for b in [b for b in value if b < first]:
                del value[b]
            return sum(value.values())
        return value

    def _held(self, budget_id: str) -> int:
        return sum(a for a, _ in self.holds.get(budget_id, {}).values())

    def drop_counters(self) -> None:
        """What a Redis restart does to the spend counters."""
        self.counters.clear()

    async def reserve(self, tenant_id: str, reservation_id: str, lines: Sequence[ReserveLine], ttl_seconds: float) -> ReserveOutcome:
        self.calls += 1
        if reservation_id in self.done:
            raise InvalidRequest.single("reservation_id", "done")
        used, missing = [], []
        for i, line in enumerate(lines):
            self._purge(line.counter.budget_id)
            if i == 0 and reservation_id in self.holds[line.counter.budget_id]:
                return ReserveOutcome(True)
            s = self._spent(line.counter)
            if s is None:
                missing.append(i)
            used.append((s or 0) + self._held(line.counter.budget_id))
        if missing:
            return ReserveOutcome(False, missing=tuple(missing))
        for i, line in enumerate(lines):
            if line.hard and used[i] + line.amount_micros > line.limit_micros:
                return ReserveOutcome(False, rejected=i)
        expiry = self._clock.now() + timedelta(seconds=ttl_seconds)
        over = []
        for i, line in enumerate(lines):
            self.holds[line.counter.budget_id][reservation_id] = (line.amount_micros, expiry)
            if not line.hard and used[i] + line.amount_micros > line.limit_micros:
                over.append(i)
        return ReserveOutcome(True, over_soft=tuple(over))

    async def settle(
        self, tenant_id: str, reservation_id: str, counters: Sequence[Counter], actual_micros: int, *, journal: bytes = b""
    ) -> SettleOutcome:
        self.calls += 1
        if reservation_id in self.done:
            moves_then = self.done[reservation_id]
            if moves_then is None:
                return SettleOutcome(SettleStatus.RELEASED)
            return SettleOutcome(SettleStatus.DUPLICATE, moves=moves_then)
        missing = tuple(i for i, c in enumerate(counters) if _ckey(c) not in self.counters)
        if missing:
            return SettleOutcome(SettleStatus.MISSING, missing=missing)
        moves = []
        for c in counters:
            self.holds.setdefault(c.budget_id, {}).pop(reservation_id, None)
            before = self._spent(c) or 0
            value = self.counters[_ckey(c)]
            if isinstance(value, dict):
                value[c.bucket] = value.get(c.bucket, 0) + actual_micros
            else:
                self.counters[_ckey(c)] = value + actual_micros
            moves.append((before, before + actual_micros))
        self.done[reservation_id] = tuple(moves)
        if journal:
            self.journal[(tenant_id, reservation_id)] = journal
        return SettleOutcome(SettleStatus.SETTLED, moves=tuple(moves))

    # the SpendJournal

    async def pending(self, limit: int = 1000) -> list[bytes]:
        return list(self.journal.values())[:limit]

    async def forget(self, tenant_id: str, reservation_ids: Sequence[str]) -> None:
        for rid in reservation_ids:
            self.journal.pop((tenant_id, rid), None)

    def forget_soon(self, tenant_id: str, reservation_id: str) -> None:
        self.journal.pop((tenant_id, reservation_id), None)

    async def flush(self) -> None:
        pass

    async def release(self, tenant_id: str, reservation_id: str, budget_ids: Sequence[str]) -> bool:
        if reservation_id in self.done:
            return False
        for b in budget_ids:
            self.holds.setdefault(b, {}).pop(reservation_id, None)
        self.done[reservation_id] = None
        return True

    async def status(self, tenant_id: str, counters: Sequence[Counter]) -> StatusOutcome:
        lines, missing = [], []
        for i, c in enumerate(counters):
            self._purge(c.budget_id)
            s = self._spent(c)
            if s is None:
                missing.append(i)
            lines.append((s or 0, self._held(c.budget_id)))
        return StatusOutcome(missing=tuple(missing)) if missing else StatusOutcome(lines=tuple(lines))

    async def seed(self, tenant_id: str, counter: Counter, spent: int | Mapping[int, int]) -> None:
        key = _ckey(counter)
        if key in self.counters:
            return
        self.counters[key] = dict(spent) if counter.rolling else spent  # type: ignore[arg-type]


@dataclass
class FakeBudgetStore:
    budgets: dict[str, Budget] = field(default_factory=dict)
    rate_limits: dict[str, RateLimit] = field(default_factory=dict)
    entries: dict[str, LedgerEntry] = field(default_factory=dict)
    spend: dict[tuple[str, datetime], int] = field(default_factory=dict)
    alerts: set[tuple[str, str, int]] = field(default_factory=set)
    events: list[DomainEvent] = field(default_factory=list)
    fail_next_commit: Exception | None = None


class _Budgets:
    def __init__(self, uow: FakeBudgetUnitOfWork) -> None:
        self._u = uow

    async def add(self, budget: Budget) -> None:
        if any(b.tenant_id == budget.tenant_id and b.name == budget.name for b in self._u.staged.budgets.values()):
            raise InvalidRequest.single("name", "exists")
        self._u.staged.budgets[budget.id] = budget

    async def update(self, budget: Budget) -> bool:
        if budget.id not in self._u.staged.budgets:
            return False
        self._u.staged.budgets[budget.id] = budget
        return True

    async def delete(self, tenant_id: str, budget_id: str) -> bool:
        b = self._u.staged.budgets.get(budget_id)
        if b is None or b.tenant_id != tenant_id:
            return False
        del self._u.staged.budgets[budget_id]
        return True

    async def get(self, tenant_id: str, budget_id: str) -> Budget | None:
        b = self._u.staged.budgets.get(budget_id)
        return b if b is not None and b.tenant_id == tenant_id else None

    async def list(self, tenant_id: str) -> Sequence[Budget]:
        return sorted((b for b in self._u.staged.budgets.values() if b.tenant_id == tenant_id), key=lambda b: b.name)


class _RateLimits:
    def __init__(self, uow: FakeBudgetUnitOfWork) -> None:
        self._u = uow

    async def put(self, limit: RateLimit) -> None:
        self._u.staged.rate_limits[limit.id] = limit

    async def delete(self, tenant_id: str, limit_id: str) -> bool:
        return self._u.staged.rate_limits.pop(limit_id, None) is not None

    async def list(self, tenant_id: str) -> Sequence[RateLimit]:
        return [r for r in self._u.staged.rate_limits.values() if r.tenant_id == tenant_id]


class _Ledger:
    def __init__(self, uow: FakeBudgetUnitOfWork) -> None:
        self._u = uow

    async def record(self, entry: LedgerEntry, buckets: Sequence[tuple[str, datetime]]) -> bool:
        st = self._u.staged
        if entry.reservation_id in st.entries:
            return False
        st.entries[entry.reservation_id] = entry
        for budget_id, at in buckets:
            if budget_id in st.budgets:
                st.spend[(budget_id, at)] = st.spend.get((budget_id, at), 0) + entry.actual_micros
        return True

    async def spent(self, budget_id: str, start: datetime, end: datetime) -> int:
        return sum(v for (b, at), v in self._u.staged.spend.items() if b == budget_id and start <= at < end)

    async def buckets(self, budget_id: str, start: datetime, end: datetime) -> Sequence[SpendPoint]:
        return [
            SpendPoint(at, v)
            for (b, at), v in sorted(self._u.staged.spend.items(), key=lambda kv: kv[0][1])
            if b == budget_id and start <= at < end
        ]

    async def output_tokens(self, model: str, task: str, since: datetime, limit: int) -> Sequence[int]:
        rows = sorted(
            (e for e in self._u.staged.entries.values() if e.model == model and e.task == task and e.settled_at >= since),
            key=lambda e: e.settled_at,
            reverse=True,
        )
        return [e.output_tokens for e in rows[:limit]]


class _Alerts:
    def __init__(self, uow: FakeBudgetUnitOfWork) -> None:
        self._u = uow

    async def first_time(self, budget_id: str, period_key: str, threshold: int, spent_micros: int) -> bool:
        key = (budget_id, period_key, threshold)
        if key in self._u.staged.alerts:
            return False
        self._u.staged.alerts.add(key)
        return True


def _copy(store: FakeBudgetStore) -> FakeBudgetStore:
    return FakeBudgetStore(
        dict(store.budgets), dict(store.rate_limits), dict(store.entries), dict(store.spend), set(store.alerts), list(store.events)
    )


class FakeBudgetUnitOfWork:
    def __init__(self, store: FakeBudgetStore) -> None:
        self._store = store
        self.staged = _copy(store)
        self.budgets = _Budgets(self)
        self.rate_limits = _RateLimits(self)
        self.ledger = _Ledger(self)
        self.alerts = _Alerts(self)
        self._events: list[DomainEvent] = []

    def record(self, event: DomainEvent) -> None:
        self._events.append(event)

    async def commit(self) -> None:
        if self._store.fail_next_commit is not None:
            exc, self._store.fail_next_commit = self._store.fail_next_commit, None
            raise exc
        s, t = self._store, self.staged
        s.budgets, s.rate_limits, s.entries, s.spend, s.alerts = t.budgets, t.rate_limits, t.entries, t.spend, t.alerts
        s.events.extend(self._events)
        self._events = []
        self.staged = _copy(s)

    async def __aenter__(self) -> Self:
        self.staged = _copy(self._store)
        self._events = []
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self._events = []


class FakeRateLimiter:
    """Meters in memory with the domain's GCRA (the reference the Lua script follows)."""

    def __init__(self, clock: MovableClock) -> None:
        self._clock = clock
        self.tats: dict[str, float] = {}

    async def acquire(self, tenant_id: str, meters: Sequence[Meter]) -> Sequence[GcraResult]:
        now = self._clock.monotonic()
        results = [gcra(self.tats.get(m.key), now, rate=m.rate, cost=m.cost, period=m.period, burst=m.burst) for m in meters]
        if all(r.allowed for r in results):
            for m, r in zip(meters, results, strict=True):
                self.tats[m.key] = r.tat
            return results
        # nobody is charged: report the meters as they stand
        return [
            r if not r.allowed else gcra(self.tats.get(m.key), now, rate=m.rate, cost=0, period=m.period, burst=m.burst)
            for m, r in zip(meters, results, strict=True)
        ]

    async def adjust(self, tenant_id: str, meters: Sequence[Meter]) -> None:
        now = self._clock.monotonic()
        for m in meters:
            tat = max(self.tats.get(m.key, now), now) + m.cost * m.period / m.rate
            self.tats[m.key] = max(tat, now)


class FakeUsageReader:
    def __init__(self) -> None:
        self.queries: list[UsageQuery] = []

    async def query(self, query: UsageQuery) -> Sequence[UsageRow]:
        self.queries.append(query)
        return []


@dataclass
class World:
    clock: MovableClock
    ledger: FakeLiveLedger
    store: FakeBudgetStore
    ctx: BudgetContext

    def uow(self) -> FakeBudgetUnitOfWork:
        return FakeBudgetUnitOfWork(self.store)


def make_world(at: datetime | None = None, *, directory_ttl: float = 0.0) -> World:
    clock = MovableClock(at)
    ledger = FakeLiveLedger(clock)
    store = FakeBudgetStore()

    def factory() -> FakeBudgetUnitOfWork:
        return FakeBudgetUnitOfWork(store)

    ctx = BudgetContext(
        uow=factory, ledger=ledger, clock=clock, ids=Ids(), directory=BudgetDirectory(factory, clock, directory_ttl)
    )
    return World(clock, ledger, store, ctx)


def admin(tenant: str = "acme", role: Role = Role.ADMIN, user: str = "u-admin") -> Principal:
    return Principal(tenant_id=tenant, user_id=user, role=role, kind=PrincipalKind.USER, credential_id="s1")
