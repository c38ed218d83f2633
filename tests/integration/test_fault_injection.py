"""Fault injection end to end: five providers in the registry (Postgres), each a provider simulator
of its own over HTTP, four of them broken — one answers 429 (Retry-After longer than Lumina waits),
one 500, one stalls after its headers, one drops the connection once its stream started — and one
healthy. Clients use the UNMODIFIED ``openai`` SDK against Lumina's REST edge, through a group that
lists the broken ones first. Breakers are shared through Redis.

- 50 concurrent requests, streaming and not: zero failures, every answer the healthy provider's,
  the route and the fallbacks tried in headers and metadata; the broken providers' breakers open
  (in Redis), so later requests go straight to the healthy one; usage rows and RouteDecided events
  are committed for every request.
- A provider that drops its stream after content reached the client: the client gets that text
  once, then one clean error event — never a second answer, never duplicated text; the usage row
  of what was streamed is written all the same (``finish_reason`` ``interrupted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis

from adapters.postgres import create_engine
from adapters.postgres.mappers import start_mappers
from adapters.postgres.migrate import upgrade_async
from adapters.redis.breaker import RedisBreakerStore
from api.auth import StaticAuthenticator
from api.bootstrap import Backend, build_backend
from api.settings import load_settings
from domain.cost import Price
from domain.identity import Principal, PrincipalKind, Role
from domain.registry import ModelCapabilities, ModelRoute, ProviderKind, ProviderSpec
from domain.routing import BreakerState, breaker_key
from tools.provider_sim.testing import fetch_stats, running_simulator

pytestmark = pytest.mark.timeout(180)

KEY = "lum_fa017a017a01_fault-injection-key-0123456789"
TENANT = "faults"
CAPS = ModelCapabilities(tools=True, json_schema=True)
# the broken ones first: every request meets every fault until the breakers open
BROKEN = {"p429": {"fault": "429", "retry_after": 30}, "p500": {"fault": "500"}, "pstall": {"fault": "stall"},
          "pdrop": {"fault": "disconnect-after-1"}}  # after the role event: a stream that started, no content yet
ORDER = ("m429", "m500", "mstall", "mdrop", "mgood")
QUESTION = [{"role": "user", "content": "tell me about circuit breakers"}]


@dataclass
class Stack:
    backend: Backend
    sims: dict[str, str]  # provider -> simulator base URL
    database_url: str

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.backend.http_port}/v1"

    def client(self) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(api_key=KEY, base_url=self.base_url, max_retries=0, timeout=30)


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        urls = {name: stack.enter_context(running_simulator(**knobs)) for name, knobs in BROKEN.items()}  # type: ignore[arg-type]
        urls["pgood"] = stack.enter_context(running_simulator())
        urls["plate"] = stack.enter_context(running_simulator(fault="disconnect-after-4", chunks=8))
        yield urls


def registry(sims: dict[str, str], tag: str) -> tuple[list[ProviderSpec], list[ModelRoute]]:
    start_mappers()  # registry values are mapped (imperatively): instrument the classes before making them
    providers = [ProviderSpec(f"{p}-{tag}", ProviderKind.OPENAI_COMPATIBLE, base_url=url, label="simulated")
                 for p, url in sims.items()]
    models = [ModelRoute(f"m{p[1:]}", f"{p}-{tag}", "sim-small", Price(1, 2), capabilities=CAPS) for p in sims]
    return providers, models


@pytest.fixture
async def stack(empty_database_url: str, redis_url: str, sims: dict[str, str], tmp_path: Path) -> AsyncIterator[Stack]:
    await upgrade_async(empty_database_url)
    tag = uuid.uuid4().hex[:6]
    routing = {
        "groups": {"chat": {"models": list(ORDER), "strategy": "pinned"}},
        "fallbacks": {"mlate": ["mgood"]},
        "max_fallbacks": 4,
        "retry": {"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.05, "max_retry_after_s": 1.0},
        "timeouts": {"connect_s": 0.5, "first_token_s": 0.5, "total_s": 30},
        "breaker": {"consecutive_failures": 3, "cooldown_s": 120, "window": 20, "min_calls": 10},
        "breaker_refresh_s": 0.2,
    }
    settings = load_settings(
        {}, database_url=empty_database_url, redis_url=redis_url, tenant_id=TENANT, data_dir=str(tmp_path),
        memory_enabled=False, routing=routing,
    )
    caller = Principal(TENANT, "user-f", Role.MEMBER, PrincipalKind.API_KEY, "key-f")
    backend = build_backend(settings, seed=registry(sims, tag), authenticator=StaticAuthenticator({KEY: caller}))
    backend.keys = {}  # no stored API keys: the simulators take any
    # breaker keys carry the provider names, unique to this test (the Redis is shared)
    await backend.start(grpc_port=0, http_port=0)
    try:
        yield Stack(backend, {f"{p}-{tag}": url for p, url in sims.items()}, empty_database_url)
    finally:
        await backend.stop()
        redis = Redis.from_url(redis_url)
        try:
            keys = [k async for k in redis.scan_iter(match=f"lumina:breaker:*-{tag}*", count=1000)]
            if keys:
                await redis.delete(*keys)
        finally:
            await redis.aclose()


async def ask(client: openai.AsyncOpenAI, stream: bool) -> tuple[str, dict[str, str], dict[str, object]]:
    """(text, response headers, Lumina's route summary) of one request through the SDK."""
    if not stream:
        raw = await client.chat.completions.with_raw_response.create(model="chat", messages=QUESTION)  # type: ignore[arg-type]
        body = raw.parse()
        extra = json.loads(raw.text)["lumina"]["route"]
        return body.choices[0].message.content or "", dict(raw.headers), extra
    async with client.chat.completions.with_streaming_response.create(
        model="chat", messages=QUESTION, stream=True,  # type: ignore[arg-type]
    ) as response:
        parts: list[str] = []
        route: dict[str, object] = {}
        async for chunk in await response.parse():
            if chunk.choices and chunk.choices[0].delta.content:
                parts.append(chunk.choices[0].delta.content)
            lumina = (chunk.model_extra or {}).get("lumina")
            if lumina:
                route = lumina
        return "".join(parts), dict(response.headers), route


async def test_fifty_concurrent_clients_see_no_failure_while_four_providers_are_broken(stack: Stack) -> None:
    good = next(name for name in stack.sims if name.startswith("pgood"))
    async with stack.client() as client:
        results = await asyncio.gather(*(ask(client, stream=i % 2 == 0) for i in range(50)), return_exceptions=True)
    failures = [r for r in results if isinstance(r, BaseException)]
    assert failures == [], failures[:3]
    answers = [r for r in results if not isinstance(r, BaseException)]
    texts = {text for text, _, _ in answers}
    assert len(texts) == 1 and next(iter(texts))  # every client got the same, complete answer
    assert {headers["x-lumina-route"] for _, headers, _ in answers} == {f"{good}/mgood"}
    assert {route["model"] for _, _, route in answers} == {"mgood"}
    tried = [tuple(route["fallbacks_tried"]) for _, _, route in answers]  # type: ignore[arg-type]
    # each went down the group in order, skipping what a breaker had opened meanwhile; together
    # they met every fault
    assert all(list(t) == [m for m in ORDER if m in t] for t in tried)
    assert set().union(*tried) == {"m429", "m500", "mstall", "mdrop"}

    # every broken provider's breaker is open in Redis (shared with any other replica)
    redis = Redis.from_url(stack.backend.settings.redis_url or "")
    try:
        store = RedisBreakerStore(redis)
        broken = [name for name in stack.sims if name.split("-")[0] in BROKEN]
        states = await store.get_many([breaker_key(name) for name in broken])
        assert {k: b.state for k, b in states.items()} == {breaker_key(n): BreakerState.OPEN for n in broken}
    finally:
        await redis.aclose()

    # now routing skips them: 10 more requests reach only the healthy provider
    before = {name: (await asyncio.to_thread(fetch_stats, url)).requests for name, url in stack.sims.items()}
    await asyncio.sleep(0.3)  # a breaker refresh
    async with stack.client() as client:
        again = await asyncio.gather(*(ask(client, stream=i % 2 == 1) for i in range(10)))
    assert all(route["fallbacks_tried"] == [] and route["attempts"] == 1 for _, _, route in again)
    after = {name: (await asyncio.to_thread(fetch_stats, url)).requests for name, url in stack.sims.items()}
    assert {n: after[n] - before[n] for n in after} == {n: (10 if n == good else 0) for n in after}

    # one settlement per request: 60 usage rows, all the healthy provider's, with their decisions
    engine = create_engine(stack.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text(
                "SELECT provider, count(*) FROM usage_records WHERE tenant_id = :t GROUP BY provider"), {"t": TENANT})).all()
            decided = (await conn.execute(sa.text(
                "SELECT count(*) FROM outbox WHERE subject = :s"), {"s": f"lumina.{TENANT}.route.decided"})).scalar()
    finally:
        await engine.dispose()
    assert rows == [(good, 60)] and decided == 60


