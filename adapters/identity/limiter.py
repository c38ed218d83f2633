"""Brute-force limiter on Redis (``LoginLimiter``). Per key: a failure counter that expires
``window`` after the last failure, and a lock whose TTL is the backoff delay for that count (capped).
A success clears the key. ``hit`` is a fixed-window counter (one Lua call: count, start the window
on the first use, answer the count and the window's remaining time). Keys are hashed, so no email
address is stored in Redis; ``namespace`` prefixes them (one per deployment sharing a Redis, one
per test run)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain.errors import Unavailable
from domain.identity import BackoffPolicy, TooManyAttempts

__all__ = ["RedisLoginLimiter"]


# KEYS[1] counter; ARGV[1] window in ms -> {count, remaining ms}
_HIT = """
local n = redis.call('INCR', KEYS[1])
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[1])
  ttl = tonumber(ARGV[1])
end
return {n, ttl}
"""


class RedisLoginLimiter:
    def __init__(self, redis: Redis, policy: BackoffPolicy | None = None, namespace: str = "lumina:auth") -> None:
        self._redis = redis
        self._policy = policy or BackoffPolicy()
        self._ns = namespace
        self._hit = redis.register_script(_HIT)

    def _key(self, kind: str, key: str) -> str:
        return f"{self._ns}:{kind}:{hashlib.sha256(key.encode()).hexdigest()[:32]}"

    async def check(self, keys: Sequence[str]) -> None:
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                for key in keys:
                    pipe.pttl(self._key("lock", key))
                ttls = await pipe.execute()
        except RedisError as exc:
            raise Unavailable("login limiter unavailable") from exc
        wait = max((t for t in ttls if t and t > 0), default=0)
        if wait > 0:
            raise TooManyAttempts(retry_after=wait / 1000)

    async def failed(self, keys: Sequence[str]) -> None:
        window_ms = int(self._policy.window_seconds * 1000)
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                for key in keys:
                    pipe.incr(self._key("fail", key))
                    pipe.pexpire(self._key("fail", key), window_ms)
                results = await pipe.execute()
            counts = results[0::2]
            async with self._redis.pipeline(transaction=False) as pipe:
                for key, count in zip(keys, counts, strict=True):
                    delay = self._policy.delay(int(count))
                    if delay > 0:
                        pipe.set(self._key("lock", key), "1", px=max(1, int(delay * 1000)))
                await pipe.execute()
        except RedisError as exc:
            raise Unavailable("login limiter unavailable") from exc

    async def succeeded(self, keys: Sequence[str]) -> None:
        try:
            names = [self._key(kind, key) for key in keys for kind in ("fail", "lock")]
            if names:
                await self._redis.delete(*names)
        except RedisError as exc:
            raise Unavailable("login limiter unavailable") from exc

    async def hit(self, key: str, *, limit: int, window_seconds: float) -> None:
        window_ms = max(1, int(window_seconds * 1000))
        try:
            count, remaining_ms = await self._hit(keys=[self._key("hit", key)], args=[window_ms])
        except RedisError as exc:
            raise Unavailable("login limiter unavailable") from exc
        if int(count) > limit:
            raise TooManyAttempts(retry_after=max(int(remaining_ms), 1) / 1000)
