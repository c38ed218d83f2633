"""Budgets: who they cover (scope and optional provider/model cap), how long a period lasts, whether
they block (hard) or only alert (soft), and which of them apply to a request.

Hierarchy: tenant → team → user → API key. A budget covers one node of it (``scope`` +
``scope_id``; for the tenant scope ``scope_id`` is the tenant id), optionally only the spend on one
provider or one model. Every enabled budget whose node and cap match a request applies to it; a
request reserves against all of them at once.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from datetime import datetime

import msgspec

from domain.errors import FieldViolation, InvalidRequest

__all__ = [
    "MAX_ROLLING_SECONDS",
    "Budget",
    "BudgetScope",
    "BudgetSubject",
    "Enforcement",
    "Period",
    "PeriodKind",
    "applicable_budgets",
]

MAX_ROLLING_SECONDS = 366 * 86400
_MAX_LIMIT_MICROS = 2**53  # exact in a double: the Redis scripts do arithmetic in Lua numbers


class BudgetScope(enum.StrEnum):
    """The node of the hierarchy a budget covers, ordered from the widest."""

    TENANT = "tenant"
    TEAM = "team"
    USER = "user"
    API_KEY = "api_key"

    @property
    def rank(self) -> int:
        return _SCOPE_RANK[self]


_SCOPE_RANK = {s: i for i, s in enumerate(BudgetScope)}


class PeriodKind(enum.StrEnum):
    DAILY = "daily"  # calendar day, UTC
    WEEKLY = "weekly"  # ISO week (Monday 00:00 UTC)
    MONTHLY = "monthly"  # calendar month, UTC
    ROLLING = "rolling"  # the last ``rolling_seconds``


class Enforcement(enum.StrEnum):
    HARD = "hard"  # a reservation that would exceed the limit is rejected
    SOFT = "soft"  # never rejects; thresholds alert


class Period(msgspec.Struct, frozen=True):
    kind: PeriodKind
    rolling_seconds: int = 0

    def __post_init__(self) -> None:
        if self.kind is PeriodKind.ROLLING:
            if not 60 <= self.rolling_seconds <= MAX_ROLLING_SECONDS:
                raise InvalidRequest.single("period.rolling_seconds", "a rolling window lasts 60 s to 366 days")
        elif self.rolling_seconds:
            raise InvalidRequest.single("period.rolling_seconds", "only rolling periods have a length")

    @classmethod
    def daily(cls) -> Period:
        return cls(PeriodKind.DAILY)

    @classmethod
    def weekly(cls) -> Period:
        return cls(PeriodKind.WEEKLY)

    @classmethod
    def monthly(cls) -> Period:
        return cls(PeriodKind.MONTHLY)

    @classmethod
    def rolling(cls, *, hours: int = 0, days: int = 0, seconds: int = 0) -> Period:
        return cls(PeriodKind.ROLLING, rolling_seconds=seconds + hours * 3600 + days * 86400)

    @property
    def is_rolling(self) -> bool:
        return self.kind is PeriodKind.ROLLING

    def describe(self) -> str:
        if self.kind is not PeriodKind.ROLLING:
            return self.kind.value
        s = self.rolling_seconds
        if s % 86400 == 0:
            return f"rolling {s // 86400}d"
        if s % 3600 == 0:
            return f"rolling {s // 3600}h"
        return f"rolling {s}s"


class BudgetSubject(msgspec.Struct, frozen=True):
    """What one request is charged to: its tenant, the caller's teams, user and API key (empty when
    unknown or not used), and the provider and model that will serve it."""

    tenant_id: str
    user_id: str = ""
    api_key_id: str = ""
    team_ids: tuple[str, ...] = ()
    provider: str = ""
    model: str = ""


class Budget(msgspec.Struct, frozen=True):
    """A spending limit in integer micro-dollars per period. ``thresholds`` are percentages of the
    limit at which an alert is published, once per period (above 100 only makes sense for soft
    budgets, which may overrun). ``provider`` / ``model`` (empty: any) narrow the budget to one."""

    id: str
    tenant_id: str
    name: str
    scope: BudgetScope
    scope_id: str
    limit_micros: int
    period: Period
    enforcement: Enforcement = Enforcement.HARD
    thresholds: tuple[int, ...] = (50, 80, 100)
    provider: str = ""
    model: str = ""
    enabled: bool = True
    created_at: datetime | None = None
    updated_at: datetime | None = None

    def __post_init__(self) -> None:
        problems: list[tuple[str, str]] = []
        if not self.id or len(self.id) > 200:
            problems.append(("id", "1 to 200 characters"))
        if not self.name.strip() or len(self.name) > 200:
            problems.append(("name", "1 to 200 characters"))
        if not self.scope_id or len(self.scope_id) > 200:
            problems.append(("scope_id", "1 to 200 characters"))
        elif self.scope is BudgetScope.TENANT and self.scope_id != self.tenant_id:
            problems.append(("scope_id", "a tenant budget's scope_id is its tenant id"))
        if not 0 < self.limit_micros <= _MAX_LIMIT_MICROS:
            problems.append(("limit_micros", "must be positive (and below 2^53)"))
        if any(not 1 <= t <= 1000 for t in self.thresholds):
            problems.append(("thresholds", "percentages from 1 to 1000"))
        elif list(self.thresholds) != sorted(set(self.thresholds)):
            problems.append(("thresholds", "ascending, without repeats"))
        if problems:
            raise InvalidRequest([FieldViolation(f, d) for f, d in problems])

    @property
    def hard(self) -> bool:
        return self.enforcement is Enforcement.HARD

    def covers(self, subject: BudgetSubject) -> bool:
        """Does this budget apply to a request charged to ``subject``?"""
        if not self.enabled or subject.tenant_id != self.tenant_id:
            return False
        if self.provider and self.provider != subject.provider:
            return False
        if self.model and self.model != subject.model:
            return False
        match self.scope:
            case BudgetScope.TENANT:
                return True
            case BudgetScope.TEAM:
                return self.scope_id in subject.team_ids
            case BudgetScope.USER:
                return bool(subject.user_id) and self.scope_id == subject.user_id
            case BudgetScope.API_KEY:
                return bool(subject.api_key_id) and self.scope_id == subject.api_key_id

    def describe(self) -> str:
        target = "/".join(x for x in (self.provider, self.model) if x)
        cap = f", {target} only" if target else ""
        return f"{self.scope.value} {self.scope_id}, {self.period.describe()}{cap}"


def applicable_budgets(budgets: Iterable[Budget], subject: BudgetSubject) -> list[Budget]:
    """The budgets that apply to ``subject``, widest scope first, then by id (a stable order: the
    reservation takes its locks and reports the first exceeded budget in this order)."""
    return sorted((b for b in budgets if b.covers(subject)), key=lambda b: (b.scope.rank, b.id))
