"""``RedisLiveLedger``: the ``LiveLedger`` port on Redis (Lua scripts in ``adapters.budgets.lua``).

Every operation is one script call: atomic across every replica sharing the Redis, one round trip.
Redis errors become ``LedgerUnavailable`` (an ``Unavailable``): with the ledger unreachable no
reservation is admitted (budgets fail closed).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from adapters.budgets import lua
from application.budgets.ports import (
    ReserveLine,
    ReserveOutcome,
    SettleOutcome,
    SettleStatus,
    StatusOutcome,
)
from domain.budgets import Counter
from domain.errors import InvalidRequest, Unavailable

__all__ = ["LedgerUnavailable", "RedisLiveLedger"]

log = logging.getLogger("lumina.budgets")

_DAY_MS = 86_400_000


class LedgerUnavailable(Unavailable):
    retryable = True


class RedisLiveLedger:
    """``namespace`` prefixes every key (tests use one of their own per run). Also the
    ``SpendJournal``: ``settle`` writes its journal entry in the same script; ``forget_soon``
    deletes entries in the background, many in one round trip."""

    def __init__(self, redis: Redis, *, namespace: str = "lumina:budget", done_ttl_seconds: float = 86_400) -> None:
        self._redis = redis
        self._ns = namespace
        self._done_ms = int(done_ttl_seconds * 1000)
        self._reserve = redis.register_script(lua.RESERVE)
        self._settle = redis.register_script(lua.SETTLE)
        self._release = redis.register_script(lua.RELEASE)
        self._status = redis.register_script(lua.STATUS)
        self._seed_rolling = redis.register_script(lua.SEED_ROLLING)
        self._forget: dict[str, list[str]] = {}  # journal key -> reservation ids written to Postgres
        self._forgetting: asyncio.Task[None] | None = None

    # keys: the tenant in braces is the cluster hash tag, so one request's keys share a slot
    def _prefix(self, tenant_id: str) -> str:
        return f"{self._ns}:{{{tenant_id.replace('{', '_').replace('}', '_')}}}"

    def _budget_keys(self, prefix: str, budget_id: str) -> list[str]:
        base = f"{prefix}:b:{budget_id}"
        return [f"{base}:held", f"{base}:exp", f"{base}:heldsum"]

    def _counter_key(self, prefix: str, counter: Counter) -> str:
        return f"{prefix}:b:{counter.budget_id}:{'roll' if counter.rolling else 'p:' + counter.key}"

    def _journal_key(self, tenant_id: str) -> str:
        return f"{self._prefix(tenant_id)}:journal"

    def _done_key(self, prefix: str, reservation_id: str) -> str:
        return f"{prefix}:r:{reservation_id}"

    @staticmethod
    def _counter_ttl_ms(counter: Counter) -> int:
        return max(60_000, int((counter.expires_at.timestamp() - time.time()) * 1000))

    async def _run(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        try:
            return await script(keys=keys, args=args)
        except RedisError as exc:
            raise LedgerUnavailable(f"budget ledger unavailable: {type(exc).__name__}") from exc

    async def reserve(
        self, tenant_id: str, reservation_id: str, lines: Sequence[ReserveLine], ttl_seconds: float
    ) -> ReserveOutcome:
        prefix = self._prefix(tenant_id)
        ttl_ms = max(1, int(ttl_seconds * 1000))
        keys = [self._done_key(prefix, reservation_id)]
        args: list[Any] = [reservation_id, ttl_ms, ttl_ms + _DAY_MS, len(lines)]
        for line in lines:
            c = line.counter
            keys += [*self._budget_keys(prefix, c.budget_id), self._counter_key(prefix, c)]
            args += [line.limit_micros, int(line.hard), line.amount_micros, int(c.rolling), c.bucket, c.buckets]
        reply = [int(x) for x in await self._run(self._reserve, keys, args)]
        match reply[0]:
            case 1:
                return ReserveOutcome(True, over_soft=tuple(i - 1 for i in reply[1:]))
            case 0:
                return ReserveOutcome(False, rejected=reply[1] - 1)
            case -1:
                return ReserveOutcome(False, missing=tuple(i - 1 for i in reply[1:]))
            case _:
                raise InvalidRequest.single("reservation_id", "this reservation was settled or released already")

    async def settle(
        self, tenant_id: str, reservation_id: str, counters: Sequence[Counter], actual_micros: int, *, journal: bytes = b""
    ) -> SettleOutcome:
        prefix = self._prefix(tenant_id)
        keys = [self._done_key(prefix, reservation_id)]
        args: list[Any] = [reservation_id, self._done_ms, actual_micros, len(counters)]
        for c in counters:
            keys += [*self._budget_keys(prefix, c.budget_id), self._counter_key(prefix, c)]
            args += [int(c.rolling), c.bucket, c.buckets, self._counter_ttl_ms(c)]
        keys.append(self._journal_key(tenant_id))
        args.append(journal)
        reply = [int(x) for x in await self._run(self._settle, keys, args)]
        match reply[0]:
            case 1:
                values = reply[1:]
                return SettleOutcome(SettleStatus.SETTLED, moves=tuple(zip(values[0::2], values[1::2], strict=True)))
            case -1:
                return SettleOutcome(SettleStatus.MISSING, missing=tuple(i - 1 for i in reply[1:]))
            case -2:
                values = reply[1:]
                return SettleOutcome(SettleStatus.DUPLICATE, moves=tuple(zip(values[0::2], values[1::2], strict=True)))
            case _:
                return SettleOutcome(SettleStatus.RELEASED)

    async def release(self, tenant_id: str, reservation_id: str, budget_ids: Sequence[str]) -> bool:
        prefix = self._prefix(tenant_id)
        keys = [self._done_key(prefix, reservation_id)]
        for budget_id in budget_ids:
            keys += self._budget_keys(prefix, budget_id)
        return bool(await self._run(self._release, keys, [reservation_id, self._done_ms, len(budget_ids)]))

    async def status(self, tenant_id: str, counters: Sequence[Counter]) -> StatusOutcome:
        prefix = self._prefix(tenant_id)
        keys: list[str] = []
        args: list[Any] = [len(counters)]
        for c in counters:
            keys += [*self._budget_keys(prefix, c.budget_id), self._counter_key(prefix, c)]
            args += [int(c.rolling), c.bucket, c.buckets]
        reply = [int(x) for x in await self._run(self._status, keys, args)]
        if reply[0] == -1:
            return StatusOutcome(missing=tuple(i - 1 for i in reply[1:]))
        values = reply[1:]
        return StatusOutcome(lines=tuple(zip(values[0::2], values[1::2], strict=True)))

    # --- the journal (SpendJournal) ---------------------------------------------------------------

    async def pending(self, limit: int = 1000) -> list[bytes]:
        """Up to ``limit`` journal entries of every tenant (oldest keys first is not promised)."""
        found: list[bytes] = []
        try:
            async for key in self._redis.scan_iter(match=f"{self._ns}:*:journal", count=1000):
                async for _, value in self._redis.hscan_iter(key, count=500):
                    found.append(value)
                    if len(found) >= limit:
                        return found
        except RedisError as exc:
            raise LedgerUnavailable(f"budget journal unavailable: {type(exc).__name__}") from exc
        return found

    async def forget(self, tenant_id: str, reservation_ids: Sequence[str]) -> None:
        if not reservation_ids:
            return
        try:
            await self._redis.hdel(self._journal_key(tenant_id), *reservation_ids)
        except RedisError as exc:
            raise LedgerUnavailable(f"budget journal unavailable: {type(exc).__name__}") from exc

    def forget_soon(self, tenant_id: str, reservation_id: str) -> None:
        self._forget.setdefault(self._journal_key(tenant_id), []).append(reservation_id)
        if self._forgetting is None or self._forgetting.done():
            self._forgetting = asyncio.ensure_future(self._forget_all())

    async def _forget_all(self) -> None:
        while self._forget:
            batch, self._forget = self._forget, {}
            try:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for key, ids in batch.items():
                        pipe.hdel(key, *ids)
                    await pipe.execute()
            except RedisError as exc:  # left in the journal: the next drain writes them again, once
                log.warning("budget journal entries not trimmed: %s", type(exc).__name__)

    async def flush(self) -> None:
        """Wait for the trims still in flight."""
        task = self._forgetting
        if task is not None and not task.done():
            await asyncio.wait([task], timeout=2)

    async def seed(self, tenant_id: str, counter: Counter, spent: int | Mapping[int, int]) -> None:
        key = self._counter_key(self._prefix(tenant_id), counter)
        ttl_ms = self._counter_ttl_ms(counter)
        if counter.rolling:
            pairs: list[Any] = []
            for bucket, micros in (spent.items() if isinstance(spent, Mapping) else ()):
                pairs += [bucket, micros]
            await self._run(self._seed_rolling, [key], [ttl_ms, *pairs])
            return
        total = spent if isinstance(spent, int) else sum(spent.values())
        try:
            await self._redis.set(key, total, nx=True, px=ttl_ms)
        except RedisError as exc:
            raise LedgerUnavailable(f"budget ledger unavailable: {type(exc).__name__}") from exc
