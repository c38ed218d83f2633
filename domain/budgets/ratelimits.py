"""Rate limits: requests and tokens per minute per API key, user, team, model or tenant, enforced
with GCRA (the generic cell rate algorithm: one "theoretical arrival time" per meter, no counters to
reset), and what the ``x-ratelimit-*`` headers say.

A meter allowing ``rate`` units per ``period`` emits one unit every ``interval = period / rate``
and tolerates a burst of ``burst`` units (default: ``rate``, i.e. a full period's worth at once).
A request costing ``cost`` units is allowed when ``max(tat, now) + cost·interval - burst·interval
<= now``; then the meter's tat moves to ``max(tat, now) + cost·interval``. Otherwise it is
rejected, nothing changes, and it may retry after the difference. The Redis adapter runs the same
arithmetic in Lua (``gcra`` here is the reference its tests compare with).
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable

import msgspec

from domain.budgets.model import BudgetSubject
from domain.errors import FieldViolation, InvalidRequest

__all__ = [
    "GcraResult",
    "MeterStatus",
    "RateLimit",
    "RateLimitScope",
    "RateLimitStatus",
    "applicable_rate_limits",
    "format_reset",
    "gcra",
]


class RateLimitScope(enum.StrEnum):
    TENANT = "tenant"
    TEAM = "team"
    USER = "user"
    API_KEY = "api_key"
    MODEL = "model"  # scope_id: the model name (all callers of the tenant together)


class RateLimit(msgspec.Struct, frozen=True):
    """Per minute: ``requests_per_minute`` requests and ``tokens_per_minute`` tokens (0: no limit
    on that meter). ``burst_*`` (0: the per-minute rate) is how many may come at once."""

    id: str
    tenant_id: str
    scope: RateLimitScope
    scope_id: str
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    burst_requests: int = 0
    burst_tokens: int = 0

    def __post_init__(self) -> None:
        problems = []
        if not self.id or not self.scope_id:
            problems.append(FieldViolation("scope_id", "required"))
        for name in ("requests_per_minute", "tokens_per_minute", "burst_requests", "burst_tokens"):
            if not 0 <= getattr(self, name) <= 10**9:
                problems.append(FieldViolation(name, "0 to 10^9"))
        if not self.requests_per_minute and not self.tokens_per_minute:
            problems.append(FieldViolation("requests_per_minute", "a rate limit limits requests, tokens or both"))
        if self.scope is RateLimitScope.TENANT and self.scope_id != self.tenant_id:
            problems.append(FieldViolation("scope_id", "a tenant rate limit's scope_id is its tenant id"))
        if problems:
            raise InvalidRequest(problems)

    def covers(self, subject: BudgetSubject) -> bool:
        if subject.tenant_id != self.tenant_id:
            return False
        match self.scope:
            case RateLimitScope.TENANT:
                return True
            case RateLimitScope.TEAM:
                return self.scope_id in subject.team_ids
            case RateLimitScope.USER:
                return self.scope_id == subject.user_id
            case RateLimitScope.API_KEY:
                return self.scope_id == subject.api_key_id
            case RateLimitScope.MODEL:
                return self.scope_id == subject.model


def applicable_rate_limits(limits: Iterable[RateLimit], subject: BudgetSubject) -> list[RateLimit]:
    return sorted((r for r in limits if r.covers(subject)), key=lambda r: (r.scope.value, r.id))


class GcraResult(msgspec.Struct, frozen=True):
    """``tat``: the meter's arrival time after the call (unchanged when rejected); ``remaining``:
    units that could still pass now; ``reset_after``: seconds until the meter is full again;
    ``retry_after``: seconds to wait before this request could pass (0 when allowed)."""

    allowed: bool
    tat: float
    remaining: int
    reset_after: float
    retry_after: float


def gcra(tat: float | None, now: float, *, rate: int, cost: int = 1, period: float = 60.0, burst: int = 0) -> GcraResult:
    if rate <= 0:
        raise InvalidRequest.single("rate", "must be positive")
    interval = period / rate
    capacity = (burst or rate) * interval
    base = now if tat is None or tat < now else tat
    new_tat = base + cost * interval
    allow_at = new_tat - capacity
    if allow_at > now + 1e-9:
        remaining = max(0, math.floor((capacity - (base - now)) / interval + 1e-9))
        return GcraResult(False, base, remaining, base - now, allow_at - now)
    remaining = max(0, math.floor((capacity - (new_tat - now)) / interval + 1e-9))
    return GcraResult(True, new_tat, remaining, new_tat - now, 0.0)


class MeterStatus(msgspec.Struct, frozen=True):
    limit: int
    remaining: int
    reset_seconds: float


class RateLimitStatus(msgspec.Struct, frozen=True):
    """The most constrained requests meter and tokens meter that applied (None: unlimited)."""

    requests: MeterStatus | None = None
    tokens: MeterStatus | None = None

    def tighter(self, other: RateLimitStatus | None) -> RateLimitStatus:
        """Both statuses in one: per kind, the meter with the least remaining (then the latest
        reset), e.g. the caller's limits and the routed model's."""
        if other is None or other == _NO_LIMIT:
            return self
        if self == _NO_LIMIT:
            return other
        return RateLimitStatus(requests=_tighter(self.requests, other.requests), tokens=_tighter(self.tokens, other.tokens))

    def headers(self) -> dict[str, str]:
        """``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, as OpenAI sends them."""
        out: dict[str, str] = {}
        for name, meter in (("requests", self.requests), ("tokens", self.tokens)):
            if meter is not None:
                out[f"x-ratelimit-limit-{name}"] = str(meter.limit)
                out[f"x-ratelimit-remaining-{name}"] = str(meter.remaining)
                out[f"x-ratelimit-reset-{name}"] = format_reset(meter.reset_seconds)
        return out


_NO_LIMIT = RateLimitStatus()


def _tighter(a: MeterStatus | None, b: MeterStatus | None) -> MeterStatus | None:
    if a is None or b is None:
        return a or b
    return a if (a.remaining, -a.reset_seconds) <= (b.remaining, -b.reset_seconds) else b


def format_reset(seconds: float) -> str:
    """A duration the way OpenAI's reset headers write it: "20ms", "1.5s", "6m0s", "1h2m3s"."""
    if seconds < 1:
        return f"{max(0, math.ceil(seconds * 1000))}ms"
    if seconds < 60:
        text = f"{seconds:.3f}".rstrip("0").rstrip(".")
        return f"{text}s"
    total = math.ceil(seconds)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}h" if hours else "") + f"{minutes}m{secs}s"
