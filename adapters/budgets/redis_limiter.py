"""``RedisRateLimiter``: the ``RateLimiter`` port as GCRA meters in Redis (``adapters.budgets.lua``:
one script charges every meter of a request or none, on Redis' clock, in microseconds)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapters.budgets import lua
from adapters.budgets.redis_ledger import LedgerUnavailable
from application.budgets.ports import Meter
from domain.budgets import GcraResult

__all__ = ["RedisRateLimiter"]


def _interval_us(meter: Meter) -> float:
    return meter.period * 1_000_000 / meter.rate


class RedisRateLimiter:
    def __init__(self, redis: Redis, *, namespace: str = "lumina:ratelimit") -> None:
        self._ns = namespace
        self._gcra = redis.register_script(lua.GCRA)
        self._adjust = redis.register_script(lua.ADJUST)

    def _key(self, tenant_id: str, meter: Meter) -> str:
        return f"{self._ns}:{{{tenant_id.replace('{', '_').replace('}', '_')}}}:{meter.key}"

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except RedisError as exc:
            raise LedgerUnavailable(f"rate limiter unavailable: {type(exc).__name__}") from exc

    async def acquire(self, tenant_id: str, meters: Sequence[Meter]) -> Sequence[GcraResult]:
        if not meters:
            return []
        args: list[Any] = [len(meters)]
        for m in meters:
            interval = _interval_us(m)
            args += [repr(interval), repr(interval * (m.burst or m.rate)), m.cost]
        reply = [int(x) for x in await self._run(self._gcra, [self._key(tenant_id, m) for m in meters], args)]
        results = []
        for i in range(len(meters)):
            allowed, remaining, reset_us, retry_us = reply[i * 4 : i * 4 + 4]
            results.append(GcraResult(bool(allowed), 0.0, remaining, reset_us / 1e6, retry_us / 1e6))
        return results

    async def adjust(self, tenant_id: str, meters: Sequence[Meter]) -> None:
        if not meters:
            return
        args: list[Any] = [len(meters)]
        for m in meters:
            args += [repr(_interval_us(m)), m.cost]
        await self._run(self._adjust, [self._key(tenant_id, m) for m in meters], args)
