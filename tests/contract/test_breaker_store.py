"""The one contract every ``BreakerStore`` meets, run against the in-memory fake and the Redis
adapter (real Redis, ``redis_url``): unknown keys are closed; outcomes drive the domain's state
machine; half-open probe slots are handed out atomically even to concurrent callers."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest

from domain.routing import BreakerPolicy, BreakerState, BreakerStore, breaker_key
from tests.unit.routing.fakes import MemoryBreakerStore

POLICY = BreakerPolicy(consecutive_failures=3, failure_rate=0.0, cooldown_s=10.0, half_open_probes=2, close_after=2)


@pytest.fixture(params=["memory", "redis"])
async def store(request: pytest.FixtureRequest) -> AsyncIterator[BreakerStore]:
    if request.param == "memory":
        yield MemoryBreakerStore()
        return
    from redis.asyncio import Redis

    from adapters.redis.breaker import RedisBreakerStore

    client = Redis.from_url(request.getfixturevalue("redis_url"))
    namespace = f"lumina:test:breaker:{uuid.uuid4().hex[:8]}"
    try:
        yield RedisBreakerStore(client, namespace=namespace, ttl_s=120)
    finally:
        keys = [k async for k in client.scan_iter(match=namespace + ":*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()


async def test_unknown_breakers_are_closed_and_admit(store: BreakerStore) -> None:
    key = breaker_key("openai", "gpt-4o")
    assert (await store.get_many([key]))[key].state is BreakerState.CLOSED
    assert await store.admit(key, 0.0, POLICY)
    assert await store.get_many([]) == {}


async def test_failures_open_then_cool_down_to_half_open_then_close(store: BreakerStore) -> None:
    key = breaker_key("anthropic")
    for t in (1.0, 2.0):
        assert (await store.record(key, False, t, POLICY)).state is BreakerState.CLOSED
    opened = await store.record(key, False, 3.0, POLICY)
    assert opened.state is BreakerState.OPEN and opened.opened_at == 3.0
    assert not await store.admit(key, 12.9, POLICY)
    assert (await store.get_many([key]))[key].current(13.0, POLICY) is BreakerState.HALF_OPEN
    assert await store.admit(key, 13.0, POLICY)
    assert (await store.record(key, True, 14.0, POLICY)).state is BreakerState.HALF_OPEN
    assert (await store.record(key, True, 15.0, POLICY)).state is BreakerState.CLOSED
    assert (await store.get_many([key]))[key].state is BreakerState.CLOSED


async def test_concurrent_admissions_share_the_probe_slots(store: BreakerStore) -> None:
    key = breaker_key("gemini", "gemini-2.5-pro")
    for t in (1.0, 2.0, 3.0):
        await store.record(key, False, t, POLICY)
    results = await asyncio.gather(*(store.admit(key, 20.0, POLICY) for _ in range(25)))
    assert sum(results) == POLICY.half_open_probes
    state = (await store.get_many([key]))[key]
    assert state.state is BreakerState.HALF_OPEN and state.probes == POLICY.half_open_probes


async def test_concurrent_failures_are_all_counted(store: BreakerStore) -> None:
    key = breaker_key("xai", "grok-4")
    policy = BreakerPolicy(consecutive_failures=50, failure_rate=0.0)
    await asyncio.gather(*(store.record(key, False, 1.0, policy) for _ in range(20)))
    assert (await store.get_many([key]))[key].consecutive_failures == 20
