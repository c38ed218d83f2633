"""Retries (full jitter, Retry-After, only retryable errors, never after the first byte),
fallback decisions, timeouts, hedging delays and the p95 estimate behind them."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.errors import (
    AuthenticationFailed,
    ContentFiltered,
    ContextLengthExceeded,
    InvalidRequest,
    Overloaded,
    PermissionDenied,
    RateLimited,
    Unavailable,
    UpstreamInvalidRequest,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from domain.routing import (
    HedgingPolicy,
    LatencyEstimate,
    RetryPolicy,
    Timeouts,
    is_retryable,
    should_fall_back,
)
from tests.unit.routing.fakes import FixedRandom

RETRYABLE = [RateLimited("slow down"), Overloaded("busy"), UpstreamUnavailable("502"), UpstreamTimeout("t"), ConnectionError()]
FINAL = [
    InvalidRequest.single("f", "bad"), UpstreamInvalidRequest("bad"), AuthenticationFailed("key"),
    PermissionDenied("no"), ContextLengthExceeded("long"), ContentFiltered("no"), Unavailable("db"),
]
errors = st.sampled_from(RETRYABLE + FINAL + [RateLimited("wait", retry_after=3.0), RateLimited("long", retry_after=99.0)])
policies = st.builds(
    RetryPolicy,
    max_attempts=st.integers(1, 6),
    base_delay_s=st.floats(0.0, 2.0),
    max_delay_s=st.floats(2.0, 30.0),
    max_retry_after_s=st.floats(0.0, 60.0),
)


@given(policies, errors, st.integers(1, 10))
def test_never_retries_once_content_reached_the_client(policy: RetryPolicy, error: Exception, attempt: int) -> None:
    assert policy.should_retry(error, attempt, sent_any=True) is False
    assert should_fall_back(error, sent_any=True) is False


@given(policies, errors, st.integers(1, 10))
def test_retries_only_retryable_errors_within_the_attempt_budget(policy: RetryPolicy, error: Exception, attempt: int) -> None:
    retry = policy.should_retry(error, attempt, sent_any=False)
    if retry:
        assert is_retryable(error) and attempt < policy.max_attempts
        after = getattr(error, "retry_after", None)
        assert after is None or after <= policy.max_retry_after_s
    if not is_retryable(error) or attempt >= policy.max_attempts:
        assert not retry


def test_which_errors_are_retryable_and_which_fall_back() -> None:
    assert all(is_retryable(e) for e in RETRYABLE)
    assert not any(is_retryable(e) for e in FINAL)
    # a different candidate may succeed where this one's key, context window or capacity failed
    for e in [*RETRYABLE, AuthenticationFailed("k"), PermissionDenied("p"), ContextLengthExceeded("c")]:
        assert should_fall_back(e, sent_any=False)
    # ... but not where the request itself is wrong, the content was filtered, or Lumina is down
    for e in [InvalidRequest.single("f", "d"), UpstreamInvalidRequest("x"), ContentFiltered("x"), Unavailable("db")]:
        assert not should_fall_back(e, sent_any=False)


@given(policies, st.integers(1, 12), st.floats(0.0, 0.999999))
def test_full_jitter_stays_within_the_exponential_cap(policy: RetryPolicy, attempt: int, draw: float) -> None:
    delay = policy.delay(attempt, UpstreamUnavailable("x"), FixedRandom(draw))
    cap = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    assert 0.0 <= delay <= cap
    assert delay == pytest.approx(draw * cap)


@given(policies, st.integers(1, 12), st.floats(0.0, 60.0), st.floats(0.0, 0.999999))
def test_retry_after_is_honoured(policy: RetryPolicy, attempt: int, after: float, draw: float) -> None:
    delay = policy.delay(attempt, RateLimited("x", retry_after=after), FixedRandom(draw))
    cap = min(policy.max_delay_s, policy.base_delay_s * 2 ** (attempt - 1))
    assert delay >= after
    assert delay <= max(after, cap)


def test_jitter_spreads_delays_over_the_whole_range() -> None:
    policy = RetryPolicy(base_delay_s=1.0, max_delay_s=8.0)
    rng = random.Random(7)
    delays = [policy.delay(3, None, rng) for _ in range(2000)]
    assert 0.0 <= min(delays) < 0.1 and 3.9 < max(delays) < 4.0  # attempt 3: cap 1 * 2**2 = 4
    assert 1.8 < sum(delays) / len(delays) < 2.2


def test_a_long_retry_after_means_fall_back_instead() -> None:
    policy = RetryPolicy(max_attempts=5, max_retry_after_s=20.0)
    assert policy.should_retry(RateLimited("x", retry_after=5.0), 1, sent_any=False)
    assert not policy.should_retry(RateLimited("x", retry_after=30.0), 1, sent_any=False)
    assert should_fall_back(RateLimited("x", retry_after=30.0), sent_any=False)


def test_timeouts_and_hedging_validate_and_clamp() -> None:
    with pytest.raises(InvalidRequest):
        Timeouts(connect_s=10, first_token_s=5, total_s=60)
    assert HedgingPolicy().delay(0.5) is None  # off by default
    hedging = HedgingPolicy(enabled=True, min_delay_s=0.2, max_delay_s=3.0, default_delay_s=1.5)
    assert hedging.delay(None) == 1.5
    assert hedging.delay(0.05) == 0.2
    assert hedging.delay(0.8) == 0.8
    assert hedging.delay(9.0) == 3.0
    assert HedgingPolicy(enabled=True, max_hedges=0).delay(1.0) is None


def test_latency_estimate_p95_sits_above_the_mean_and_tracks_the_spread() -> None:
    rng = random.Random(3)
    est = LatencyEstimate()
    assert est.p95 is None
    for _ in range(3000):
        est = est.observe(rng.gauss(1.0, 0.2), alpha=0.02)
    assert est.mean == pytest.approx(1.0, abs=0.06)
    assert est.p95 == pytest.approx(1.0 + 1.645 * 0.2, abs=0.1)
    steady = LatencyEstimate()
    for _ in range(50):
        steady = steady.observe(0.5)
    assert steady.p95 == pytest.approx(0.5)
