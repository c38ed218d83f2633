"""``BudgetGuard``: the budget use cases the chat path needs, behind one object the composition
root builds (see ``application.budgets.reservations`` for the protocol)::

    estimate = await guard.estimate(price, input_tokens, model=route.name, task="chat", max_tokens=req.max_tokens,
                                    model_max_output=route.capabilities.max_output_tokens)
    reservation = await guard.reserve(subject, estimate, task="chat")      # BudgetExceeded
    try: ...                                                                # the provider call
    except BaseException: await guard.release(reservation); raise
    await guard.settle(reservation, cost_micros, usage=usage, request_id=request_id)

``headroom(subject)`` / ``headroom_for(subject, candidates)`` feed cost-aware routing.
"""

from __future__ import annotations

from collections.abc import Sequence

from application.budgets.context import BudgetContext
from application.budgets.prediction import PredictOutputTokens
from application.budgets.reservations import (
    Headroom,
    Release,
    Reservation,
    Reserve,
    Settle,
    Settlement,
)
from domain.budgets import BudgetStatus, BudgetSubject, reservation_micros
from domain.chat import Usage
from domain.cost import Price

__all__ = ["BudgetGuard"]

DEFAULT_OUTPUT_GUESS = 1024
"""Output tokens assumed for a model and task with too little history and no ``max_tokens``."""


class BudgetGuard:
    def __init__(self, ctx: BudgetContext, *, predict: PredictOutputTokens | None = None) -> None:
        self._reserve = Reserve(ctx)
        self._settle = Settle(ctx)
        self._release = Release(ctx)
        self._headroom = Headroom(ctx)
        self.predict = predict or PredictOutputTokens(ctx)

    async def reserve(
        self,
        subject: BudgetSubject,
        amount_micros: int,
        *,
        task: str = "",
        ttl_seconds: float | None = None,
        reservation_id: str | None = None,
    ) -> Reservation:
        return await self._reserve(subject, amount_micros, task=task, ttl_seconds=ttl_seconds, reservation_id=reservation_id)

    async def settle(
        self, reservation: Reservation, actual_micros: int, *, usage: Usage | None = None, request_id: str = ""
    ) -> Settlement:
        return await self._settle(reservation, actual_micros, usage=usage, request_id=request_id)

    async def release(self, reservation: Reservation) -> bool:
        return await self._release(reservation)

    async def statuses(self, subject: BudgetSubject) -> list[BudgetStatus]:
        """Live status (spend, holds, headroom) of every budget that applies to ``subject``."""
        return await self._headroom.statuses(subject)

    async def headroom(self, subject: BudgetSubject, *, hard_only: bool = False) -> float:
        return await self._headroom(subject, hard_only=hard_only)

    async def headroom_for(
        self, subject: BudgetSubject, candidates: Sequence[tuple[str, str]], *, hard_only: bool = False
    ) -> dict[tuple[str, str], float]:
        return await self._headroom.for_candidates(subject, candidates, hard_only=hard_only)

    async def estimate(
        self,
        price: Price,
        input_tokens: int,
        *,
        model: str,
        task: str = "chat",
        max_tokens: int | None = None,
        model_max_output: int | None = None,
        predictive: bool = True,
    ) -> int:
        """Micro-dollars to reserve: the prompt plus the output the model is expected to write.
        ``predictive=False`` (or no history) reserves ``max_tokens`` (else the model's output
        limit): an upper bound, so a hard budget can never be overrun; with ``predictive`` the
        output is the p90 of the model's recent outputs for the task, capped at that bound."""
        cap = max_tokens if max_tokens is not None else model_max_output
        if predictive or cap is None:
            output = await self.predict(model, task, default=cap if cap is not None else DEFAULT_OUTPUT_GUESS, cap=cap)
        else:
            output = cap
        return reservation_micros(price, input_tokens, output)
