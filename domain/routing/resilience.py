"""Retries, timeouts and hedging, as policies: pure values and decisions, no sleeping.

A call goes to the decision's candidates in order. On a failure:

- ``RetryPolicy.should_retry(error, attempt, sent_any)``: try the same candidate again, after
  ``RetryPolicy.delay(attempt, error, rng)`` seconds, only when nothing reached the client yet,
  the error is retryable and the attempt budget (and a Retry-After within ``max_retry_after_s``)
  allows;
- else ``should_fall_back(error, sent_any)``: move on to the next candidate;
- else fail. Once a byte reached the client it is neither: the stream ends with one clean error
  chunk, never duplicated text.
"""

from __future__ import annotations

import msgspec

from domain.errors import (
    ContentFiltered,
    DomainError,
    InvalidRequest,
    ProviderError,
    RateLimited,
    UpstreamInvalidRequest,
)
from domain.routing.ports import RandomSource

__all__ = ["HedgingPolicy", "LatencyEstimate", "RetryPolicy", "Timeouts", "is_retryable", "should_fall_back"]


def is_retryable(error: BaseException) -> bool:
    """Provider errors say so themselves (429, overloaded, 5xx, timeouts); a failure that is not a
    ``DomainError`` (a dropped connection the adapter did not translate) is treated as transient;
    Lumina's own errors (invalid request, budget, database) are never retried here."""
    if isinstance(error, ProviderError):
        return error.retryable
    return not isinstance(error, DomainError)


def should_fall_back(error: BaseException, sent_any: bool) -> bool:
    """Whether another candidate may serve the request after ``error``: not once content reached
    the client, and not for errors any model would repeat (the request itself is wrong, or the
    content was filtered). A context too long, a rate limit, a refused key or an outage are this
    candidate's problem, so the next one is tried."""
    if sent_any:
        return False
    if isinstance(error, (InvalidRequest, UpstreamInvalidRequest, ContentFiltered)):
        return False
    if isinstance(error, ProviderError):
        return True
    return not isinstance(error, DomainError)


class RetryPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Exponential backoff with full jitter: before retry ``n`` (1-based), wait a uniform draw from
    [0, min(``max_delay_s``, ``base_delay_s`` * 2**(n-1))), or the provider's Retry-After when it
    said one (never less). ``max_attempts`` counts every attempt at one candidate, the first too."""

    max_attempts: int = 3
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    max_retry_after_s: float = 20.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise InvalidRequest.single("retry.max_attempts", "must be at least 1")
        if self.base_delay_s < 0 or self.max_delay_s < self.base_delay_s:
            raise InvalidRequest.single("retry.base_delay_s", "need 0 <= base_delay_s <= max_delay_s")
        if self.max_retry_after_s < 0:
            raise InvalidRequest.single("retry.max_retry_after_s", "cannot be negative")

    def should_retry(self, error: BaseException, attempt: int, sent_any: bool) -> bool:
        """After attempt number ``attempt`` (1 for the first) failed with ``error``: try the same
        candidate again? Never once anything reached the client (``sent_any``); never when the
        provider asks to wait longer than ``max_retry_after_s`` (another candidate is better)."""
        if sent_any or attempt >= self.max_attempts or not is_retryable(error):
            return False
        after = retry_after(error)
        return after is None or after <= self.max_retry_after_s

    def delay(self, attempt: int, error: BaseException | None, rng: RandomSource) -> float:
        """Seconds to wait before the retry that follows failed attempt ``attempt``."""
        cap = min(self.max_delay_s, self.base_delay_s * 2.0 ** max(attempt - 1, 0))
        jittered = rng.random() * cap
        after = retry_after(error) if error is not None else None
        return jittered if after is None else max(after, jittered)


def retry_after(error: BaseException) -> float | None:
    if isinstance(error, RateLimited) and error.retry_after is not None and error.retry_after >= 0:
        return float(error.retry_after)
    return None


class Timeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per attempt: connecting, waiting for the first token, and the whole response."""

    connect_s: float = 5.0
    first_token_s: float = 30.0
    total_s: float = 600.0

    def __post_init__(self) -> None:
        if not 0 < self.connect_s <= self.first_token_s <= self.total_s:
            raise InvalidRequest.single("timeouts", "need 0 < connect_s <= first_token_s <= total_s")


class HedgingPolicy(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Hedged requests: when the first attempt has produced no token after its model's p95 time to
    first token (clamped to [``min_delay_s``, ``max_delay_s``]; ``default_delay_s`` for a model
    with no estimate yet), start the next candidate too; the first to produce a token wins and the
    other is cancelled. At most ``max_hedges`` extra requests."""

    enabled: bool = False
    max_hedges: int = 1
    min_delay_s: float = 0.2
    max_delay_s: float = 10.0
    default_delay_s: float = 2.0

    def __post_init__(self) -> None:
        if self.max_hedges < 0:
            raise InvalidRequest.single("hedging.max_hedges", "cannot be negative")
        if not 0 <= self.min_delay_s <= self.max_delay_s:
            raise InvalidRequest.single("hedging.min_delay_s", "need 0 <= min_delay_s <= max_delay_s")

    def delay(self, p95_ttft_s: float | None) -> float | None:
        """Seconds to wait before hedging, or None when hedging is off."""
        if not self.enabled or self.max_hedges == 0:
            return None
        base = self.default_delay_s if p95_ttft_s is None else p95_ttft_s
        return min(max(base, self.min_delay_s), self.max_delay_s)


class LatencyEstimate(msgspec.Struct, frozen=True, gc=False):
    """An exponentially weighted mean and variance of a latency (e.g. time to first token), and a
    p95 from them (mean + 1.645 standard deviations: a normal approximation, good enough to time a
    hedge). ``alpha`` weighs the newest sample."""

    mean: float | None = None
    variance: float = 0.0
    samples: int = 0

    def observe(self, sample: float, alpha: float = 0.1) -> LatencyEstimate:
        if self.mean is None:
            return LatencyEstimate(mean=sample, variance=0.0, samples=1)
        diff = sample - self.mean
        incr = alpha * diff
        return LatencyEstimate(
            mean=self.mean + incr, variance=(1 - alpha) * (self.variance + diff * incr), samples=self.samples + 1
        )

    @property
    def p95(self) -> float | None:
        if self.mean is None:
            return None
        return self.mean + 1.645 * self.variance**0.5
