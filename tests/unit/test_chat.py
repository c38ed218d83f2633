"""StreamChat / CompleteChat against in-memory fakes of every port."""

from __future__ import annotations

import pytest

from application.catalog import RegistryCatalog
from application.chat import CompleteChat, StreamChat
from domain.chat import (
    ChatMessage,
    ChatRequest,
    ErrorChunk,
    Finish,
    FinishReason,
    Role,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageChunk,
)
from domain.cost import Price
from domain.errors import InvalidRequest, NotFound, RateLimited, UpstreamUnavailable
from domain.events import ChatCompleted, RouteDecided
from domain.registry import ModelRoute, ProviderKind, ProviderSpec
from tests.unit.chat_fakes import FixedClock, ScriptedProvider, SequentialIds, StaticProviders
from tests.unit.fakes import FakeUnitOfWorkFactory, fake_decode
from tests.unit.auth_fakes import principal

HELLO = ChatRequest(messages=(ChatMessage(Role.USER, "hello"),), model="small")
T1 = principal("t1")
PRICE = Price(input_per_mtok=1.0, output_per_mtok=4.0, cached_input_per_mtok=0.5)


def happy_script() -> list:
    return [
        TextDelta("Hel"),
        TextDelta("lo!"),
        UsageChunk(Usage(input_tokens=1000, output_tokens=250, cached_input_tokens=200)),
        Finish(FinishReason.STOP),
    ]


async def make(script, *, model_provider: str = "p1", clock: FixedClock | None = None):
    uow = FakeUnitOfWorkFactory()
    async with uow() as u:
        await u.providers.upsert_provider(ProviderSpec("p1", ProviderKind.OPENAI_COMPATIBLE, label="simulated"))
        await u.providers.upsert_model(ModelRoute("small", model_provider, "upstream-small", PRICE, is_default=True))
        await u.commit()
    provider = ScriptedProvider("p1", script)
    clock = clock or FixedClock(step=0.05)
    stream = StreamChat(
        catalog=RegistryCatalog(uow, clock), providers=StaticProviders(provider), uow=uow, clock=clock, ids=SequentialIds()
    )
    return stream, provider, uow


async def collect(stream: StreamChat, request: ChatRequest = HELLO) -> list:
    return [c async for c in await stream(T1, request)]


async def test_streams_text_then_settles_usage_cost_and_event() -> None:
    stream, provider, uow = await make(happy_script())
    chunks = await collect(stream)

    assert [c.text for c in chunks if isinstance(c, TextDelta)] == ["Hel", "lo!"]
    assert isinstance(chunks[-2], UsageChunk) and isinstance(chunks[-1], Finish)
    # 800 uncached * 1.0 + 200 cached * 0.5 + 250 out * 4.0 = 1900 micro-dollars
    assert chunks[-2].cost_micros == 1900
    meta = chunks[-1].metadata
    assert meta is not None and (meta.provider, meta.model, meta.cost_micros) == ("p1", "small", 1900)
    assert meta.provider_label == "simulated"
    assert provider.requests[0][0] == "upstream-small"

    record = uow.db.usage[meta.request_id]
    assert (record.input_tokens, record.output_tokens, record.cost_micros, record.tenant_id) == (1000, 250, 1900, "t1")
    assert (record.user_id, record.api_key_id) == ("user-1", "key-1")  # the principal that called
    [message, routed] = uow.db.unsent()  # ChatCompleted, then RouteDecided: one settlement
    event = fake_decode(message.payload)
    assert isinstance(event, ChatCompleted)
    decided = fake_decode(routed.payload)
    assert isinstance(decided, RouteDecided) and (decided.request_id, decided.model) == (meta.request_id, "small")
    assert (event.request_id, event.cost_micros, event.finish_reason) == (meta.request_id, 1900, "stop")
    assert (event.user_id, event.api_key_id) == ("user-1", "key-1")
    assert message.subject == "lumina.t1.chat.completed"


async def test_latency_is_measured_with_the_clock_port() -> None:
    stream, _, uow = await make(happy_script(), clock=FixedClock(step=0.25))
    chunks = await collect(stream)
    assert chunks[-1].metadata.latency_ms > 0
    assert chunks[-1].metadata.latency_ms % 250 == 0


