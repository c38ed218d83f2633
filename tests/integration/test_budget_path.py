"""Budgets and rate limits on the chat path, end to end: a backend built by the composition root on
the session's Postgres and Redis, the real OpenAI adapter and the provider simulator, callers
authenticated by API key.

- A hard budget on the caller's API key that affords about ten requests: thirty fired at once,
  about ten answered, every other one a 429 naming the budget (with Retry-After); gRPC answers
  RESOURCE_EXHAUSTED with a QuotaFailure naming it; spend in Postgres (usage rows and the budget
  ledger) never exceeds the budget.
- A rate limit on the key: answers carry ``x-ratelimit-*`` and ``x-lumina-route``; over the limit
  a 429 with Retry-After (REST) and RESOURCE_EXHAUSTED with RetryInfo (gRPC).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import grpc
import httpx
import pytest
import sqlalchemy as sa
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from redis.asyncio import Redis

from adapters.postgres import create_engine
from adapters.postgres.mappers import start_mappers
from adapters.providers import OpenAIProvider
from api.auth import StaticAuthenticator
from api.bootstrap import Backend, build_backend
from api.settings import load_settings
from domain.cost import Price
from domain.identity import Principal, PrincipalKind, Role
from domain.registry import ModelCapabilities, ModelRoute, ProviderKind, ProviderSpec
from lumina.v1 import chat_pb2 as pb
from lumina.v1 import chat_pb2_grpc
from tools.provider_sim.testing import running_simulator

pytestmark = pytest.mark.timeout(120)

HI = [{"role": "user", "content": "hello there"}]
MAX_TOKENS = 16


@dataclass
class Path_:
    backend: Backend
    tenant: str
    key_id: str
    model: str
    provider: str
    http: httpx.AsyncClient
    channel: grpc.aio.Channel

    async def chat(self, token: str = "caller") -> httpx.Response:
        body = {"model": self.model, "messages": HI, "max_tokens": MAX_TOKENS}
        return await self.http.post("/v1/chat/completions", json=body, headers=bearer(token))

    async def grpc_complete(self) -> pb.CompleteResponse:
        request = pb.CompleteRequest(parameters=pb.ChatParameters(
            model=self.model, max_tokens=MAX_TOKENS, messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hello there")]))
        stub = chat_pb2_grpc.ChatServiceStub(self.channel)
        return await stub.Complete(request, metadata=(("authorization", "Bearer caller"),))


def bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_simulator(tokens=MAX_TOKENS) as url:
        yield url


@pytest.fixture
async def path(database_url: str, redis_url: str, sim: str) -> AsyncIterator[Path_]:
    tag = uuid.uuid4().hex[:8]
    tenant, key_id = f"bp-{tag}", f"key-{tag}"
    provider, model = f"bp-sim-{tag}", f"pricey-{tag}"
    tokens = {
        "admin": Principal(tenant, "boss", Role.ADMIN, PrincipalKind.API_KEY, f"key-admin-{tag}"),
        "caller": Principal(tenant, "carol", Role.MEMBER, PrincipalKind.API_KEY, key_id),
    }
    start_mappers()
    seed = (
        [ProviderSpec(provider, ProviderKind.OPENAI_COMPATIBLE, label="simulated")],
        # $100 in / $400 out per 1M tokens: about 7,000 micro-dollars a request
        [ModelRoute(model, provider, "sim-small", Price(100, 400), capabilities=ModelCapabilities(max_output_tokens=64))],
    )
    settings = load_settings({}, database_url=database_url, redis_url=redis_url, tenant_id="budgetpath", memory_enabled=False)
    backend = build_backend(
        settings, providers=[OpenAIProvider(provider, api_key="k", base_url=sim, timeout=20)], seed=seed,
        authenticator=StaticAuthenticator(tokens),
    )
    await backend.start(grpc_port=0, http_port=0)
    try:
        async with (
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{backend.http_port}", timeout=30) as http,
            grpc.aio.insecure_channel(f"127.0.0.1:{backend.grpc_port}") as channel,
        ):
            yield Path_(backend, tenant, key_id, model, provider, http, channel)
    finally:
        await backend.stop()
        await _cleanup(database_url, redis_url, tenant, provider)


async def _cleanup(database_url: str, redis_url: str, tenant: str, provider: str) -> None:
    redis = Redis.from_url(redis_url)
    try:
        keys = [k async for k in redis.scan_iter(match=f"lumina:*{{{tenant}}}*", count=1000)]
        keys += [k async for k in redis.scan_iter(match=f"lumina:breaker:{provider}*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
    engine = create_engine(database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM outbox WHERE subject LIKE :s"), {"s": f"lumina.{tenant}.%"})
            for table in ("usage_records", "budget_ledger", "budgets", "rate_limits"):
                await conn.execute(sa.text(f"DELETE FROM {table} WHERE tenant_id = :t"), {"t": tenant})
            await conn.execute(sa.text("DELETE FROM providers WHERE name = :p"), {"p": provider})
    finally:
        await engine.dispose()


def _details(error: grpc.aio.AioRpcError) -> list[object]:
    status = rpc_status.from_call(error)
    assert status is not None
    out: list[object] = []
    for detail in status.details:
        for kind in (error_details_pb2.QuotaFailure, error_details_pb2.RetryInfo, error_details_pb2.ErrorInfo):
            message = kind()
            if detail.Unpack(message):
                out.append(message)
    return out


async def test_a_hard_budget_on_the_key_admits_about_ten_requests_and_never_overspends(path: Path_) -> None:
    limit = 75_000  # ~10 reservations of ~7,400 micro-dollars (prompt counted by tiktoken, 16 tokens out)
    made = await path.http.post("/v1/budgets", headers=bearer("admin"), json={
        "name": "carol's key", "scope": "api_key", "scope_id": path.key_id, "limit_micros": limit, "period": "daily"})
    assert made.status_code == 201, made.text
    budget_id = made.json()["id"]

    answers = await asyncio.gather(*(path.chat() for _ in range(30)))
    ok = [r for r in answers if r.status_code == 200]
    refused = [r for r in answers if r.status_code != 200]
    # about ten: a few may settle (at their actual cost, a little under the hold) before the last reserve
    assert 9 <= len(ok) <= 11, [r.status_code for r in answers]
    assert {r.status_code for r in refused} == {429}
    for r in refused:
        problem = r.json()
        assert problem["code"] == "budget_exceeded" and problem["budget"]["name"] == "carol's key"
        assert problem["budget"]["id"] == budget_id and "carol's key" in problem["detail"]
        assert int(r.headers["retry-after"]) > 0  # the daily period's end
    estimate = ok[0].json()["lumina"]["route"]["estimate_micros"]
    assert 7_000 <= estimate <= 7_500 and ok[0].headers["x-lumina-route"] == f"{path.provider}/{path.model}"

    # what is left affords at most one more; then every request is refused, on both edges
    extra = 0
    while (await path.chat()).status_code == 200:
        extra += 1
        assert extra <= 1
    with pytest.raises(grpc.aio.AioRpcError) as exhausted:
        await path.grpc_complete()
    assert exhausted.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    quota = [d for d in _details(exhausted.value) if isinstance(d, error_details_pb2.QuotaFailure)]
    assert quota and quota[0].violations[0].subject == f"budget:{budget_id}"

    engine = create_engine(path.backend.settings.database_url or "", pool_size=1)
    try:
        async with engine.connect() as conn:
            spent, rows = (await conn.execute(sa.text(
                "SELECT coalesce(sum(cost_micros), 0), count(*) FROM usage_records WHERE tenant_id = :t"),
                {"t": path.tenant})).one()
            ledger = (await conn.execute(sa.text(
                "SELECT coalesce(sum(spent_micros), 0) FROM budget_spend WHERE budget_id = :b"), {"b": budget_id})).scalar()
    finally:
        await engine.dispose()
    assert rows == len(ok) + extra
    assert 0 < spent <= limit and spent == ledger  # every answer charged once, never past the budget


async def test_rate_limits_send_their_headers_and_refuse_with_retry_after(path: Path_) -> None:
    put = await path.http.put("/v1/rate-limits", headers=bearer("admin"), json={
        "scope": "api_key", "scope_id": path.key_id, "requests_per_minute": 3, "tokens_per_minute": 100_000})
    assert put.status_code == 200, put.text
    remaining = []
    for _ in range(3):
        r = await path.chat()
        assert r.status_code == 200, r.text
        assert r.headers["x-ratelimit-limit-requests"] == "3" and r.headers["x-ratelimit-limit-tokens"] == "100000"
        assert r.headers["x-lumina-route"] == f"{path.provider}/{path.model}"
        remaining.append(int(r.headers["x-ratelimit-remaining-requests"]))
    assert remaining == [2, 1, 0]
    over = await path.chat()
    assert over.status_code == 429 and over.json()["code"] == "rate_limit_exceeded"
    assert int(over.headers["retry-after"]) >= 1 and over.headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(grpc.aio.AioRpcError) as limited:
        await path.grpc_complete()
    assert limited.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert any(isinstance(d, error_details_pb2.RetryInfo) for d in _details(limited.value))
    # the other caller of the tenant is not limited by this key's limit
    other = await path.chat("admin")
    assert other.status_code == 200 and "x-ratelimit-limit-requests" not in other.headers


async def test_grpc_final_chunk_and_initial_metadata_carry_the_route(path: Path_) -> None:
    stub = chat_pb2_grpc.ChatServiceStub(path.channel)
    request = pb.StreamCompleteRequest(parameters=pb.ChatParameters(
        model=path.model, max_tokens=MAX_TOKENS, messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hello there")]))
    call = stub.StreamComplete(request, metadata=(("authorization", "Bearer caller"),))
    chunks = [c async for c in call]
    initial = dict(await call.initial_metadata())
    assert initial["x-lumina-route"] == f"{path.provider}/{path.model}"
    meta = chunks[-1].finish.metadata
    assert (meta.provider, meta.model, meta.requested, meta.strategy) == (path.provider, path.model, path.model, "pinned")
    assert meta.attempts == 1 and list(meta.fallbacks_tried) == [] and meta.estimate_micros > 0 and not meta.stepped_down_from
