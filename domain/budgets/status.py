"""A budget's state in its current window, the thresholds a settlement crosses, and the headroom
cost-aware routing reads."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import msgspec

from domain.budgets.model import Budget
from domain.budgets.periods import Window

__all__ = ["BudgetStatus", "crossed_thresholds", "headroom_fraction"]


class BudgetStatus(msgspec.Struct, frozen=True):
    """``spent_micros``: settled spend in ``window``; ``held_micros``: reservations outstanding."""

    budget: Budget
    window: Window
    spent_micros: int
    held_micros: int = 0

    @property
    def remaining_micros(self) -> int:
        return max(0, self.budget.limit_micros - self.spent_micros - self.held_micros)

    @property
    def headroom(self) -> float:
        """The fraction of the limit still free (0 when spent and held reach it)."""
        return self.remaining_micros / self.budget.limit_micros

    @property
    def used_fraction(self) -> float:
        """Settled spend over the limit (above 1 for an overrun soft budget)."""
        return self.spent_micros / self.budget.limit_micros


def crossed_thresholds(thresholds: Sequence[int], limit_micros: int, before: int, after: int) -> tuple[int, ...]:
    """The thresholds (percent of ``limit_micros``) that spend moving from ``before`` to ``after``
    reaches: ``before < limit·t/100 <= after``, in integer arithmetic."""
    return tuple(t for t in thresholds if before * 100 < limit_micros * t <= after * 100)


def headroom_fraction(statuses: Iterable[BudgetStatus], *, hard_only: bool = False) -> float:
    """The smallest headroom among ``statuses`` (1.0 when no budget applies): what cost-aware
    routing compares with its step-down threshold."""
    return min((s.headroom for s in statuses if s.budget.hard or not hard_only), default=1.0)
