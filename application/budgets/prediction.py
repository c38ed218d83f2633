"""``PredictOutputTokens``: how many output tokens to reserve for a request to ``model`` doing
``task`` — a quantile (p90 by default) of what the model wrote for such tasks recently, from the
durable ledger; cached per (model, task) for ``refresh_seconds``."""

from __future__ import annotations

from datetime import timedelta

from application.budgets.context import BudgetContext
from domain.budgets import OutputTokenStats, output_token_stats, predict_output_tokens

__all__ = ["PredictOutputTokens"]


class PredictOutputTokens:
    def __init__(
        self,
        ctx: BudgetContext,
        *,
        q: float = 0.9,
        window: timedelta = timedelta(days=7),
        samples: int = 1000,
        refresh_seconds: float = 60.0,
    ) -> None:
        self._ctx = ctx
        self._q = q
        self._window = window
        self._samples = samples
        self._refresh = refresh_seconds
        self._cache: dict[tuple[str, str], tuple[float, tuple[int, ...]]] = {}

    async def _history(self, model: str, task: str) -> tuple[int, ...]:
        key = (model, task)
        hit = self._cache.get(key)
        now = self._ctx.clock.monotonic()
        if hit is not None and now - hit[0] < self._refresh:
            return hit[1]
        async with self._ctx.uow() as uow:
            values = tuple(
                await uow.ledger.output_tokens(model, task, self._ctx.clock.now() - self._window, self._samples)
            )
        self._cache[key] = (now, values)
        return values

    async def __call__(self, model: str, task: str, *, default: int, cap: int | None = None) -> int:
        """The ``q``-quantile of recent output lengths (``default`` until there is enough history),
        capped at ``cap`` (the request's ``max_tokens`` or the model's output limit)."""
        return predict_output_tokens(await self._history(model, task), q=self._q, default=default, cap=cap)

    async def stats(self, model: str, task: str) -> OutputTokenStats | None:
        return output_token_stats(model, task, await self._history(model, task))