async def test_a_stream_dropped_after_content_ends_with_one_error_and_no_repeated_text(stack: Stack) -> None:
    late = next(name for name in stack.sims if name.startswith("plate"))
    good = next(name for name in stack.sims if name.startswith("pgood"))
    body = {"model": "mlate", "stream": True, "messages": QUESTION}
    whole = await _whole_answer(stack)
    before = (await asyncio.to_thread(fetch_stats, stack.sims[good])).requests
    events: list[dict[str, object]] = []
    async with (
        httpx.AsyncClient(timeout=30, headers={"authorization": f"Bearer {KEY}"}) as http,
        http.stream("POST", f"{stack.base_url}/chat/completions", json=body) as response,
    ):
        assert response.status_code == 200
        assert response.headers["x-lumina-route"] == f"{late}/mlate"
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                events.append(json.loads(line[6:]))
            elif line == "data: [DONE]":
                events.append({"done": True})
    content = "".join(
        e["choices"][0]["delta"].get("content") or ""  # type: ignore[index]
        for e in events if e.get("choices")
    )
    errors = [e for e in events if "error" in e]
    assert content and whole.startswith(content) and content != whole  # a prefix, said once
    assert len(errors) == 1 and errors[0]["error"]["code"] == "upstream_unavailable"  # type: ignore[index]
    finishes = [e["choices"][0]["finish_reason"] for e in events if e.get("choices") and e["choices"][0]["finish_reason"]]  # type: ignore[index]
    assert finishes == ["error"] and events[-1] == {"done": True}
    # no fallback once content was sent: the healthy provider was not asked
    assert (await asyncio.to_thread(fetch_stats, stack.sims[good])).requests == before
    # the SDK surfaces it as an error after the text it already yielded
    seen: list[str] = []
    async with stack.client() as client:
        stream = await client.chat.completions.create(model="mlate", messages=QUESTION, stream=True)  # type: ignore[arg-type]
        with pytest.raises(openai.APIError):  # the error event, after the text
            async for chunk in stream:
                if chunk.choices and chunk.choices[0].delta.content:
                    seen.append(chunk.choices[0].delta.content)
    assert "".join(seen) == content
    # both cut-off answers are recorded: a usage row each, marked interrupted, tokens counted
    await stack.backend.stream_chat.drain()
    engine = create_engine(stack.database_url, pool_size=1)
    try:
        async with engine.connect() as conn:
            rows = (await conn.execute(sa.text(
                "SELECT finish_reason, count(*), min(output_tokens) FROM usage_records WHERE tenant_id = :t"
                " AND provider = :p GROUP BY finish_reason"), {"t": TENANT, "p": late})).all()
    finally:
        await engine.dispose()
    assert [(reason, n) for reason, n, _ in rows] == [("interrupted", 2)] and rows[0][2] > 0


async def _whole_answer(stack: Stack) -> str:
    async with stack.client() as client:
        done = await client.chat.completions.create(model="mgood", messages=QUESTION)  # type: ignore[arg-type]
    return done.choices[0].message.content or ""
