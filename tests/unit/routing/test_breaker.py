"""The circuit breaker state machine: closed -> open on consecutive failures or a failure rate,
open -> half-open after the cool-down, half-open -> closed after enough successful probes or back
to open on a failed one; probe slots limited and freed when lost. Example transitions, then a
property over random sequences of admissions, outcomes and clock steps checked against a
reference written from the specification."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from domain.errors import (
    AuthenticationFailed,
    ContentFiltered,
    ContextLengthExceeded,
    InvalidRequest,
    Overloaded,
    RateLimited,
    Unavailable,
    UpstreamInvalidRequest,
    UpstreamTimeout,
)
from domain.routing import (
    Breaker,
    BreakerPolicy,
    BreakerState,
    breaker_key,
    counts_as_failure,
)

P = BreakerPolicy(consecutive_failures=3, failure_rate=0.5, window=10, min_calls=6, cooldown_s=30, half_open_probes=2,
                  close_after=2, probe_timeout_s=60)


def fail(b: Breaker, now: float = 0.0, policy: BreakerPolicy = P) -> Breaker:
    return b.record(False, now, policy)


def ok(b: Breaker, now: float = 0.0, policy: BreakerPolicy = P) -> Breaker:
    return b.record(True, now, policy)


def test_consecutive_failures_open_it() -> None:
    b = fail(fail(Breaker()))
    assert b.state is BreakerState.CLOSED and b.consecutive_failures == 2
    b = fail(b, now=100.0)
    assert b.state is BreakerState.OPEN and b.opened_at == 100.0


def test_a_success_resets_the_consecutive_count() -> None:
    b = ok(fail(fail(Breaker())))
    assert fail(b).state is BreakerState.CLOSED


def test_failure_rate_opens_it_only_after_min_calls() -> None:
    policy = BreakerPolicy(consecutive_failures=0, failure_rate=0.5, window=10, min_calls=6)
    b = Breaker()
    for outcome in (False, True, False, True, False):  # 3/5 failed, but only 5 calls
        b = b.record(outcome, 0.0, policy)
    assert b.state is BreakerState.CLOSED and b.failure_rate == pytest.approx(0.6)
    b = b.record(True, 0.0, policy)  # a success never trips it
    assert b.state is BreakerState.CLOSED
    b = b.record(False, 0.0, policy)  # 4/7 >= 0.5
    assert b.state is BreakerState.OPEN


def test_the_window_forgets_old_calls() -> None:
    policy = BreakerPolicy(consecutive_failures=0, failure_rate=0.5, window=4, min_calls=4)
    b = Breaker()
    for outcome in (False, True, True, True, True):
        b = b.record(outcome, 0.0, policy)
    assert b.calls == 4 and b.failure_rate == 0.0


def test_open_refuses_until_the_cool_down_then_admits_limited_probes() -> None:
    b = fail(fail(fail(Breaker())), now=0.0)
    assert b.admit(29.9, P) == (b, False)
    assert b.current(29.9, P) is BreakerState.OPEN and b.current(30.0, P) is BreakerState.HALF_OPEN
    b, first = b.admit(30.0, P)
    b, second = b.admit(30.5, P)
    b, third = b.admit(31.0, P)
    assert (first, second, third) == (True, True, False)
    assert b.state is BreakerState.HALF_OPEN and b.probes == 2
    # the probes' replicas died: after probe_timeout_s a slot is handed out again
    b, again = b.admit(30.5 + 60.0, P)
    assert again and b.probes == 1


def test_half_open_closes_after_enough_successes_and_reopens_on_a_failure() -> None:
    opened = fail(fail(fail(Breaker())), now=0.0)
    b, _ = opened.admit(30.0, P)
    b = ok(b, 31.0)
    assert b.state is BreakerState.HALF_OPEN and b.successes == 1
    b = ok(b, 32.0)
    assert b == Breaker()
    b, _ = opened.admit(30.0, P)
    b = fail(b, 33.0)
    assert b.state is BreakerState.OPEN and b.opened_at == 33.0
    assert b.admit(33.0 + 29.0, P)[1] is False


def test_a_late_outcome_does_not_change_an_open_breaker() -> None:
    b = fail(fail(fail(Breaker())), now=5.0)
    assert ok(b, 6.0) == b and fail(b, 6.0) == b


def test_keys_and_what_counts_as_a_failure() -> None:
    assert breaker_key("openai") == "openai"
    assert breaker_key("local", "meta/llama-3") == "local|meta/llama-3"
    for error in (RateLimited("x"), Overloaded("x"), UpstreamTimeout("x"), AuthenticationFailed("x"), ConnectionError()):
        assert counts_as_failure(error)
    for error in (InvalidRequest.single("f", "d"), UpstreamInvalidRequest("x"), ContextLengthExceeded("x"),
                  ContentFiltered("x"), Unavailable("db down")):
        assert not counts_as_failure(error)


def test_policy_validates_itself() -> None:
    with pytest.raises(InvalidRequest):
        BreakerPolicy(min_calls=30, window=20)
    with pytest.raises(InvalidRequest):
        BreakerPolicy(failure_rate=1.5)
    with pytest.raises(InvalidRequest):
        BreakerPolicy(half_open_probes=0)


ops = st.lists(
    st.tuples(st.sampled_from(["admit", "ok", "fail"]), st.sampled_from([0.0, 0.0, 1.0, 5.0, 31.0, 61.0])),
    max_size=80,
)
policies = st.builds(
    BreakerPolicy,
    consecutive_failures=st.integers(0, 5),
    failure_rate=st.sampled_from([0.0, 0.3, 0.5, 1.0]),
    window=st.integers(6, 12),
    min_calls=st.integers(1, 6),
    cooldown_s=st.sampled_from([10.0, 30.0]),
    half_open_probes=st.integers(1, 3),
    close_after=st.integers(1, 3),
    probe_timeout_s=st.sampled_from([20.0, 60.0]),
)


@settings(max_examples=500, deadline=None)
@given(policies, ops)
def test_transitions_follow_the_specification(policy: BreakerPolicy, sequence: list[tuple[str, float]]) -> None:
    b = Breaker()
    now = 0.0
    history: list[bool] = []  # closed-state outcomes since it last closed (True = failure)
    successes = 0
    for op, step in sequence:
        now += step
        before = b
        if op == "admit":
            b, allowed = b.admit(now, policy)
            match before.state:
                case BreakerState.CLOSED:
                    assert allowed and b == before
                case BreakerState.OPEN:
                    assert allowed == (now - before.opened_at >= policy.cooldown_s)
                    assert b.state is (BreakerState.HALF_OPEN if allowed else BreakerState.OPEN)
                case BreakerState.HALF_OPEN:
                    stale = now - before.probe_at >= policy.probe_timeout_s
                    assert allowed == (before.probes < policy.half_open_probes or stale)
                    assert b.probes <= policy.half_open_probes
            continue
        failed = op == "fail"
        b = b.record(not failed, now, policy)
        match before.state:
            case BreakerState.CLOSED:
                history.append(failed)
                recent = history[-policy.window:]
                run = 0
                for f in reversed(history):
                    if not f:
                        break
                    run += 1
                trips = failed and (
                    (policy.consecutive_failures > 0 and run >= policy.consecutive_failures)
                    or (policy.failure_rate > 0 and len(recent) >= policy.min_calls
                        and sum(recent) / len(recent) >= policy.failure_rate)
                )
                assert b.state is (BreakerState.OPEN if trips else BreakerState.CLOSED)
                if trips:
                    assert b.opened_at == now
                    history = []
            case BreakerState.OPEN:
                assert b == before
            case BreakerState.HALF_OPEN:
                if failed:
                    assert b.state is BreakerState.OPEN and b.opened_at == now
                    successes = 0
                else:
                    successes = before.successes + 1
                    closes = successes >= policy.close_after
                    assert b.state is (BreakerState.CLOSED if closes else BreakerState.HALF_OPEN)
                    if closes:
                        assert b == Breaker()
                        history = []
        if b.state is BreakerState.CLOSED and before.state is not BreakerState.CLOSED:
            history = []
