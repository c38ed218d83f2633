"""Circuit breaker per provider and per model, as a pure state machine.

closed ──(too many failures: ``consecutive_failures`` in a row, or a failure rate of at least
         ``failure_rate`` over the last ``window`` calls once ``min_calls`` were seen)──> open
open ──(``cooldown_s`` elapsed; the next ``admit`` is a probe)──> half-open
half-open ──(``close_after`` probes succeeded)──> closed
half-open ──(a probe failed)──> open (cool-down again)

At most ``half_open_probes`` probes are in flight at once; a probe slot whose result never came
(its replica died) is freed after ``probe_timeout_s``. Times are wall-clock epoch seconds passed in
by the caller, so replicas sharing a breaker (``BreakerStore``) agree on them. A value is
immutable: every transition returns a new ``Breaker``."""

from __future__ import annotations

import enum

import msgspec

from domain.errors import (
    ContentFiltered,
    ContextLengthExceeded,
    DomainError,
    InvalidRequest,
    ProviderError,
    UpstreamInvalidRequest,
)

__all__ = ["Breaker", "BreakerPolicy", "BreakerState", "breaker_key", "counts_as_failure"]

MAX_WINDOW = 256


class BreakerState(enum.StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class BreakerPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``consecutive_failures`` 0 or ``failure_rate`` 0 turns that trigger off."""

    consecutive_failures: int = 5
    failure_rate: float = 0.5
    window: int = 20
    min_calls: int = 10
    cooldown_s: float = 30.0
    half_open_probes: int = 1
    close_after: int = 1
    probe_timeout_s: float = 60.0

    def __post_init__(self) -> None:
        if self.consecutive_failures < 0:
            raise InvalidRequest.single("breaker.consecutive_failures", "cannot be negative")
        if not 0.0 <= self.failure_rate <= 1.0:
            raise InvalidRequest.single("breaker.failure_rate", "must be between 0 and 1")
        if not 1 <= self.window <= MAX_WINDOW:
            raise InvalidRequest.single("breaker.window", f"must be between 1 and {MAX_WINDOW}")
        if not 1 <= self.min_calls <= self.window:
            raise InvalidRequest.single("breaker.min_calls", "must be between 1 and the window")
        if self.cooldown_s <= 0 or self.probe_timeout_s <= 0:
            raise InvalidRequest.single("breaker.cooldown_s", "cool-down and probe timeout must be positive")
        if self.half_open_probes < 1 or self.close_after < 1:
            raise InvalidRequest.single("breaker.half_open_probes", "probes and close_after must be at least 1")


class Breaker(msgspec.Struct, frozen=True, gc=False):
    """``outcomes``: bit i set when the i-th most recent call (closed state) failed; ``calls``: how
    many of the window's bits are real. ``opened_at``: when it last opened. Half-open: ``probes`` in
    flight (the last admitted at ``probe_at``) and ``successes`` so far."""

    state: BreakerState = BreakerState.CLOSED
    outcomes: int = 0
    calls: int = 0
    consecutive_failures: int = 0
    opened_at: float = 0.0
    probes: int = 0
    probe_at: float = 0.0
    successes: int = 0

    @property
    def failure_rate(self) -> float:
        return self.outcomes.bit_count() / self.calls if self.calls else 0.0

    def current(self, now: float, policy: BreakerPolicy) -> BreakerState:
        """The state as routing should see it: an open breaker whose cool-down is over is
        half-open (its next call is a probe)."""
        if self.state is BreakerState.OPEN and now - self.opened_at >= policy.cooldown_s:
            return BreakerState.HALF_OPEN
        return self.state

    def admit(self, now: float, policy: BreakerPolicy) -> tuple[Breaker, bool]:
        """Whether a call may go ahead now, and the breaker after admitting it (a probe takes a
        half-open slot)."""
        match self.state:
            case BreakerState.CLOSED:
                return self, True
            case BreakerState.OPEN:
                if now - self.opened_at < policy.cooldown_s:
                    return self, False
                return _half_open(self.opened_at, now), True
            case _:
                if self.probes < policy.half_open_probes:
                    return msgspec.structs.replace(self, probes=self.probes + 1, probe_at=now), True
                if now - self.probe_at >= policy.probe_timeout_s:  # the probes in flight are lost
                    return msgspec.structs.replace(self, probes=1, probe_at=now), True
                return self, False

    def record(self, ok: bool, now: float, policy: BreakerPolicy) -> Breaker:
        """The breaker after one call's outcome (``ok`` False: a failure that counts, see
        ``counts_as_failure``). A late outcome reaching an open breaker changes nothing."""
        match self.state:
            case BreakerState.CLOSED:
                mask = (1 << policy.window) - 1
                outcomes = ((self.outcomes << 1) | (0 if ok else 1)) & mask
                calls = min(self.calls + 1, policy.window)
                consecutive = 0 if ok else self.consecutive_failures + 1
                rate = outcomes.bit_count() / calls
                trips = not ok and (
                    (policy.consecutive_failures and consecutive >= policy.consecutive_failures)
                    or (policy.failure_rate and calls >= policy.min_calls and rate >= policy.failure_rate)
                )
                if trips:
                    return Breaker(state=BreakerState.OPEN, opened_at=now, consecutive_failures=consecutive)
                return msgspec.structs.replace(self, outcomes=outcomes, calls=calls, consecutive_failures=consecutive)
            case BreakerState.OPEN:
                return self
            case _:
                if not ok:
                    return Breaker(state=BreakerState.OPEN, opened_at=now, consecutive_failures=self.consecutive_failures + 1)
                successes = self.successes + 1
                if successes >= policy.close_after:
                    return Breaker()
                return msgspec.structs.replace(self, probes=max(self.probes - 1, 0), successes=successes)


def _half_open(opened_at: float, now: float) -> Breaker:
    return Breaker(state=BreakerState.HALF_OPEN, opened_at=opened_at, probes=1, probe_at=now)


def breaker_key(provider: str, model: str | None = None) -> str:
    """The key of a provider's breaker (``model`` None) or of one (upstream) model's at that
    provider. ``|`` is in no registry name, so the two parts split back unambiguously."""
    return provider if model is None else f"{provider}|{model}"


def counts_as_failure(error: BaseException) -> bool:
    """Whether an error says something about the provider's health: client mistakes (a bad request,
    a context too long, filtered content) do not; other provider errors and non-domain failures
    (a dropped connection, a timeout) do. Lumina's own ``DomainError``s (e.g. a budget refusal,
    a database outage) are not the provider's fault."""
    if isinstance(error, (InvalidRequest, UpstreamInvalidRequest, ContextLengthExceeded, ContentFiltered)):
        return False
    if isinstance(error, ProviderError):
        return True
    return not isinstance(error, DomainError)
