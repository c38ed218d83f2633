"""The chat path's edges of resilience against real components: backends built by the composition
root on the session's Postgres and Redis, the real OpenAI adapter and provider simulators.

- A stream that breaks off after content (the simulator's ``disconnect-after-N``), or whose client
  goes away mid-answer, still writes its usage row (``finish_reason`` ``interrupted`` /
  ``cancelled``, tokens counted from what was streamed), its ``ChatCompleted`` and ``RouteDecided``
  events, and settles its budget reservation to the same cost.
- A per-model rate limit counts the model the request was routed to; an exhausted one skips that
  candidate (said in the decision) when another can serve, else a 429 naming the limit.
- A hedged request that wins holds and settles the budget at its own model's price; the loser's
  hold is released.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis

from adapters.postgres import create_engine
from adapters.postgres.mappers import start_mappers
from adapters.providers import OpenAIProvider
from api.auth import StaticAuthenticator
from api.bootstrap import Backend, build_backend
from api.settings import load_settings
from application.budgets.manage import BudgetDraft, RateLimitDraft
from domain.budgets import (
    Budget,
    BudgetScope,
    Enforcement,
    Period,
    RateLimit,
    RateLimitScope,
)
from domain.chat import ChatMessage, ChatRequest, ErrorChunk, Finish, Role, TextDelta
from domain.cost import Price
from domain.identity import Principal, PrincipalKind
from domain.identity import Role as UserRole
from domain.registry import ModelCapabilities, ModelRoute, ProviderKind, ProviderSpec
from tools.provider_sim.testing import running_simulator

pytestmark = pytest.mark.timeout(120)

HELLO = (ChatMessage(Role.USER, "tell me about circuit breakers"),)
CAPS = ModelCapabilities(max_output_tokens=64)


@pytest.fixture(scope="module")
def sims() -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        yield {
            "good": stack.enter_context(running_simulator(tokens=16)),
            "drop": stack.enter_context(running_simulator(fault="disconnect-after-4", chunks=8, tokens=16)),
            "slow": stack.enter_context(running_simulator(chunks=16, tokens=32, chunk_delay_ms=150)),
            "late": stack.enter_context(running_simulator(latency_ms=1500, tokens=16)),
        }


@dataclass
class Stack:
    backend: Backend
    tenant: str
    tag: str
    caller: Principal
    database_url: str

    def model(self, name: str) -> str:
        return f"{name}-{self.tag}"

    def request(self, name: str, **kw: Any) -> ChatRequest:
        kw.setdefault("max_tokens", 16)
        return ChatRequest(model=self.model(name), messages=HELLO, **kw)

    async def rows(self, sql: str, **params: Any) -> list[Any]:
        engine = create_engine(self.database_url, pool_size=1)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(sa.text(sql), {"t": self.tenant, **params})).all())
        finally:
            await engine.dispose()

    async def eventually(self, sql: str, want: Callable[[list[Any]], bool], **params: Any) -> list[Any]:
        for _ in range(50):
            rows = await self.rows(sql, **params)
            if want(rows):
                return rows
            await asyncio.sleep(0.1)
        return rows


Factory = Callable[..., Awaitable[Stack]]


@pytest.fixture
async def make(database_url: str, redis_url: str, sims: dict[str, str]) -> AsyncIterator[Factory]:
    built: list[Stack] = []

    async def factory(models: dict[str, tuple[str, Price]], routing: dict[str, Any] | None = None) -> Stack:
        tag = uuid.uuid4().hex[:8]
        tenant = f"rs-{tag}"
        start_mappers()
        providers = {sim: OpenAIProvider(f"{sim}-{tag}", api_key="k", base_url=sims[sim], timeout=20) for sim in sims}
        seed = (
            [ProviderSpec(p.name, ProviderKind.OPENAI_COMPATIBLE, label="simulated") for p in providers.values()],
            [ModelRoute(f"{name}-{tag}", f"{sim}-{tag}", "sim-small", price, capabilities=CAPS)
             for name, (sim, price) in models.items()],
        )
        routing = dict(routing or {})
        for key in ("fallbacks",):
            if key in routing:
                routing[key] = {f"{k}-{tag}": [f"{m}-{tag}" for m in v] for k, v in routing[key].items()}
        settings = load_settings(
            {}, database_url=database_url, redis_url=redis_url, tenant_id=f"rs-platform-{tag}", memory_enabled=False,
            routing=routing,
        )
        caller = Principal(tenant, "carol", UserRole.MEMBER, PrincipalKind.API_KEY, f"key-{tag}")
        backend = build_backend(
            settings, providers=list(providers.values()), seed=seed, authenticator=StaticAuthenticator({"c": caller}),
        )
        await backend.start(grpc_port=0, http_port=0)
        stack = Stack(backend, tenant, tag, caller, database_url)
        built.append(stack)
        return stack

    try:
        yield factory
    finally:
        for stack in built:
            await stack.backend.stop()
            await _cleanup(stack)


async def _cleanup(stack: Stack) -> None:
    redis = Redis.from_url(stack.backend.settings.redis_url or "")
    try:
        keys = [k async for k in redis.scan_iter(match=f"lumina:*{{{stack.tenant}}}*", count=1000)]
        keys += [k async for k in redis.scan_iter(match=f"lumina:breaker:*-{stack.tag}*", count=1000)]
        if keys:
            await redis.delete(*keys)
    finally:
        await redis.aclose()
    engine = create_engine(stack.database_url, pool_size=1)
    try:
        async with engine.begin() as conn:
            await conn.execute(sa.text("DELETE FROM outbox WHERE subject LIKE :s"), {"s": f"lumina.{stack.tenant}.%"})
            for table in ("usage_records", "budget_ledger", "budgets", "rate_limits"):
                await conn.execute(sa.text(f"DELETE FROM {table} WHERE tenant_id = :t"), {"t": stack.tenant})
            await conn.execute(sa.text("DELETE FROM providers WHERE name LIKE :p"), {"p": f"%-{stack.tag}"})
    finally:
        await engine.dispose()


async def _budget(stack: Stack, limit: int = 10_000_000, **caps: str) -> str:
    module = stack.backend.budgets
    assert module is not None
    admin = Principal(stack.tenant, "boss", UserRole.ADMIN, PrincipalKind.API_KEY, f"admin-{stack.tag}")
    made: Budget = await module.budgets.create(admin, BudgetDraft(
        name="tenant " + "".join(caps.values()), scope=BudgetScope.TENANT, scope_id=stack.tenant, limit_micros=limit,
        period=Period.daily(),
        enforcement=Enforcement.HARD, **caps,
    ))
    return made.id


# --- a stream cut off --------------------------------------------------------------------------


async def test_a_stream_dropped_after_content_writes_its_usage_row_events_and_ledger_entry(make: Factory) -> None:
    stack = await make({"mdrop": ("drop", Price(100, 400))})
    budget_id = await _budget(stack)
    chunks = await stack.backend.stream_chat(stack.caller, stack.request("mdrop"))
    got = [c async for c in chunks]
    text = "".join(c.text for c in got if isinstance(c, TextDelta))
    assert text and isinstance(got[-1], ErrorChunk) and not any(isinstance(c, Finish) for c in got)
    await stack.backend.stream_chat.drain()
    rows = await stack.eventually(
        "SELECT request_id, finish_reason, input_tokens, output_tokens, cost_micros, model FROM usage_records"
        " WHERE tenant_id = :t", lambda r: len(r) == 1)
    assert len(rows) == 1
    request_id, reason, tokens_in, tokens_out, cost, model = rows[0]
    assert (request_id, reason, model) == (chunks.request_id, "interrupted", stack.model("mdrop"))
    counter = stack.backend.stream_chat.routing.counter
    assert tokens_in > 0 and tokens_out == counter.count_text(text, "sim-small") and cost == Price(100, 400).cost_micros(
        _usage(tokens_in, tokens_out))
    events = await stack.rows("SELECT subject, payload FROM outbox WHERE subject LIKE :s ORDER BY subject",
                              s=f"lumina.{stack.tenant}.%")
    subjects = [s for s, _ in events]
    assert f"lumina.{stack.tenant}.chat.completed" in subjects and f"lumina.{stack.tenant}.route.decided" in subjects
    ledger = await stack.eventually(
        "SELECT actual_micros, request_id FROM budget_ledger WHERE tenant_id = :t", lambda r: len(r) == 1)
    assert ledger == [(cost, chunks.request_id)]
    spent = await stack.rows("SELECT spent_micros FROM budget_spend WHERE budget_id = :b", b=budget_id)
    assert spent == [(cost,)]


async def test_a_client_that_goes_away_mid_answer_leaves_a_cancelled_usage_row(make: Factory) -> None:
    stack = await make({"mslow": ("slow", Price(100, 400))})
    await _budget(stack)
    chunks = await stack.backend.stream_chat(stack.caller, stack.request("mslow", max_tokens=32))
    seen: list[str] = []
    async for chunk in chunks:
        if isinstance(chunk, TextDelta):
            seen.append(chunk.text)
            if len(seen) == 3:
                break
    await chunks.aclose()  # the client went away
    await stack.backend.stream_chat.drain()
    rows = await stack.eventually(
        "SELECT finish_reason, output_tokens, cost_micros FROM usage_records WHERE tenant_id = :t", lambda r: len(r) == 1)
    assert len(rows) == 1 and rows[0][0] == "cancelled"
    counter = stack.backend.stream_chat.routing.counter
    # what was produced by the time the upstream was closed: at least what the client saw
    assert rows[0][1] >= sum(counter.count_text(t, "sim-small") for t in seen) > 0
    ledger = await stack.eventually("SELECT actual_micros FROM budget_ledger WHERE tenant_id = :t", lambda r: len(r) == 1)
    assert ledger == [(rows[0][2],)]


def _usage(tokens_in: int, tokens_out: int) -> Any:
    from domain.chat import Usage

    return Usage(input_tokens=tokens_in, output_tokens=tokens_out)



# --- the routed model's rate limit --------------------------------------------------------------


async def test_a_model_rate_limit_applies_to_the_model_routed_to_and_skips_it_when_spent(make: Factory) -> None:
    stack = await make({"mfirst": ("good", Price(1, 2)), "msecond": ("good", Price(1, 2))},
                       {"fallbacks": {"mfirst": ["msecond"]}})
    module = stack.backend.budgets
    assert module is not None
    admin = Principal(stack.tenant, "boss", UserRole.ADMIN, PrincipalKind.API_KEY, f"admin-{stack.tag}")
    first: RateLimit = await module.rate_limits.put(
        admin, RateLimitDraft(scope=RateLimitScope.MODEL, scope_id=stack.model("mfirst"), requests_per_minute=1))
    await module.rate_limits.put(
        admin, RateLimitDraft(scope=RateLimitScope.MODEL, scope_id=stack.model("msecond"), requests_per_minute=1))
    complete = stack.backend.complete_chat
    one = await complete(stack.caller, stack.request("mfirst"))
    assert one.finish.metadata is not None and one.finish.metadata.model == stack.model("mfirst")
    assert one.rate_limit is not None and one.rate_limit.requests is not None and one.rate_limit.requests.remaining == 0
    two = await complete(stack.caller, stack.request("mfirst"))  # mfirst's minute is spent: msecond serves
    meta = two.finish.metadata
    assert meta is not None and meta.model == stack.model("msecond") and meta.estimate_micros > 0
    reason = meta.notes[f"skipped:{stack.model('mfirst')}"]
    assert reason.startswith("rate limited: rate limit of model") and stack.model("mfirst") in reason
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.backend.http_port}", timeout=30) as http:
        body = {"model": stack.model("mfirst"), "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
        refused = await http.post("/v1/chat/completions", json=body, headers={"authorization": "Bearer c"})
    assert refused.status_code == 429, refused.text
    problem = refused.json()
    assert problem["code"] == "rate_limit_exceeded" and "rate limit of model" in problem["detail"]
    assert int(refused.headers["retry-after"]) >= 1
    decided = await stack.rows(
        "SELECT count(*) FROM outbox WHERE subject = :s", s=f"lumina.{stack.tenant}.route.decided")
    assert decided == [(2,)]
    assert first.id


# --- hedging and budget holds -----------------------------------------------------------------


async def test_a_hedged_request_that_wins_is_reserved_and_settled_at_its_own_price(make: Factory) -> None:
    stack = await make(
        {"mlate": ("late", Price(100, 400)), "mquick": ("good", Price(1, 2))},
        {"fallbacks": {"mlate": ["mquick"]},
         "hedging": {"enabled": True, "min_delay_s": 0.1, "default_delay_s": 0.1, "max_delay_s": 0.2}},
    )
    tenant_budget = await _budget(stack)
    late_budget = await _budget(stack, model=stack.model("mlate"))
    quick_budget = await _budget(stack, model=stack.model("mquick"))
    answer = await stack.backend.complete_chat(stack.caller, stack.request("mlate"))
    meta = answer.finish.metadata
    assert meta is not None and meta.hedged and meta.model == stack.model("mquick")
    assert answer.cost_micros == Price(1, 2).cost_micros(answer.usage) == meta.cost_micros
    await stack.backend.stream_chat.drain()
    ledger = await stack.eventually(
        "SELECT model, actual_micros, reserved_micros, budget_ids FROM budget_ledger WHERE tenant_id = :t",
        lambda r: len(r) >= 1)
    assert len(ledger) == 1
    model, actual, reserved, budget_ids = ledger[0]
    assert model == stack.model("mquick") and actual == answer.cost_micros
    assert reserved == meta.estimate_micros and reserved < 5_000  # mquick's estimate, not mlate's
    assert sorted(budget_ids) == sorted([tenant_budget, quick_budget])
    module = stack.backend.budgets
    assert module is not None
    from domain.budgets import BudgetSubject

    for model_name, spent in (("mlate", 0), ("mquick", answer.cost_micros)):
        subject = BudgetSubject(stack.tenant, user_id="carol", api_key_id=f"key-{stack.tag}", model=stack.model(model_name))
        statuses = {s.budget.id: s for s in await module.guard.statuses(subject)}
        capped = statuses[late_budget if model_name == "mlate" else quick_budget]
        assert (capped.spent_micros, capped.held_micros) == (spent, 0)  # the loser's hold was released
        assert statuses[tenant_budget].held_micros == 0
