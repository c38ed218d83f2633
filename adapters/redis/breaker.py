"""``BreakerStore`` on Redis: one key per breaker holding the domain ``Breaker`` as JSON.

Each ``admit`` / ``record`` is an optimistic transaction (WATCH the key, read it, apply the
domain's pure transition, MULTI/SET/EXEC; on a concurrent change, start again), so the state
machine lives in one place (``domain.routing.breaker``) and every replica sees the same state.
An operation that changes nothing (a closed breaker admitting, an open one refusing) writes
nothing. Keys expire ``ttl_s`` after their last change: a breaker untouched that long is closed."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

import msgspec
from redis.asyncio import Redis
from redis.exceptions import RedisError, WatchError

from domain.errors import Unavailable
from domain.routing.breaker import Breaker, BreakerPolicy

__all__ = ["RedisBreakerStore"]

T = TypeVar("T")

_ENCODE = msgspec.json.Encoder()
_DECODE = msgspec.json.Decoder(Breaker)


class RedisBreakerStore:
    def __init__(self, redis: Redis, *, namespace: str = "lumina:breaker", ttl_s: int = 86_400, max_tries: int = 50) -> None:
        self._redis = redis
        self._ns = namespace
        self._ttl = ttl_s
        self._tries = max_tries

    def _key(self, key: str) -> str:
        return f"{self._ns}:{key}"

    async def get_many(self, keys: Sequence[str]) -> dict[str, Breaker]:
        if not keys:
            return {}
        try:
            raws = await self._redis.mget([self._key(k) for k in keys])
        except RedisError as exc:
            raise Unavailable("circuit breaker store unavailable") from exc
        return {k: _decode(raw) for k, raw in zip(keys, raws, strict=True)}

    async def admit(self, key: str, now: float, policy: BreakerPolicy) -> bool:
        return await self._update(key, lambda b: b.admit(now, policy))

    async def record(self, key: str, ok: bool, now: float, policy: BreakerPolicy) -> Breaker:
        def change(b: Breaker) -> tuple[Breaker, Breaker]:
            after = b.record(ok, now, policy)
            return after, after

        return await self._update(key, change)

    async def _update(self, key: str, change: Callable[[Breaker], tuple[Breaker, T]]) -> T:
        name = self._key(key)
        try:
            for _ in range(self._tries):
                async with self._redis.pipeline(transaction=True) as pipe:
                    try:
                        await pipe.watch(name)
                        before = _decode(await pipe.get(name))
                        after, result = change(before)
                        if after == before:
                            await pipe.unwatch()
                            return result
                        pipe.multi()
                        pipe.set(name, _ENCODE.encode(after), ex=self._ttl)
                        await pipe.execute()
                        return result
                    except WatchError:
                        continue  # another replica changed it meanwhile: read again
        except RedisError as exc:
            raise Unavailable("circuit breaker store unavailable") from exc
        raise Unavailable(f"circuit breaker {key!r}: too many concurrent updates")


def _decode(raw: bytes | str | None) -> Breaker:
    if raw is None:
        return Breaker()
    try:
        return _DECODE.decode(raw)
    except msgspec.DecodeError:
        return Breaker()  # unreadable (e.g. written by an incompatible build): start closed
