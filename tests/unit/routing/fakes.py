"""In-memory fakes of the routing ports, for unit tests and the breaker store contract suite."""

from __future__ import annotations

from collections.abc import Sequence

from domain.routing.breaker import Breaker, BreakerPolicy

__all__ = ["FixedRandom", "MemoryBreakerStore"]


class MemoryBreakerStore:
    """``BreakerStore`` in a dict. Each operation runs without awaiting in between, so on one
    event loop it is atomic, like the Redis adapter's transaction."""

    def __init__(self) -> None:
        self.breakers: dict[str, Breaker] = {}

    async def get_many(self, keys: Sequence[str]) -> dict[str, Breaker]:
        return {k: self.breakers.get(k, Breaker()) for k in keys}

    async def admit(self, key: str, now: float, policy: BreakerPolicy) -> bool:
        after, allowed = self.breakers.get(key, Breaker()).admit(now, policy)
        self.breakers[key] = after
        return allowed

    async def record(self, key: str, ok: bool, now: float, policy: BreakerPolicy) -> Breaker:
        after = self.breakers.get(key, Breaker()).record(ok, now, policy)
        self.breakers[key] = after
        return after


class FixedRandom:
    """``RandomSource`` returning the given values in turn (cycling)."""

    def __init__(self, *values: float) -> None:
        self._values = values or (0.5,)
        self._i = 0

    def random(self) -> float:
        value = self._values[self._i % len(self._values)]
        self._i += 1
        return value
