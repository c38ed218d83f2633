"""Budget and rate-limit use cases: reserve / settle / release around each provider call
(``BudgetGuard``), budget and rate-limit definitions, status with forecast, usage queries,
output-token predictions and rate-limit enforcement."""

from application.budgets.context import (
    BudgetContext,
    BudgetDirectory,
    UnitOfWorkSpendRecorder,
    seed_counters,
)
from application.budgets.forecast import BudgetReport, GetBudgetStatus
from application.budgets.guard import BudgetGuard
from application.budgets.journal import DrainSpendJournal, JournalDrainer
from application.budgets.manage import (
    BudgetDraft,
    ManageBudgets,
    ManageRateLimits,
    RateLimitDraft,
)
from application.budgets.prediction import PredictOutputTokens
from application.budgets.ratelimits import EnforceRateLimits
from application.budgets.reservations import (
    Headroom,
    Release,
    Reservation,
    Reserve,
    Settle,
    Settlement,
)
from application.budgets.usage import QueryUsage

__all__ = [
    "BudgetContext",
    "BudgetDirectory",
    "BudgetDraft",
    "BudgetGuard",
    "BudgetReport",
    "DrainSpendJournal",
    "EnforceRateLimits",
    "GetBudgetStatus",
    "Headroom",
    "JournalDrainer",
    "ManageBudgets",
    "ManageRateLimits",
    "PredictOutputTokens",
    "QueryUsage",
    "RateLimitDraft",
    "Release",
    "Reservation",
    "Reserve",
    "Settle",
    "Settlement",
    "UnitOfWorkSpendRecorder",
    "seed_counters",
]
