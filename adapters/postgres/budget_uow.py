"""``SqlBudgetUnitOfWork``: budget definitions, rate limits, the durable spend ledger and the alert
latch on one ``AsyncSession`` (one transaction), with threshold events written to the shared
outbox at ``commit()``."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adapters.postgres.budget_repositories import (
    SqlAlertLatch,
    SqlBudgetRepository,
    SqlRateLimitRepository,
    SqlSpendLedger,
)
from adapters.postgres.uow import SessionUnitOfWork

__all__ = ["SqlBudgetUnitOfWork", "SqlBudgetUnitOfWorkFactory"]


class SqlBudgetUnitOfWork(SessionUnitOfWork):
    budgets: SqlBudgetRepository
    rate_limits: SqlRateLimitRepository
    ledger: SqlSpendLedger
    alerts: SqlAlertLatch

    def _bind(self, s: AsyncSession) -> None:
        self.budgets, self.rate_limits = SqlBudgetRepository(s), SqlRateLimitRepository(s)
        self.ledger, self.alerts = SqlSpendLedger(s), SqlAlertLatch(s)


class SqlBudgetUnitOfWorkFactory:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=True)

    def __call__(self) -> SqlBudgetUnitOfWork:
        return SqlBudgetUnitOfWork(self._sessions)
