"""AnthropicProvider (real anthropic SDK) against the real provider simulator's Messages API."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator

import anthropic
import httpx
import pytest
import pytest_asyncio

from adapters.providers.anthropic import AnthropicProvider
from domain.chat import (
    ChatMessage,
    ChatRequest,
    EmbeddingRequest,
    Finish,
    FinishReason,
    ReasoningDelta,
    ResponseFormat,
    ResponseFormatKind,
    Role,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    Usage,
    UsageChunk,
)
from domain.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    Overloaded,
    PermissionDenied,
    ProviderError,
    RateLimited,
    UpstreamInvalidRequest,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from tools.provider_sim.testing import fetch_stats, running_simulator

pytestmark = pytest.mark.timeout(60)

KEY = "sk-ant-test-0123456789abcdef"
HELLO = ChatRequest(messages=(ChatMessage(Role.SYSTEM, "be brief"), ChatMessage(Role.USER, "hello there")))
LOOKUP = Tool("lookup", "find things", {"type": "object", "properties": {"query": {"type": "string"}}})


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_simulator() as base_url:
        yield base_url


@pytest_asyncio.fixture
async def make_provider(sim: str) -> AsyncIterator:
    made: list[AnthropicProvider] = []

    def make(headers: dict[str, str] | None = None, **kw: object) -> AnthropicProvider:
        kw.setdefault("base_url", sim)
        p = AnthropicProvider("claude", api_key=KEY, default_headers=headers, **kw)  # type: ignore[arg-type]
        made.append(p)
        return p

    yield make
    for p in made:
        await p.aclose()


async def collect(p: AnthropicProvider, request: ChatRequest = HELLO, model: str = "sim-small") -> list:
    return [c async for c in p.stream(model, request)]


def text_of(chunks: list) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


async def test_text_stream_matches_the_sdk_non_stream_answer_and_ends_with_usage_then_finish(make_provider, sim) -> None:
    chunks = await collect(make_provider())
    assert sum(isinstance(c, TextDelta) for c in chunks) == 8
    async with anthropic.AsyncAnthropic(api_key=KEY, base_url=sim.removesuffix("/v1"), max_retries=0) as client:
        whole = await client.messages.create(
            model="sim-small", max_tokens=100, system="be brief", messages=[{"role": "user", "content": "hello there"}]
        )
    assert text_of(chunks) == whole.content[0].text and whole.stop_reason == "end_turn"
    assert chunks[-2:] == [UsageChunk(Usage(input_tokens=5, output_tokens=16)), Finish(FinishReason.STOP)]
    assert text_of(await collect(make_provider())) == text_of(chunks)  # deterministic


async def test_thinking_arrives_as_reasoning_before_text(make_provider) -> None:
    chunks = await collect(make_provider({"x-sim-reasoning-tokens": "6"}, thinking_budget_tokens=1024))
    kinds = [type(c).__name__ for c in chunks]
    assert kinds.index("TextDelta") > max(i for i, k in enumerate(kinds) if k == "ReasoningDelta")
    assert len("".join(c.text for c in chunks if isinstance(c, ReasoningDelta)).split()) == 6
    assert chunks[-2].usage.output_tokens == 16 + 6
    # no thinking asked for (budget not below max_tokens): none given
    plain = await collect(make_provider(thinking_budget_tokens=1024), ChatRequest(HELLO.messages, max_tokens=100))
    assert not any(isinstance(c, ReasoningDelta) for c in plain)


async def test_cached_input_tokens_come_from_cache_reads(make_provider) -> None:
    usage = (await collect(make_provider({"x-sim-cached-tokens": "2"})))[-2].usage
    assert usage == Usage(input_tokens=5, output_tokens=16, cached_input_tokens=2)


async def test_max_tokens_and_stop_sequences(make_provider) -> None:
    p = make_provider()
    capped = await collect(p, ChatRequest(HELLO.messages, max_tokens=3, temperature=0.5, top_p=0.9))
    assert capped[-1] == Finish(FinishReason.LENGTH) and len(text_of(capped).split()) == 3
    words = text_of(await collect(p)).split()
    stopped = await collect(p, ChatRequest(HELLO.messages, stop=(words[4],)))
    assert text_of(stopped).split() == words[: words.index(words[4])]
    assert stopped[-1] == Finish(FinishReason.STOP)


async def test_tool_round_trip_with_a_second_turn(make_provider) -> None:
    p = make_provider({"x-sim-tool-call": "lookup", "x-sim-chunks": "3"})
    ask = ChatRequest(messages=(ChatMessage(Role.USER, "find cedar"),), tools=(LOOKUP,))
    chunks = await collect(p, ask)
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert calls[0].index == 0 and calls[0].name == "lookup" and calls[0].id.startswith("toolu_")
    assert len(calls) == 4  # the block start, then 3 input_json_delta fragments
    args = json.loads("".join(c.arguments_fragment for c in calls))
    assert isinstance(args["query"], str) and args["query"]
    assert chunks[-1] == Finish(FinishReason.TOOL_CALLS) and not text_of(chunks)

    second = ChatRequest(
        messages=(
            *ask.messages,
            ChatMessage(Role.ASSISTANT, "", tool_calls=(ToolCall(calls[0].id, "lookup", json.dumps(args)),)),
            ChatMessage(Role.TOOL, "cedar is a tree", tool_call_id=calls[0].id),
        ),
        tools=(LOOKUP,),
    )
    answer = await collect(make_provider(), second)
    assert text_of(answer) and answer[-1] == Finish(FinishReason.STOP)
    # the tool result is part of the prompt: a different result gives a different answer
    other = ChatRequest(messages=(*second.messages[:-1], ChatMessage(Role.TOOL, "no", tool_call_id=calls[0].id)),
                        tools=(LOOKUP,))
    assert text_of(await collect(make_provider(), other)) != text_of(answer)


async def test_tool_index_counts_tool_blocks_after_thinking(make_provider) -> None:
    p = make_provider({"x-sim-tool-call": "lookup"}, thinking_budget_tokens=1024)
    chunks = await collect(p, ChatRequest((ChatMessage(Role.USER, "go"),), tools=(LOOKUP,)))
    assert any(isinstance(c, ReasoningDelta) for c in chunks)
    assert {c.index for c in chunks if isinstance(c, ToolCallDelta)} == {0}


async def test_forced_tool_choice_is_honoured(make_provider) -> None:
    other = Tool("weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    request = ChatRequest((ChatMessage(Role.USER, "go"),), tools=(LOOKUP, other), tool_choice=ToolChoice(name="weather"))
    calls = [c for c in await collect(make_provider(), request) if isinstance(c, ToolCallDelta)]
    assert calls[0].name == "weather" and "city" in json.loads("".join(c.arguments_fragment for c in calls))


async def test_json_schema_output_is_plain_json_text(make_provider) -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}, "year": {"type": "integer"},
                                               "tags": {"type": "array", "items": {"type": "string"}}},
              "required": ["title", "year", "tags"]}
    fmt = ResponseFormat(ResponseFormatKind.JSON_SCHEMA, schema=schema, name="movie")
    chunks = await collect(make_provider(), ChatRequest((ChatMessage(Role.USER, "a movie"),), response_format=fmt))
    assert not any(isinstance(c, ToolCallDelta) for c in chunks)
    value = json.loads(text_of(chunks))
    assert set(value) == {"title", "year", "tags"} and isinstance(value["year"], int)
    assert chunks[-1] == Finish(FinishReason.STOP)
    plain_json = ChatRequest((ChatMessage(Role.USER, "x"),), response_format=ResponseFormat(ResponseFormatKind.JSON_OBJECT))
    assert isinstance(json.loads(text_of(await collect(make_provider(), plain_json))), dict)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("400", UpstreamInvalidRequest),
        ("401", AuthenticationFailed),
        ("403", PermissionDenied),
        ("404", UpstreamInvalidRequest),
        ("429", RateLimited),
        ("500", UpstreamUnavailable),
        ("503", Overloaded),
        ("529", Overloaded),
        ("context_length", ContextLengthExceeded),
    ],
)
async def test_each_fault_maps_to_its_domain_error(make_provider, fault: str, error: type[ProviderError]) -> None:
    p = make_provider({"x-sim-fault": fault, "x-sim-retry-after": "1.5"})
    with pytest.raises(error) as info:
        await collect(p)
    assert type(info.value) is error and info.value.provider == "claude"
    assert KEY not in str(info.value)
    if error is RateLimited:
        assert info.value.retry_after == 1.5
    if error is ContextLengthExceeded:
        assert "prompt is too long" in str(info.value)


async def test_midstream_error_event_raises_after_some_text(make_provider) -> None:
    stream = make_provider({"x-sim-fault": "midstream"}).stream("sim-small", HELLO)
    seen = []
    with pytest.raises(UpstreamUnavailable, match="stream error"):
        async for c in stream:
            seen.append(c)
    assert any(isinstance(c, TextDelta) for c in seen) and not any(isinstance(c, Finish) for c in seen)


async def test_rejected_key_is_redacted(sim: str) -> None:
    with running_simulator(api_key="the-right-key") as strict:
        p = AnthropicProvider("claude", api_key=KEY, base_url=strict)
        try:
            with pytest.raises(AuthenticationFailed) as info:
                await collect(p)
        finally:
            await p.aclose()
    assert KEY not in str(info.value) and "[redacted]" in str(info.value)


async def test_simulator_accepts_x_api_key_and_bearer(sim: str) -> None:
    with running_simulator(api_key="the-right-key") as strict:
        root = strict.removesuffix("/v1")
        body = {"model": "sim-small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        for auth in ({"api_key": "the-right-key"}, {"auth_token": "the-right-key"}):
            async with anthropic.AsyncAnthropic(base_url=root, max_retries=0, **auth) as client:
                msg = await client.messages.create(**body)
                assert msg.usage.output_tokens == 5
                assert "sim-small" in [m.id async for m in client.models.list()]
        async with httpx.AsyncClient(base_url=root) as raw:
            r = await raw.post("/v1/messages", json=body, headers={"authorization": "Bearer wrong", "anthropic-version": "2023-06-01"})
            assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
            r = await raw.post("/v1/messages", json=body, headers={"anthropic-version": "2023-06-01"})
            assert r.status_code == 401 and r.json() == {
                "type": "error", "error": {"type": "authentication_error", "message": "x-api-key header is required"}}
            r = await raw.post("/v1/messages", json={**body, "max_tokens": None},
                               headers={"x-api-key": "the-right-key", "anthropic-version": "2023-06-01"})
            assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"


async def test_timeout_and_connection_errors(make_provider) -> None:
    slow = make_provider({"x-sim-latency-ms": "2000"}, timeout=0.2)
    with pytest.raises(UpstreamTimeout):
        await collect(slow)
    nowhere = make_provider(base_url="http://127.0.0.1:9/v1")
    with pytest.raises(UpstreamUnavailable):
        await collect(nowhere)


async def test_embed_is_not_offered(make_provider) -> None:
    with pytest.raises(UpstreamInvalidRequest, match="no embeddings"):
        await make_provider().embed("sim-small", EmbeddingRequest(inputs=("x",)))


async def test_closing_the_stream_early_disconnects_upstream(make_provider, sim: str) -> None:
    before = (await asyncio.to_thread(fetch_stats, sim)).disconnects
    stream = make_provider({"x-sim-chunk-delay-ms": "50", "x-sim-chunks": "40", "x-sim-tokens": "40"}).stream(
        "sim-small", HELLO
    )
    assert isinstance(await anext(stream), TextDelta)
    await stream.aclose()
    deadline = time.monotonic() + 5
    while (await asyncio.to_thread(fetch_stats, sim)).disconnects == before and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    stats = await asyncio.to_thread(fetch_stats, sim)
    assert stats.disconnects == before + 1 and stats.recent[-1].disconnected and stats.recent[-1].stream


async def test_several_tool_names_give_parallel_tool_use_blocks(make_provider, sim: str) -> None:
    weather = Tool("weather", parameters={"type": "object", "properties": {"city": {"type": "string"}}})
    p = make_provider({"x-sim-tool-call": "lookup,weather", "x-sim-chunks": "2"})
    chunks = await collect(p, ChatRequest((ChatMessage(Role.USER, "go"),), tools=(LOOKUP, weather)))
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    starts = [c for c in calls if c.name]
    assert [(c.index, c.name) for c in starts] == [(0, "lookup"), (1, "weather")]
    assert len({c.id for c in starts}) == 2
    args = {i: json.loads("".join(c.arguments_fragment for c in calls if c.index == i)) for i in (0, 1)}
    assert "query" in args[0] and "city" in args[1]
    assert chunks[-1] == Finish(FinishReason.TOOL_CALLS)
    # the JSON answer has the same two blocks
    async with anthropic.AsyncAnthropic(base_url=sim.removesuffix("/v1"), api_key=KEY, max_retries=0) as client:
        msg = await client.messages.create(
            model="claude-haiku-4-5", max_tokens=50, messages=[{"role": "user", "content": "go"}],
            tools=[{"name": "lookup", "input_schema": {"type": "object"}}, {"name": "weather", "input_schema": {"type": "object"}}],
            extra_headers={"x-sim-tool-call": "lookup,weather"},
        )
    assert [b.name for b in msg.content if b.type == "tool_use"] == ["lookup", "weather"]
    assert msg.stop_reason == "tool_use"


async def test_disconnect_after_n_events_cuts_the_stream(make_provider) -> None:
    # message_start, content_block_start, ping, then two text deltas: the connection drops
    p = make_provider({"x-sim-fault": "disconnect-after-5", "x-sim-chunks": "6"})
    seen: list = []
    with pytest.raises(UpstreamUnavailable) as info:
        async for chunk in p.stream("sim-small", HELLO):
            seen.append(chunk)
    assert info.value.retryable and len(seen) == 2 and all(isinstance(c, TextDelta) for c in seen)

async def test_transport_faults_of_json_answers(sim: str) -> None:
    body = {"model": "sim-small", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    async with anthropic.AsyncAnthropic(base_url=sim.removesuffix("/v1"), api_key=KEY, max_retries=0) as client:
        with pytest.raises(anthropic.APIConnectionError):  # the connection drops before any answer
            await client.messages.create(**body, extra_headers={"x-sim-fault": "disconnect-after-0"})
        async with httpx.AsyncClient(base_url=sim.removesuffix("/v1")) as raw:
            r = await raw.post("/v1/messages", json=body,
                               headers={"x-api-key": KEY, "anthropic-version": "2023-06-01", "x-sim-fault": "malformed"})
        assert r.status_code == 200
        with pytest.raises(json.JSONDecodeError):
            json.loads(r.content)


@pytest.mark.parametrize("fault", ["malformed", "malformed-after-3"])
async def test_the_simulator_breaks_the_named_event(sim: str, fault: str) -> None:
    # malformed (= after 1): content_block_start; malformed-after-3: the first text delta
    async with anthropic.AsyncAnthropic(base_url=sim.removesuffix("/v1"), api_key=KEY, max_retries=0) as client:
        events: list[str] = []
        with pytest.raises(ValueError):  # the SDK cannot decode the event
            async with client.messages.stream(model="sim-small", max_tokens=5, extra_headers={"x-sim-fault": fault},
                                              messages=[{"role": "user", "content": "hi"}]) as stream:
                async for event in stream:
                    events.append(event.type)
    assert events == (["message_start"] if fault == "malformed" else ["message_start", "content_block_start"])


@pytest.mark.parametrize("fault", ["malformed-after-3", "malformed"])
async def test_malformed_event_is_upstream_unavailable(make_provider, fault: str) -> None:
    p = make_provider({"x-sim-fault": fault})
    seen: list = []
    with pytest.raises(UpstreamUnavailable) as info:
        async for chunk in p.stream("sim-small", HELLO):
            seen.append(chunk)
    assert info.value.retryable and not any(isinstance(c, Finish) for c in seen)
    assert not any(isinstance(c, TextDelta) for c in seen)  # the broken event comes before any text
