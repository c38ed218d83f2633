"""What one chat request holds, candidate by candidate (``application.chat.StreamChat``): the rate
limits of the model it is routed to (model-scoped limits count the routed model, not the one
named) and a budget reservation at that model's price; with hedging, the backup's too, taken just
before the hedge starts, so whichever attempt wins holds and settles at its own price.

    holds = RequestHolds(principal, request, budgets=guard, limiter=limits, tokens=..., ...)
    status = await holds.model_limits(route, caller_status)      # RateLimitExceeded: skip it
    estimate, reservation = await holds.reserve(route, default)  # BudgetExceeded
    hedge = holds.hedge(estimate, reservation)                   # when a hedge may follow
    ok = await hedge.take_backup(backup)                         # False: no hedge
    estimate, reservation = hedge.keep(primary, hedged)          # the loser's holds given back
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

from application.budgets.reservations import Reservation
from domain.budgets import BudgetSubject, RateLimitStatus
from domain.chat import ChatRequest, Chunk
from domain.errors import BudgetExceeded, RateLimitExceeded, Unavailable
from domain.identity import Principal, PrincipalKind
from domain.registry import ModelRoute

if TYPE_CHECKING:
    from application.chat import ChatBudgets, ChatRateLimits

__all__ = ["HedgeHolds", "RequestHolds", "budget_subject", "release_reservation"]

log = logging.getLogger("lumina.chat")


async def release_reservation(budgets: ChatBudgets, reservation: Reservation) -> None:
    """Give ``reservation`` back; a ledger that cannot be reached is logged, not raised (the hold
    expires with its reservation's TTL)."""
    try:
        await budgets.release(reservation)
    except Unavailable as exc:
        log.warning("budget reservation %s not released: %s", reservation.id, exc.message)


def budget_subject(principal: Principal, route: ModelRoute | None = None, model: str = "") -> BudgetSubject:
    """Who a request is charged to (budgets and rate limits), and the model it goes to."""
    return BudgetSubject(
        tenant_id=principal.tenant_id,
        user_id=principal.user_id,
        api_key_id=principal.credential_id if principal.kind is PrincipalKind.API_KEY else "",
        team_ids=principal.team_ids,
        provider=route.provider if route is not None else "",
        model=route.name if route is not None else model,
    )


class RequestHolds:
    """One request's holds. ``budgets`` None: no reservations; ``limiter`` None: the tenant has no
    rate limits. ``tokens``: the request's estimated tokens (what the caller's meters were charged);
    ``soon``: runs clean-up without waiting (``StreamChat``'s background tasks)."""

    __slots__ = ("_soon", "budgets", "limiter", "principal", "prompt_tokens", "sent", "task", "tokens")

    def __init__(
        self,
        principal: Principal,
        sent: ChatRequest,
        *,
        budgets: ChatBudgets | None,
        limiter: ChatRateLimits | None,
        tokens: int,
        prompt_tokens: int,
        task: str,
        soon: Callable[[Coroutine[Any, Any, Any]], None],
    ) -> None:
        self.principal = principal
        self.sent = sent
        self.budgets = budgets
        self.limiter = limiter
        self.tokens = tokens
        self.prompt_tokens = prompt_tokens
        self.task = task
        self._soon = soon

    async def model_limits(self, route: ModelRoute, status: RateLimitStatus | None) -> RateLimitStatus | None:
        """Charge the rate limits of the model routed to (``RateLimitExceeded`` when one is
        exhausted); the status to send is the tighter of ``status`` (the caller's) and theirs."""
        if self.limiter is None:
            return status
        found = await self.limiter.acquire(budget_subject(self.principal, route), tokens=self.tokens, models=True)
        return found if status is None else status.tighter(found)

    def give_back(self, route: ModelRoute) -> None:
        """The tokens charged to ``route``'s model limits, given back: it produced nothing."""
        if self.limiter is not None:
            self._soon(self.limiter.adjust(budget_subject(self.principal, route), tokens=-self.tokens, models=True))

    async def reserve(self, route: ModelRoute, default: int) -> tuple[int, Reservation | None]:
        """The estimate for ``route`` and its reservation (``BudgetExceeded``); without budgets,
        ``default`` (the router's estimate) and none."""
        budgets = self.budgets
        if budgets is None:
            return default, None
        estimate = await budgets.estimate(
            route.price, self.prompt_tokens, model=route.name, task=self.task, max_tokens=self.sent.max_tokens,
            model_max_output=route.capabilities.max_output_tokens,
        )
        return estimate, await budgets.reserve(budget_subject(self.principal, route), estimate, task=self.task)

    def release_soon(self, reservation: Reservation | None) -> None:
        if reservation is not None and self.budgets is not None:
            self._soon(release_reservation(self.budgets, reservation))

    def hedge(self, estimate: int, reservation: Reservation | None) -> HedgeHolds:
        return HedgeHolds(self, estimate, reservation)


class HedgeHolds:
    """One candidate's holds when a hedged request may follow: the primary's estimate and
    reservation; the backup's once taken (``take_backup``, just before the hedge starts: no hedge
    without them); ``loser``, the attempt that answered but lost the race (its first chunk), and
    ``loser_reservation``, to be settled to what it produced."""

    __slots__ = (
        "backup", "backup_estimate", "backup_reservation", "estimate", "loser", "loser_reservation", "request",
        "reservation",
    )

    def __init__(self, request: RequestHolds, estimate: int, reservation: Reservation | None) -> None:
        self.request = request
        self.estimate = estimate
        self.reservation = reservation
        self.backup: ModelRoute | None = None
        self.backup_estimate = 0
        self.backup_reservation: Reservation | None = None
        self.loser: tuple[ModelRoute, Chunk | None] | None = None
        self.loser_reservation: Reservation | None = None

    async def take_backup(self, backup: ModelRoute) -> bool:
        """The backup model's rate limits and reservation; False (no hedge) when either is spent."""
        holds = self.request
        try:
            await holds.model_limits(backup, None)
        except RateLimitExceeded:
            return False
        try:
            estimate, reservation = await holds.reserve(backup, self.estimate)
        except BudgetExceeded:
            holds.give_back(backup)
            return False
        self.backup, self.backup_estimate, self.backup_reservation = backup, estimate, reservation
        return True

    def drop_backup(self) -> None:
        """The hedge's holds, given back (it lost, or the attempt failed)."""
        backup, self.backup = self.backup, None
        if backup is None:
            return
        self.request.release_soon(self.backup_reservation)
        self.backup_reservation = None
        self.request.give_back(backup)

    def keep(self, primary: ModelRoute, hedged: bool) -> tuple[int, Reservation | None]:
        """After the race: the winner's estimate and reservation. The loser's holds are given
        back, unless it had answered too (``loser``: its reservation moves to
        ``loser_reservation``, to be settled to what it produced)."""
        if not hedged:
            if self.loser is not None:
                self.loser_reservation, self.backup_reservation = self.backup_reservation, None
            self.drop_backup()
            return self.estimate, self.reservation
        if self.loser is not None:
            self.loser_reservation = self.reservation
        else:
            self.request.release_soon(self.reservation)
        self.request.give_back(primary)
        return self.backup_estimate, self.backup_reservation
