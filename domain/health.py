"""Model health from observations: error rate, latency and time-to-first-token as EWMAs, and a
three-state machine (healthy / degraded / unhealthy) with hysteresis. Pure: callers pass the
observations in (from chat traffic, passively, or from probes, actively) and get a new value back."""

from __future__ import annotations

import enum

import msgspec

__all__ = ["HealthState", "HealthThresholds", "ModelHealth", "Observation"]


class HealthState(enum.StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"

    @property
    def level(self) -> int:
        """0 healthy, 1 degraded, 2 unhealthy (the metrics gauge's value)."""
        return _LEVELS[self]


_LEVELS = {HealthState.HEALTHY: 0, HealthState.DEGRADED: 1, HealthState.UNHEALTHY: 2}


class HealthThresholds(msgspec.Struct, frozen=True):
    """``alpha`` weighs the newest observation in every EWMA. A state is entered when a metric
    crosses its threshold and left only when every metric is below ``recovery`` times it."""

    alpha: float = 0.2
    degraded_error_rate: float = 0.2
    unhealthy_error_rate: float = 0.5
    degraded_latency_s: float = 20.0
    degraded_ttft_s: float = 5.0
    unhealthy_consecutive_failures: int = 3
    min_samples: int = 3
    recovery: float = 0.8

    def __post_init__(self) -> None:
        if not 0 < self.alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")
        if not 0 < self.degraded_error_rate <= self.unhealthy_error_rate <= 1:
            raise ValueError("need 0 < degraded_error_rate <= unhealthy_error_rate <= 1")
        if not 0 < self.recovery <= 1:
            raise ValueError("recovery must be in (0, 1]")


class Observation(msgspec.Struct, frozen=True):
    """One request's (or probe's) outcome. ``latency_s`` / ``ttft_s`` are None when unknown
    (e.g. a failure before the first byte has no time to first token)."""

    ok: bool
    latency_s: float | None = None
    ttft_s: float | None = None
    probe: bool = False


def _ewma(old: float | None, sample: float, alpha: float) -> float:
    return sample if old is None else alpha * sample + (1 - alpha) * old


class ModelHealth(msgspec.Struct, frozen=True):
    provider: str
    model: str
    state: HealthState = HealthState.HEALTHY
    error_rate: float = 0.0
    latency_s: float | None = None
    ttft_s: float | None = None
    samples: int = 0
    consecutive_failures: int = 0

    def observe(self, obs: Observation, limits: HealthThresholds) -> ModelHealth:
        """This health after one more observation (the state re-evaluated)."""
        error_rate = _ewma(None if self.samples == 0 else self.error_rate, 0.0 if obs.ok else 1.0, limits.alpha)
        latency = self.latency_s if obs.latency_s is None or not obs.ok else _ewma(self.latency_s, obs.latency_s, limits.alpha)
        ttft = self.ttft_s if obs.ttft_s is None or not obs.ok else _ewma(self.ttft_s, obs.ttft_s, limits.alpha)
        updated = msgspec.structs.replace(
            self,
            error_rate=error_rate,
            latency_s=latency,
            ttft_s=ttft,
            samples=self.samples + 1,
            consecutive_failures=0 if obs.ok else self.consecutive_failures + 1,
        )
        return msgspec.structs.replace(updated, state=updated._next_state(limits))

    def _next_state(self, limits: HealthThresholds) -> HealthState:
        if self.consecutive_failures >= limits.unhealthy_consecutive_failures:
            return HealthState.UNHEALTHY
        if self.samples < limits.min_samples:
            # too little evidence to condemn, but a recovering model does not jump to healthy
            return HealthState.HEALTHY if self.state is HealthState.HEALTHY else self.state
        target = self._level(limits, 1.0)
        if target.level >= self.state.level:
            return target
        # Improving: step down only to what the stricter (recovery) thresholds allow.
        strict = self._level(limits, limits.recovery)
        return strict if strict.level < self.state.level else self.state

    def _level(self, limits: HealthThresholds, factor: float) -> HealthState:
        if self.error_rate >= limits.unhealthy_error_rate * factor:
            return HealthState.UNHEALTHY
        slow = (self.latency_s or 0.0) >= limits.degraded_latency_s * factor
        slow_start = (self.ttft_s or 0.0) >= limits.degraded_ttft_s * factor
        if self.error_rate >= limits.degraded_error_rate * factor or slow or slow_start:
            return HealthState.DEGRADED
        return HealthState.HEALTHY
