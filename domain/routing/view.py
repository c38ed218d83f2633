"""What one replica knows, live, about each model: health (from ``HealthMonitor``), latency and
time to first token (EWMAs, and a p95 for hedging), requests in flight, and the circuit breakers'
states (a snapshot of the shared ``BreakerStore``). Models are identified as provider calls and
``ModelHealth`` see them, (provider, upstream model); internally by ``breaker_key(provider, model)``
strings (their hashes are cached, which keeps the router's per-candidate look-ups cheap).

Mutated by the application as things happen; the router reads it. ``state_version`` changes only
when something that can exclude or demote a model changes (a health state, the breaker snapshot),
so the router can cache its filtering across requests; latencies and in-flight counts are read
live on every decision."""

from __future__ import annotations

from collections.abc import Mapping

from domain.health import HealthState, ModelHealth
from domain.routing.breaker import BreakerState, breaker_key
from domain.routing.resilience import LatencyEstimate

__all__ = ["RuntimeView"]


class RuntimeView:
    def __init__(self) -> None:
        self.state_version = 0
        self.health: dict[str, HealthState] = {}
        self.not_healthy: dict[str, HealthState] = {}  # degraded or unhealthy only (small)
        self.ttft_s: dict[str, float] = {}
        self.latency_s: dict[str, float] = {}
        self.ttft: dict[str, LatencyEstimate] = {}
        self.in_flight: dict[str, int] = {}
        self.open_providers: frozenset[str] = frozenset()
        self.open_models: frozenset[str] = frozenset()
        self.half_open_providers: frozenset[str] = frozenset()
        self.half_open_models: frozenset[str] = frozenset()

    # --- health ----------------------------------------------------------------------------

    def update_health(self, health: ModelHealth) -> None:
        key = breaker_key(health.provider, health.model)
        if self.health.get(key, HealthState.HEALTHY) is not health.state:
            self.state_version += 1
        self.health[key] = health.state
        if health.state is HealthState.HEALTHY:
            self.not_healthy.pop(key, None)
        else:
            self.not_healthy[key] = health.state
        if health.ttft_s is not None:
            self.ttft_s[key] = health.ttft_s
        if health.latency_s is not None:
            self.latency_s[key] = health.latency_s

    def observe_ttft(self, provider: str, model: str, seconds: float) -> None:
        """One more time-to-first-token sample, for the p95 estimate hedging waits for."""
        key = breaker_key(provider, model)
        self.ttft[key] = self.ttft.get(key, LatencyEstimate()).observe(seconds)

    def answers_well_within(self, provider: str, model: str, seconds: float, margin: float = 4.0) -> bool:
        """Whether this model, healthy, usually gives a whole answer in under ``seconds / margin``
        (its latency EWMA): then a whole answer asked for in one call is bounded by ``seconds`` as
        safely as a stream's first token is (an answer of ``margin`` times its usual length still
        fits), and a stall is caught as soon. Without a latency sample yet: False."""
        key = breaker_key(provider, model)
        latency = self.latency_s.get(key)
        return latency is not None and latency * margin <= seconds and key not in self.not_healthy

    def ttft_p95(self, provider: str, model: str) -> float | None:
        found = self.ttft.get(breaker_key(provider, model))
        return None if found is None else found.p95

    # --- load ------------------------------------------------------------------------------

    def started(self, provider: str, model: str) -> None:
        key = breaker_key(provider, model)
        self.in_flight[key] = self.in_flight.get(key, 0) + 1

    def finished(self, provider: str, model: str) -> None:
        key = breaker_key(provider, model)
        left = self.in_flight.get(key, 0) - 1
        if left > 0:
            self.in_flight[key] = left
        else:
            self.in_flight.pop(key, None)

    # --- breakers --------------------------------------------------------------------------

    def set_breakers(self, states: Mapping[str, BreakerState]) -> None:
        """Replace the breaker snapshot: ``breaker_key`` -> state as ``Breaker.current`` sees it
        now (keys absent are closed)."""
        open_p: set[str] = set()
        open_m: set[str] = set()
        half_p: set[str] = set()
        half_m: set[str] = set()
        for key, state in states.items():
            if state is BreakerState.CLOSED:
                continue
            model_level = "|" in key
            if state is BreakerState.OPEN:
                (open_m if model_level else open_p).add(key)
            else:
                (half_m if model_level else half_p).add(key)
        snapshot = (frozenset(open_p), frozenset(open_m), frozenset(half_p), frozenset(half_m))
        if snapshot != (self.open_providers, self.open_models, self.half_open_providers, self.half_open_models):
            self.open_providers, self.open_models, self.half_open_providers, self.half_open_models = snapshot
            self.state_version += 1
