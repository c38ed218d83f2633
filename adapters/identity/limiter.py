"""Brute-force limiter on Redis (``LoginLimiter``). Per key: a failure counter that expires
``window`` after the last failure, and a lock whose TTL is the backoff delay for that count (capped).
A success clears the key. Keys are hashed, so no email address is stored in Redis."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from redis.asyncio import Redis
from redis.exceptions import RedisError

from domain.errors import Unavailable
from domain.identity import BackoffPolicy, TooManyAttempts

__all__ = ["RedisLoginLimiter"]


class RedisLoginLimiter:
    def __init__(self, redis: Redis, policy: BackoffPolicy | None = None, namespace: str = "lumina:auth") -> None:
        self._redis = redis
        self._policy = policy or BackoffPolicy()
        self._ns = namespace

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
