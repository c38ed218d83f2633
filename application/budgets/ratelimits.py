"""``EnforceRateLimits``: requests and tokens per minute for every rate limit that applies to a
request (its tenant, teams, user, API key and model), through shared GCRA meters.

    status = await limits.acquire(subject, tokens=estimated_tokens)   # RateLimitExceeded
    ... answer with status.headers() ...
    await limits.adjust(subject, tokens=actual_tokens - estimated_tokens)

``acquire`` charges one request and the estimated tokens to every meter at once, or to none; a
refusal raises ``RateLimitExceeded`` naming the limit, with ``retry_after`` (seconds) and the
``x-ratelimit-*`` headers. ``adjust`` charges (or gives back) the difference once the actual
token count is known.

``models`` picks the limits: None every one that covers the subject; False all but the
model-scoped ones (the caller's limits, acquired before routing); True only the model-scoped ones
of ``subject.model`` (the model a request was routed to, acquired per candidate: an exhausted one
passes the request on to the next candidate). A subject without model-scoped limits costs no
call to the limiter.
"""

from __future__ import annotations

from collections.abc import Sequence

from application.budgets.context import BudgetContext
from application.budgets.ports import Meter, RateLimiter
from domain.budgets import (
    BudgetSubject,
    GcraResult,
    MeterStatus,
    RateLimit,
    RateLimitScope,
    RateLimitStatus,
    applicable_rate_limits,
)
from domain.errors import InvalidRequest, RateLimitExceeded

__all__ = ["EnforceRateLimits"]


def _meters(limits: Sequence[RateLimit], tokens: int) -> list[tuple[RateLimit, str, Meter]]:
    out: list[tuple[RateLimit, str, Meter]] = []
    for limit in limits:
        if limit.requests_per_minute:
            out.append((limit, "requests", Meter(f"{limit.id}:rpm", limit.requests_per_minute, 1, limit.burst_requests)))
        if limit.tokens_per_minute:
            out.append((limit, "tokens", Meter(f"{limit.id}:tpm", limit.tokens_per_minute, tokens, limit.burst_tokens)))
    return out


def _describe(limit: RateLimit, kind: str) -> str:
    per = limit.requests_per_minute if kind == "requests" else limit.tokens_per_minute
    return f"rate limit of {limit.scope.value} {limit.scope_id}: {per} {kind} per minute"


class EnforceRateLimits:
    def __init__(self, ctx: BudgetContext, limiter: RateLimiter) -> None:
        self._ctx = ctx
        self._limiter = limiter

    async def _limits(self, subject: BudgetSubject, models: bool | None) -> list[RateLimit]:
        limits = applicable_rate_limits(await self._ctx.directory.rate_limits(subject.tenant_id), subject)
        if models is None:
            return limits
        return [r for r in limits if (r.scope is RateLimitScope.MODEL) is models]

    async def acquire(self, subject: BudgetSubject, *, tokens: int = 0, models: bool | None = None) -> RateLimitStatus:
        if tokens < 0:
            raise InvalidRequest.single("tokens", "cannot be negative")
        limits = await self._limits(subject, models)
        meters = _meters(limits, tokens)
        if not meters:
            return RateLimitStatus()
        for limit, kind, meter in meters:
            if meter.cost > (meter.burst or meter.rate):  # no wait would ever let it pass
                raise RateLimitExceeded(
                    f"{_describe(limit, kind)}; this request alone needs {meter.cost}", limit_id=limit.id, retry_after=None
                )
        results = await self._limiter.acquire(subject.tenant_id, [m for _, _, m in meters])
        status = _status(meters, results)
        refused = [(r.retry_after, limit, kind) for (limit, kind, _), r in zip(meters, results, strict=True) if not r.allowed]
        if refused:
            wait, limit, kind = max(refused, key=lambda x: x[0])
            raise RateLimitExceeded(_describe(limit, kind), limit_id=limit.id, retry_after=wait, headers=status.headers())
        return status

    async def adjust(self, subject: BudgetSubject, *, tokens: int, models: bool | None = None) -> None:
        """Charge ``tokens`` more (negative: give them back) to the token meters that apply."""
        if not tokens:
            return
        limits = await self._limits(subject, models)
        meters = [m for _, kind, m in _meters(limits, tokens) if kind == "tokens"]
        if meters:
            await self._limiter.adjust(subject.tenant_id, meters)


def _status(meters: Sequence[tuple[RateLimit, str, Meter]], results: Sequence[GcraResult]) -> RateLimitStatus:
    """The most constrained meter of each kind (least remaining, then latest reset)."""
    best: dict[str, MeterStatus] = {}
    for (_, kind, meter), result in zip(meters, results, strict=True):
        candidate = MeterStatus(meter.rate, result.remaining, result.reset_after)
        current = best.get(kind)
        if current is None or (candidate.remaining, -candidate.reset_seconds) < (current.remaining, -current.reset_seconds):
            best[kind] = candidate
    return RateLimitStatus(requests=best.get("requests"), tokens=best.get("tokens"))
