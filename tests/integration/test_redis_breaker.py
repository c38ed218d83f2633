"""Circuit breakers shared across replicas through real Redis: two "replicas" (each its own Redis
connection and ``RedisBreakerStore``, as two processes would have) see one breaker. Failures
reported by one open it for the other; after the cool-down only the configured number of probes
is admitted across both; one replica's successful probe closes it for both; and the routing view
built from the shared state makes both routers reject the broken provider."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from adapters.redis.breaker import RedisBreakerStore
from domain.cost import Price
from domain.registry import ModelRoute
from domain.routing import (
    BreakerPolicy,
    BreakerState,
    Requirements,
    Router,
    RoutingConfig,
    RuntimeView,
    breaker_key,
)

POLICY = BreakerPolicy(consecutive_failures=4, failure_rate=0.0, cooldown_s=5.0, half_open_probes=1, close_after=1)


@pytest.fixture
def namespace() -> str:
    return f"lumina:test:breaker:{uuid.uuid4().hex[:8]}"


@pytest.fixture
async def replicas(redis_url: str, namespace: str) -> AsyncIterator[tuple[RedisBreakerStore, RedisBreakerStore]]:
    one, two = Redis.from_url(redis_url), Redis.from_url(redis_url)
    try:
        yield RedisBreakerStore(one, namespace=namespace), RedisBreakerStore(two, namespace=namespace)
    finally:
        keys = [k async for k in one.scan_iter(match=namespace + ":*")]
        if keys:
            await one.delete(*keys)
        await one.aclose()
        await two.aclose()


async def _view(store: RedisBreakerStore, keys: list[str], now: float) -> RuntimeView:
    view = RuntimeView()
    view.set_breakers({k: b.current(now, POLICY) for k, b in (await store.get_many(keys)).items()})
    return view


async def test_two_replicas_share_one_breaker(replicas: tuple[RedisBreakerStore, RedisBreakerStore]) -> None:
    a, b = replicas
    key = breaker_key("flaky")
    # failures reported by both replicas add up: 2 + 2 reach the threshold of 4
    await a.record(key, False, 1.0, POLICY)
    await b.record(key, False, 1.1, POLICY)
    await a.record(key, False, 1.2, POLICY)
    assert (await b.get_many([key]))[key].state is BreakerState.CLOSED
    await b.record(key, False, 1.3, POLICY)
    assert (await a.get_many([key]))[key].state is BreakerState.OPEN
    assert not await a.admit(key, 2.0, POLICY)
    assert not await b.admit(key, 2.0, POLICY)

    # both routers now reject the provider; the other one serves
    routes = [
        ModelRoute(name="flaky-model", provider="flaky", upstream_model="m", price=Price(0.1, 0.1)),
        ModelRoute(name="steady-model", provider="steady", upstream_model="m", price=Price(5, 5)),
    ]
    keys = [key, breaker_key("steady")]
    for store in (a, b):
        decision = Router(RoutingConfig(), routes).decide(Requirements(prompt_tokens=10), view=await _view(store, keys, 3.0))
        assert decision.chosen is not None and decision.chosen.model == "steady-model"
        assert decision.rejected == {"flaky-model": "circuit breaker open (provider)"}

    # after the cool-down, exactly one probe across both replicas, even when they race
    admitted = await asyncio.gather(*(store.admit(key, 6.5, POLICY) for store in (a, b) * 10))
    assert sum(admitted) == 1
    assert (await b.get_many([key]))[key].state is BreakerState.HALF_OPEN
    # whichever replica probed reports success: closed for both
    await (a if admitted.index(True) % 2 == 0 else b).record(key, True, 7.0, POLICY)
    assert (await a.get_many([key]))[key].state is BreakerState.CLOSED
    assert (await b.get_many([key]))[key].state is BreakerState.CLOSED
    assert await b.admit(key, 7.1, POLICY)


async def test_breaker_keys_expire(
    replicas: tuple[RedisBreakerStore, RedisBreakerStore], redis_url: str, namespace: str
) -> None:
    a, _ = replicas
    key = breaker_key("p", "m")
    await a.record(key, False, 1.0, POLICY)
    client = Redis.from_url(redis_url)
    try:
        [name] = [k async for k in client.scan_iter(match=f"{namespace}:*")]
        assert name.decode().endswith("p|m")
        assert 0 < await client.ttl(name) <= 86_400
    finally:
        await client.aclose()