async def test_error_before_first_chunk_is_raised_and_nothing_is_recorded() -> None:
    stream, _, uow = await make([RateLimited("slow down", retry_after=2.0)])
    with pytest.raises(RateLimited) as info:
        await stream(T1, HELLO)
    assert info.value.retry_after == 2.0
    assert uow.db.usage == {} and uow.db.unsent() == []


async def test_error_mid_stream_becomes_a_final_error_chunk_without_duplicated_text() -> None:
    stream, _, uow = await make([TextDelta("partial"), UpstreamUnavailable("connection reset")])
    chunks = await collect(stream)
    assert chunks[0] == TextDelta("partial")
    assert isinstance(chunks[-1], ErrorChunk) and chunks[-1].code == "upstream_unavailable" and chunks[-1].retryable
    assert not any(isinstance(c, Finish) for c in chunks)
    assert uow.db.unsent() == []


async def test_closing_the_stream_early_closes_the_upstream() -> None:
    stream, provider, uow = await make([TextDelta(str(i)) for i in range(100)] + [Finish(FinishReason.STOP)])
    chunks = await stream(T1, HELLO)
    assert await anext(chunks) == TextDelta("0")
    await chunks.aclose()
    assert provider.closed_streams == 1
    assert provider.yielded < 100
    assert uow.db.usage == {}


async def test_unknown_model_is_not_found_and_empty_model_uses_the_default() -> None:
    stream, _, _ = await make(happy_script())
    with pytest.raises(NotFound):
        await stream(T1, ChatRequest(messages=HELLO.messages, model="nope"))
    chunks = await collect(stream, ChatRequest(messages=HELLO.messages, model=""))
    assert chunks[-1].metadata.model == "small"


async def test_models_of_disabled_providers_are_not_routable() -> None:
    stream, _, uow = await make(happy_script())
    async with uow() as u:
        await u.providers.upsert_provider(ProviderSpec("p1", ProviderKind.OPENAI_COMPATIBLE, enabled=False))
        await u.commit()
    stream._catalog.invalidate()  # the catalog caches for a few seconds
    with pytest.raises(NotFound):
        await stream(T1, HELLO)


async def test_complete_gathers_text_tool_calls_usage_and_finish() -> None:
    script = [
        TextDelta("a"),
        ToolCallDelta(index=0, id="call_1", name="lookup", arguments_fragment='{"q":'),
        ToolCallDelta(index=0, arguments_fragment='"x"}'),
        TextDelta("b"),
        UsageChunk(Usage(input_tokens=10, output_tokens=5)),
        Finish(FinishReason.TOOL_CALLS),
    ]
    stream, _, _ = await make(script)
    answer = await CompleteChat(stream)(T1, HELLO)
    assert answer.text == "ab"
    assert answer.tool_calls == (ToolCallDelta(index=0, id="call_1", name="lookup", arguments_fragment='{"q":"x"}'),)
    assert answer.usage.output_tokens == 5 and answer.finish.reason is FinishReason.TOOL_CALLS
    assert answer.cost_micros == 10 * 1 + 5 * 4


async def test_complete_turns_a_mid_stream_error_into_an_exception() -> None:
    stream, _, _ = await make([TextDelta("x"), UpstreamUnavailable("gone")])
    with pytest.raises(UpstreamUnavailable):
        await CompleteChat(stream)(T1, HELLO)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"messages": ()}, "messages"),
        ({"messages": (ChatMessage(Role.USER, ""),)}, "messages[0].content"),
        ({"messages": (ChatMessage(Role.TOOL, "42"),)}, "messages[0].tool_call_id"),
        ({"messages": HELLO.messages, "temperature": 3.0}, "temperature"),
        ({"messages": HELLO.messages, "max_tokens": 0}, "max_tokens"),
    ],
)
def test_chat_request_validates_itself(kwargs: dict, field: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        ChatRequest(**kwargs)
    assert field in [v.field for v in info.value.violations]


def test_price_rejects_negative_values_and_rounds_to_micro_dollars() -> None:
    with pytest.raises(InvalidRequest):
        Price(input_per_mtok=-1)
    assert Price(0.15, 0.60).cost_micros(Usage(input_tokens=3, output_tokens=1)) == 1  # 0.45 + 0.6 = 1.05
