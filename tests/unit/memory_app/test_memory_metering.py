"""Metering of memory's own provider calls, on in-memory fakes of the ports: one usage row per
call with its operation, user and cost at the route's price; a budget reservation of 0 settled to
the cost; embeddings charged to the scope a use case names (none outside a scope)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from application.memory.metering import (
    MeteredEmbedTexts,
    MeteredIngest,
    ProviderCall,
    RecordProviderUsage,
    complete_text,
    metered_as,
)
from domain.budgets import BudgetSubject
from domain.chat import (
    ChatMessage,
    ChatRequest,
    EmbeddingRequest,
    Embeddings,
    Role,
    TextDelta,
    Usage,
    UsageChunk,
)
from domain.cost import Price
from domain.errors import BudgetExceeded, DomainError
from domain.registry import ModelRoute
from domain.usage import UsageRecord
from tests.unit.chat_fakes import FixedClock, SequentialIds


class Settlements:
    def __init__(self) -> None:
        self.records: list[UsageRecord] = []

    async def settle(self, record: UsageRecord, *events: object) -> None:
        self.records.append(record)


class Budgets:
    def __init__(self, refuse: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.refuse = refuse

    async def reserve(self, subject: BudgetSubject, amount_micros: int, *, task: str = "") -> object:
        self.calls.append(("reserve", (subject, amount_micros, task)))
        if self.refuse:
            raise BudgetExceeded("b1", "alice's budget")
        return "reservation"

    async def settle(self, reservation: object, actual_micros: int, *, usage: Usage | None = None, request_id: str = "") -> object:
        self.calls.append(("settle", (reservation, actual_micros, usage, request_id)))
        return None


class Catalog:
    async def resolve(self, model: str, provider: str | None = None) -> ModelRoute:
        return ModelRoute(model, "sim", f"up-{model}", Price(3, 5))


REPORTED = Usage(10, 4)


class Client:
    def __init__(self, usage: Usage | None = REPORTED) -> None:
        self.usage = usage

    async def stream(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Any]:
        yield TextDelta("a summary")
        if self.usage is not None:
            yield UsageChunk(usage=self.usage, cost_micros=0)

    async def embed(self, upstream_model: str, request: EmbeddingRequest) -> Embeddings:
        return Embeddings(tuple((1.0, 0.0) for _ in request.inputs), input_tokens=7)


class Providers:
    def __init__(self, client: Client) -> None:
        self.client = client

    def get(self, provider: str) -> Client:
        return self.client


class Meter:
    def __init__(self) -> None:
        self.calls: list[ProviderCall] = []

    async def record(self, call: ProviderCall) -> None:
        self.calls.append(call)


async def test_a_call_is_one_usage_row_and_one_budget_charge() -> None:
    settlements, budgets = Settlements(), Budgets()
    meter = RecordProviderUsage(settlements, SequentialIds(), FixedClock(), budgets)
    await meter.record(ProviderCall("acme", "alice", "sim", "m", Usage(10, 4), 50, "memory.summary"))
    (row,) = settlements.records
    assert (row.tenant_id, row.user_id, row.provider, row.model, row.operation) == ("acme", "alice", "sim", "m", "memory.summary")
    assert (row.input_tokens, row.output_tokens, row.cost_micros) == (10, 4, 50) and row.request_id == "mem-id0001"
    assert budgets.calls == [
        ("reserve", (BudgetSubject("acme", user_id="alice", provider="sim", model="m"), 0, "memory.summary")),
        ("settle", ("reservation", 50, Usage(10, 4), "mem-id0001")),
    ]


async def test_an_exhausted_budget_still_gets_the_usage_row() -> None:
    settlements = Settlements()
    meter = RecordProviderUsage(settlements, SequentialIds(), FixedClock(), Budgets(refuse=True))
    await meter.record(ProviderCall("acme", "", "sim", "e", Usage(3), 6, "memory.embedding"))
    assert [r.user_id for r in settlements.records] == [None]  # no user known: none recorded


async def test_complete_text_meters_at_the_routes_price_and_estimates_missing_usage() -> None:
    meter = Meter()
    request = ChatRequest(messages=(ChatMessage(Role.USER, "one two three"),), model="m")
    text = await complete_text(Catalog(), Providers(Client()), request, meter=meter, tenant_id="acme", user_id="alice", operation="memory.summary")
    assert text == "a summary"
    (call,) = meter.calls
    assert (call.usage, call.cost_micros, call.model, call.operation) == (Usage(10, 4), 3 * 10 + 5 * 4, "m", "memory.summary")
    await complete_text(Catalog(), Providers(Client(usage=None)), request, meter=meter, tenant_id="acme", user_id="", operation="memory.extraction")
    assert meter.calls[-1].usage == Usage(input_tokens=4, output_tokens=3)  # 4 tokens per 3 words


async def test_complete_text_raises_on_an_empty_answer() -> None:
    class Empty(Client):
        async def stream(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Any]:
            yield UsageChunk(usage=Usage(5, 0), cost_micros=0)

    meter = Meter()
    request = ChatRequest(messages=(ChatMessage(Role.USER, "hi"),), model="m")
    with pytest.raises(DomainError):
        await complete_text(Catalog(), Providers(Empty()), request, meter=meter, tenant_id="acme", user_id="", operation="memory.summary")
    assert [c.usage for c in meter.calls] == [Usage(5, 0)]  # what was used is still metered


async def test_embeddings_are_charged_to_the_scope_a_use_case_names() -> None:
    meter = Meter()
    embed = MeteredEmbedTexts(Catalog(), Providers(Client()), meter)
    request = EmbeddingRequest(inputs=("a", "b"), model="e")
    await embed(request)
    assert meter.calls == []  # outside any scope (the start-up probe): not metered

    class Ingest:
        async def __call__(self, tenant: str, user: str, *rest: object) -> None:
            await embed(request)

        async def reindex(self, tenant: str, ids: object) -> None:
            await embed(request)

    ingest = MeteredIngest(Ingest())
    await ingest("acme", "alice", "c1", [])
    await ingest.reindex("acme", ["m1"])
    with metered_as("acme", "bob"):
        await ingest.reindex("acme", ["m2"])  # inside consolidation: the enclosing user
    assert [(c.tenant_id, c.user_id, c.operation, c.usage.input_tokens, c.cost_micros) for c in meter.calls] == [
        ("acme", "alice", "memory.embedding", 7, 21), ("acme", "", "memory.embedding", 7, 21), ("acme", "bob", "memory.embedding", 7, 21),
    ]
