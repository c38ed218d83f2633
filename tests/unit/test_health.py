"""Model health: EWMAs and the healthy / degraded / unhealthy state machine with hysteresis, and
the observation of whole (non-streamed) answers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from application.health import HealthMonitor, ObservedProviders
from domain.chat import (
    ChatMessage,
    ChatRequest,
    Chunk,
    Finish,
    FinishReason,
    Role,
    TextDelta,
    Usage,
    UsageChunk,
)
from domain.errors import UpstreamUnavailable
from domain.health import HealthState, HealthThresholds, ModelHealth, Observation
from tests.unit.chat_fakes import FixedClock, SequentialIds
from tests.unit.fakes import FakeUnitOfWorkFactory

LIMITS = HealthThresholds(alpha=0.5, degraded_error_rate=0.2, unhealthy_error_rate=0.5, degraded_ttft_s=2.0,
                          degraded_latency_s=10.0, unhealthy_consecutive_failures=3, min_samples=2, recovery=0.8)
OK = Observation(ok=True, latency_s=1.0, ttft_s=0.5)
FAIL = Observation(ok=False)


def run(*observations: Observation) -> ModelHealth:
    h = ModelHealth(provider="p", model="m")
    for obs in observations:
        h = h.observe(obs, LIMITS)
    return h


def test_ewma_weighs_the_newest_sample_by_alpha() -> None:
    h = run(Observation(ok=True, latency_s=2.0, ttft_s=1.0), Observation(ok=True, latency_s=4.0, ttft_s=0.0))
    assert h.latency_s == pytest.approx(3.0) and h.ttft_s == pytest.approx(0.5)
    assert h.error_rate == 0.0 and h.samples == 2


def test_failures_do_not_move_latency_but_move_error_rate() -> None:
    h = run(OK, FAIL)
    assert h.latency_s == pytest.approx(1.0)
    assert h.error_rate == pytest.approx(0.5)


def test_consecutive_failures_make_a_model_unhealthy_at_once() -> None:
    assert run(FAIL, FAIL).state is HealthState.UNHEALTHY  # error rate 1.0 >= 0.5 after min samples
    h = run(*[OK] * 10, FAIL, FAIL, FAIL)
    assert h.consecutive_failures == 3 and h.state is HealthState.UNHEALTHY


def test_slow_first_tokens_degrade() -> None:
    h = run(*[Observation(ok=True, latency_s=3.0, ttft_s=4.0)] * 3)
    assert h.state is HealthState.DEGRADED


def test_one_failure_among_many_successes_degrades_then_recovers_with_hysteresis() -> None:
    h = run(OK, OK, FAIL)  # error rate 0.5 -> unhealthy threshold reached
    assert h.state is HealthState.UNHEALTHY
    h = h.observe(OK, LIMITS)  # 0.25: below 0.5 but not below 0.4*... still degraded band
    assert h.state is HealthState.DEGRADED
    h = h.observe(OK, LIMITS)  # 0.125: below degraded 0.2, but not below recovery 0.16? it is -> healthy
    assert h.error_rate == pytest.approx(0.125)
    assert h.state is HealthState.HEALTHY


def test_hysteresis_holds_a_state_just_under_its_threshold() -> None:
    h = ModelHealth(provider="p", model="m", state=HealthState.DEGRADED, error_rate=0.36, samples=5)
    h = h.observe(OK, LIMITS)  # 0.18: under 0.2 but above the recovery line 0.16
    assert h.state is HealthState.DEGRADED


def test_state_levels_are_the_gauge_values() -> None:
    assert [s.level for s in HealthState] == [0, 1, 2]


def test_thresholds_validate() -> None:
    with pytest.raises(ValueError):
        HealthThresholds(degraded_error_rate=0.6, unhealthy_error_rate=0.5)


class _Answers:
    """A provider client answering "hi"; ``whole``: it also has ``complete``. Records the ways."""

    def __init__(self, name: str, *, whole: bool, fail: bool = False) -> None:
        self.name = name
        self.ways: list[str] = []
        self._fail = fail
        if whole:
            self.complete = self._complete

    async def stream(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        self.ways.append("stream")
        for chunk in self._chunks():
            yield chunk

    async def _complete(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        self.ways.append("whole")
        for chunk in self._chunks():
            yield chunk

    def _chunks(self) -> list[Chunk]:
        if self._fail:
            raise UpstreamUnavailable("down", provider=self.name)
        return [TextDelta("hi"), UsageChunk(Usage(input_tokens=1, output_tokens=1)), Finish(FinishReason.STOP)]


class _Clients:
    def __init__(self, *clients: _Answers) -> None:
        self.clients = {c.name: c for c in clients}

    def get(self, name: str) -> _Answers:
        return self.clients[name]


async def test_a_whole_answer_is_observed_for_latency_and_errors_not_for_first_tokens() -> None:
    clients = _Clients(_Answers("w", whole=True), _Answers("s", whole=False), _Answers("x", whole=True, fail=True))
    monitor = HealthMonitor(uow=FakeUnitOfWorkFactory(), clock=FixedClock(step=0.25), ids=SequentialIds(), tenant_id="t")
    observed = ObservedProviders(clients, monitor, FixedClock(step=0.25))  # type: ignore[arg-type]
    ask = ChatRequest(messages=(ChatMessage(Role.USER, "hello"),))
    for name in ("w", "s"):
        chunks = [c async for c in observed.get(name).complete("m", ask)]  # type: ignore[attr-defined]
        assert [type(c) for c in chunks] == [TextDelta, UsageChunk, Finish]
    assert clients.get("w").ways == ["whole"] and clients.get("s").ways == ["stream"]  # no complete: streamed
    with pytest.raises(UpstreamUnavailable):
        [c async for c in observed.get("x").complete("m", ask)]  # type: ignore[attr-defined]
    health = {h.provider: h for h in monitor.snapshot()}
    assert health["w"].latency_s == pytest.approx(0.25) and health["w"].ttft_s is None
    assert health["w"].samples == 1 and health["w"].error_rate == 0.0
    assert health["x"].error_rate == 1.0 and health["x"].consecutive_failures == 1
