"""OpenAIProvider (real openai SDK) against the real provider simulator over loopback."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import socket
import time
from collections.abc import AsyncIterator, Iterator

import msgspec
import openai
import pytest
import pytest_asyncio

from adapters.providers import OpenAIProvider, openai_compatible
from domain.chat import (
    ChatMessage,
    ChatRequest,
    EmbeddingRequest,
    Finish,
    FinishReason,
    ImagePart,
    ReasoningDelta,
    ResponseFormat,
    ResponseFormatKind,
    Role,
    TextDelta,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
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
from tools.provider_sim.testing import async_running_simulator, fetch_stats, running_simulator

pytestmark = pytest.mark.timeout(60)

KEY = "sk-test-0123456789abcdef"
HELLO = ChatRequest(messages=(ChatMessage(Role.SYSTEM, "be brief"), ChatMessage(Role.USER, "hello there")))


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_simulator() as base_url:
        yield base_url


@pytest_asyncio.fixture
async def provider(sim: str) -> AsyncIterator[OpenAIProvider]:
    p = OpenAIProvider("sim", api_key=KEY, base_url=sim, timeout=10)
    yield p
    await p.aclose()


@pytest_asyncio.fixture
async def make_provider(sim: str) -> AsyncIterator:
    made: list[OpenAIProvider] = []

    def make(headers: dict[str, str] | None = None, *, base_url: str | None = None, **kw: object) -> OpenAIProvider:
        p = OpenAIProvider("sim", api_key=KEY, base_url=base_url or sim, default_headers=headers, **kw)  # type: ignore[arg-type]
        made.append(p)
        return p

    yield make
    for p in made:
        await p.aclose()


async def collect(p: OpenAIProvider, request: ChatRequest = HELLO, model: str = "sim-small") -> list:
    return [c async for c in p.stream(model, request)]


async def non_stream_answer(sim: str, messages: list[dict]) -> openai.types.chat.ChatCompletion:
    async with openai.AsyncOpenAI(api_key=KEY, base_url=sim, max_retries=0) as client:
        return await client.chat.completions.create(model="sim-small", messages=messages)


async def test_stream_text_equals_the_non_stream_answer(provider: OpenAIProvider, sim: str) -> None:
    chunks = await collect(provider)
    texts = [c.text for c in chunks if isinstance(c, TextDelta)]
    assert len(texts) == 8  # the simulator's default chunk count
    expected = await non_stream_answer(
        sim, [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    )
    assert "".join(texts) == expected.choices[0].message.content
    assert "".join(texts) == "".join(
        c.text for c in await collect(provider) if isinstance(c, TextDelta)
    )  # deterministic


async def test_stream_ends_with_one_usage_then_one_finish(provider: OpenAIProvider) -> None:
    chunks = await collect(provider)
    assert isinstance(chunks[-1], Finish) and chunks[-1].reason is FinishReason.STOP and chunks[-1].metadata is None
    assert isinstance(chunks[-2], UsageChunk)
    assert sum(isinstance(c, (UsageChunk, Finish)) for c in chunks) == 2
    # "be brief" + "hello there": 4 words -> 5 prompt tokens; 16 completion tokens by default
    assert chunks[-2] == UsageChunk(usage=Usage(input_tokens=5, output_tokens=16), cost_micros=0)


async def test_cached_and_reasoning_tokens_are_mapped(make_provider) -> None:
    p = make_provider({"x-sim-cached-tokens": "2", "x-sim-reasoning-tokens": "5"})
    usage = next(c.usage for c in await collect(p) if isinstance(c, UsageChunk))
    assert usage == Usage(input_tokens=5, output_tokens=21, cached_input_tokens=2, reasoning_tokens=5)


async def test_max_tokens_is_sent_and_length_finish_mapped(provider: OpenAIProvider, make_provider) -> None:
    request = ChatRequest(messages=HELLO.messages, max_tokens=3, temperature=0.2)
    chunks = await collect(provider, request)
    assert chunks[-1] == Finish(reason=FinishReason.LENGTH)
    assert chunks[-2].usage.output_tokens == 3
    assert len("".join(c.text for c in chunks if isinstance(c, TextDelta)).split()) == 3
    newer = make_provider(max_tokens_param="max_completion_tokens")
    assert (await collect(newer, request))[-2].usage.output_tokens == 3


async def test_tool_call_deltas_are_mapped(make_provider) -> None:
    p = make_provider({"x-sim-tool-call": "lookup", "x-sim-chunks": "3"})
    chunks = await collect(p)
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert calls[0].name == "lookup" and calls[0].id and calls[0].index == 0
    assert all(c.id is None and c.name is None for c in calls[1:])
    assert "".join(c.arguments_fragment for c in calls).startswith('{"query":')
    assert chunks[-1] == Finish(reason=FinishReason.TOOL_CALLS)


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("401", AuthenticationFailed),
        ("403", PermissionDenied),
        ("400", UpstreamInvalidRequest),
        ("404", UpstreamInvalidRequest),
        ("context_length", ContextLengthExceeded),
        ("500", UpstreamUnavailable),
        ("503", Overloaded),
        ("529", Overloaded),
    ],
)
async def test_faults_map_to_domain_errors(make_provider, fault: str, error: type[ProviderError]) -> None:
    p = make_provider({"x-sim-fault": fault})
    with pytest.raises(error) as info:
        await collect(p)
    assert type(info.value) is error
    assert isinstance(info.value.__cause__, openai.APIError)
    assert info.value.provider == "sim"


async def test_rate_limit_carries_retry_after(make_provider) -> None:
    with pytest.raises(RateLimited) as info:
        await collect(make_provider({"x-sim-fault": "429"}))
    assert info.value.retry_after == 2.0
    assert info.value.retryable
    assert isinstance(info.value.__cause__, openai.RateLimitError)


async def test_error_event_mid_stream_raises_after_the_first_deltas(make_provider) -> None:
    p = make_provider({"x-sim-fault": "midstream", "x-sim-chunks": "4"})
    seen: list = []
    with pytest.raises(UpstreamUnavailable):
        async for chunk in p.stream("sim-small", HELLO):
            seen.append(chunk)
    assert len(seen) == 2 and all(isinstance(c, TextDelta) for c in seen)


async def test_bad_key_is_authentication_failed_without_the_key() -> None:
    secret = "sk-wrong-secret-9f8e7d6c5b4a"
    with running_simulator(api_key="the-right-key") as base_url:
        p = OpenAIProvider("sim", api_key=secret, base_url=base_url)
        try:
            with pytest.raises(AuthenticationFailed) as info:
                await collect(p)
        finally:
            await p.aclose()
    assert "401" in str(info.value)
    assert secret not in str(info.value) and secret[:16] not in info.value.message  # the simulator echoes it
    assert secret not in repr(p)


async def test_slow_upstream_is_a_timeout(make_provider) -> None:
    p = make_provider({"x-sim-latency-ms": "3000"}, timeout=0.3)
    started = time.perf_counter()
    with pytest.raises(UpstreamTimeout):
        await collect(p)
    assert time.perf_counter() - started < 2


async def test_unreachable_upstream_is_unavailable(make_provider) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again before use: nothing listens there
    p = make_provider(base_url=f"http://127.0.0.1:{port}/v1")
    with pytest.raises(UpstreamUnavailable) as info:
        await collect(p)
    assert isinstance(info.value.__cause__, openai.APIConnectionError)


async def test_unknown_model_is_an_invalid_upstream_request(provider: OpenAIProvider) -> None:
    with pytest.raises(UpstreamInvalidRequest):
        await collect(provider, model="gpt-nope")


async def test_closing_the_stream_early_disconnects_upstream(make_provider, sim: str) -> None:
    before = (await asyncio.to_thread(fetch_stats, sim)).disconnects
    p = make_provider({"x-sim-chunks": "40", "x-sim-chunk-delay-ms": "50"})  # a 2-second stream
    stream = p.stream("sim-small", HELLO)
    first = await anext(stream)
    assert isinstance(first, TextDelta)
    started = time.perf_counter()
    await stream.aclose()
    assert time.perf_counter() - started < 0.5
    deadline = time.monotonic() + 1.5  # well before the stream would have ended by itself
    while (await asyncio.to_thread(fetch_stats, sim)).disconnects == before and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    stats = await asyncio.to_thread(fetch_stats, sim)
    assert stats.disconnects == before + 1
    assert stats.recent[-1].disconnected


async def test_one_connection_pool_per_provider(provider: OpenAIProvider, sim: str) -> None:
    before = (await asyncio.to_thread(fetch_stats, sim)).connections
    for _ in range(5):
        await collect(provider)
    after = (await asyncio.to_thread(fetch_stats, sim)).connections
    # keep-alive: one connection for all five streams, plus the one of the second fetch_stats
    assert after - before == 2


async def test_aclose_closes_the_client(sim: str) -> None:
    p = OpenAIProvider("sim", api_key=KEY, base_url=sim)
    await collect(p)
    await p.aclose()
    with pytest.raises(RuntimeError, match="closed"):  # the pool is gone: using it is a bug
        await collect(p)


async def test_async_running_simulator_serves_on_the_callers_loop() -> None:
    async with async_running_simulator(tokens=3, chunks=3) as base_url:
        p = OpenAIProvider("sim", api_key=KEY, base_url=base_url)
        try:
            chunks = await collect(p)
        finally:
            await p.aclose()
    assert sum(isinstance(c, TextDelta) for c in chunks) == 3
    assert chunks[-2].usage.output_tokens == 3


# --- the whole ChatRequest: tools, JSON output, images, reasoning, embeddings, transport faults ---

WEATHER = Tool(
    "get_weather",
    "Weather for a city",
    {"type": "object", "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]},
)
CLOCK = Tool("get_time", "Time in a city", {"type": "object", "properties": {"city": {"type": "string"}}})


def calls_of(chunks: list) -> dict[int, ToolCall]:
    """Tool-call deltas assembled by index."""
    acc: dict[int, list] = {}
    for c in chunks:
        if isinstance(c, ToolCallDelta):
            slot = acc.setdefault(c.index, [None, None, ""])
            slot[0] = slot[0] or c.id
            slot[1] = slot[1] or c.name
            slot[2] += c.arguments_fragment
    return {i: ToolCall(id=v[0], name=v[1], arguments=v[2]) for i, v in acc.items()}


async def test_tool_round_trip_with_a_second_turn(make_provider) -> None:
    p = make_provider({"x-sim-tool-call": "get_weather", "x-sim-chunks": "4"})
    ask = ChatMessage(Role.USER, "weather in Paris?")
    first = await collect(p, ChatRequest(messages=(ask,), tools=(WEATHER,), tool_choice=ToolChoice()))
    assert first[-1] == Finish(reason=FinishReason.TOOL_CALLS)
    assert sum(1 for c in first if isinstance(c, ToolCallDelta) and c.name) == 1
    call = calls_of(first)[0]
    args = json.loads(call.arguments)
    assert call.name == "get_weather" and call.id
    assert isinstance(args["city"], str) and isinstance(args["days"], int)  # follows the tool's schema
    second = ChatRequest(
        messages=(
            ask,
            ChatMessage(Role.ASSISTANT, "", tool_calls=(call,)),
            ChatMessage(Role.TOOL, '{"temp_c": 21}', tool_call_id=call.id),
        ),
        tools=(WEATHER,),
    )
    answer = await collect(p, second)  # the simulator checks that the tool message answers the call
    assert answer[-1] == Finish(reason=FinishReason.STOP)
    assert "".join(c.text for c in answer if isinstance(c, TextDelta)).strip()
    assert not any(isinstance(c, ToolCallDelta) for c in answer)


async def test_a_tool_message_answering_no_call_is_rejected_upstream(provider: OpenAIProvider) -> None:
    bad = ChatRequest(messages=(ChatMessage(Role.USER, "hi"), ChatMessage(Role.TOOL, "42", tool_call_id="call_x")))
    with pytest.raises(UpstreamInvalidRequest, match="tool"):
        await collect(provider, bad)


async def test_parallel_tool_calls_stream_interleaved_by_index(make_provider) -> None:
    p = make_provider({"x-sim-tool-call": "get_weather,get_time", "x-sim-chunks": "3"})
    ask = ChatRequest(messages=(ChatMessage(Role.USER, "weather and time in Oslo"),), tools=(WEATHER, CLOCK))
    calls = calls_of(await collect(p, ask))
    assert [calls[0].name, calls[1].name] == ["get_weather", "get_time"]
    assert calls[0].id != calls[1].id
    assert all(json.loads(c.arguments) for c in calls.values())
    single = calls_of(await collect(p, msgspec.structs.replace(ask, parallel_tool_calls=False)))
    assert list(single) == [0]


@pytest.mark.parametrize(
    ("choice", "names"),
    [
        (ToolChoice(name="get_time"), ["get_time"]),
        (ToolChoice(mode=ToolChoiceMode.REQUIRED), ["get_weather"]),
        (ToolChoice(mode=ToolChoiceMode.NONE), []),
    ],
)
async def test_tool_choice_is_sent(provider: OpenAIProvider, choice: ToolChoice, names: list[str]) -> None:
    ask = ChatRequest(messages=(ChatMessage(Role.USER, "go"),), tools=(WEATHER, CLOCK), tool_choice=choice)
    chunks = await collect(provider, ask)
    assert [c.name for c in calls_of(chunks).values()] == names
    assert chunks[-1].reason is (FinishReason.TOOL_CALLS if names else FinishReason.STOP)


async def test_json_object_and_json_schema_output(provider: OpenAIProvider) -> None:
    base = ChatRequest(messages=(ChatMessage(Role.USER, "describe a city as JSON"),), seed=7, top_p=0.9, stop=("END",))
    as_object = await collect(provider, msgspec.structs.replace(base, response_format=ResponseFormat(ResponseFormatKind.JSON_OBJECT)))
    assert isinstance(json.loads("".join(c.text for c in as_object if isinstance(c, TextDelta))), dict)
    schema = {
        "type": "object",
        "properties": {
            "name": {"type": "string"},
            "population": {"type": "integer", "minimum": 1},
            "coastal": {"type": "boolean"},
            "districts": {"type": "array", "items": {"type": "string"}, "minItems": 2},
            "kind": {"enum": ["city", "town"]},
        },
        "required": ["name", "population", "coastal", "districts", "kind"],
        "additionalProperties": False,
    }
    fmt = ResponseFormat(ResponseFormatKind.JSON_SCHEMA, schema=schema, name="city", strict=True)
    chunks = await collect(provider, msgspec.structs.replace(base, response_format=fmt))
    value = json.loads("".join(c.text for c in chunks if isinstance(c, TextDelta)))
    assert set(value) == set(schema["required"])
    assert isinstance(value["name"], str) and isinstance(value["population"], int) and value["population"] >= 1
    assert isinstance(value["coastal"], bool) and len(value["districts"]) == 2 and value["kind"] in ("city", "town")


async def test_images_by_url_and_inline_are_accepted(provider: OpenAIProvider) -> None:
    pixel = base64.b64encode(b"\x89PNG\r\n\x1a\n" + bytes(16)).decode()
    message = ChatMessage(
        Role.USER,
        "what is in these images?",
        parts=(ImagePart(url="https://example.test/cat.png"), ImagePart(data=pixel, media_type="image/png")),
    )
    with_images = await collect(provider, ChatRequest(messages=(message,)))
    without = await collect(provider, ChatRequest(messages=(ChatMessage(Role.USER, "what is in these images?"),)))
    assert with_images[-1].reason is FinishReason.STOP
    text = "".join(c.text for c in with_images if isinstance(c, TextDelta))
    assert text != "".join(c.text for c in without if isinstance(c, TextDelta))  # the images reached the model
    broken = ChatMessage(Role.USER, "and this?", parts=(ImagePart(url="ftp://nowhere/x.png"),))
    with pytest.raises(UpstreamInvalidRequest, match="image_url"):  # the simulator checks image URLs
        await collect(provider, ChatRequest(messages=(broken,)))


async def test_deepseek_reasoner_streams_reasoning_before_the_answer(sim: str) -> None:
    p = openai_compatible("deepseek", "deepseek", api_key=KEY, base_url=sim)
    try:
        chunks = await collect(p, model="deepseek-reasoner")
    finally:
        await p.aclose()
    kinds = [type(c).__name__ for c in chunks if isinstance(c, (ReasoningDelta, TextDelta))]
    assert kinds[0] == "ReasoningDelta" and kinds[-1] == "TextDelta"
    assert kinds.index("TextDelta") > kinds.count("ReasoningDelta") - 1  # all reasoning comes first
    reasoning = "".join(c.text for c in chunks if isinstance(c, ReasoningDelta))
    assert len(reasoning.split()) == 8
    usage = chunks[-2].usage
    assert usage.reasoning_tokens == 8 and usage.output_tokens == 16 + 8


async def test_reasoning_header_on_any_model(make_provider) -> None:
    chunks = await collect(make_provider({"x-sim-reasoning": "3"}))
    assert len("".join(c.text for c in chunks if isinstance(c, ReasoningDelta)).split()) == 3


async def test_embeddings(provider: OpenAIProvider) -> None:
    result = await provider.embed("sim-embed", EmbeddingRequest(inputs=("alpha beta", "gamma", "alpha beta")))
    assert len(result.vectors) == 3 and all(len(v) == 64 for v in result.vectors)
    assert result.vectors[0] == result.vectors[2] != result.vectors[1]  # deterministic per text
    assert all(abs(sum(x * x for x in v) - 1) < 1e-6 for v in result.vectors)  # normalised
    assert result.input_tokens == 3 + 1 + 3  # 4/3 token per word, rounded, per input
    short = await provider.embed("text-embedding-3-small", EmbeddingRequest(inputs=("x",), dimensions=16))
    assert len(short.vectors[0]) == 16
    with pytest.raises(UpstreamInvalidRequest):
        await provider.embed("sim-small", EmbeddingRequest(inputs=("x",)))  # not an embedding model


@pytest.mark.parametrize(
    ("fault", "error"),
    [("refuse", UpstreamUnavailable), ("disconnect-after-3", UpstreamUnavailable), ("malformed", UpstreamUnavailable)],
)
async def test_transport_faults(make_provider, fault: str, error: type[ProviderError]) -> None:
    p = make_provider({"x-sim-fault": fault})
    seen: list = []
    with pytest.raises(error) as info:
        async for chunk in p.stream("sim-small", HELLO):
            seen.append(chunk)
    assert type(info.value) is error and info.value.retryable
    assert not any(isinstance(c, Finish) for c in seen)
    if fault == "disconnect-after-3":  # role chunk + 2 content chunks, then the connection drops
        assert len(seen) == 2 and all(isinstance(c, TextDelta) for c in seen)
        assert isinstance(info.value.__cause__, openai.APIConnectionError)
    if fault == "malformed":
        assert seen == []  # the first content chunk is the broken one
        assert "malformed" in info.value.message


async def test_read_stall_is_a_timeout(make_provider) -> None:
    p = make_provider({"x-sim-fault": "stall"}, timeout=0.4)
    started = time.perf_counter()
    with pytest.raises(UpstreamTimeout) as info:
        await collect(p)
    assert time.perf_counter() - started < 3
    assert isinstance(info.value.__cause__, openai.APITimeoutError)


async def test_slow_drip_still_completes(make_provider) -> None:
    p = make_provider({"x-sim-chunk-delay-ms": "30", "x-sim-chunks": "4"})
    started = time.perf_counter()
    chunks = await collect(p)
    assert time.perf_counter() - started >= 0.12
    assert chunks[-1] == Finish(reason=FinishReason.STOP)


async def test_embedding_faults_map_too(make_provider) -> None:
    request = EmbeddingRequest(inputs=("x",))
    with pytest.raises(RateLimited):
        await make_provider({"x-sim-fault": "429"}).embed("sim-embed", request)
    with pytest.raises(UpstreamUnavailable):
        await make_provider({"x-sim-fault": "refuse"}).embed("sim-embed", request)


def test_openai_compatible_kinds(sim: str) -> None:
    assert "api.deepseek.com" in repr(openai_compatible("deepseek", "d", api_key="k"))
    assert "api.x.ai/v1" in repr(openai_compatible("xai", "x", api_key="k"))
    assert "api.openai.com/v1" in repr(openai_compatible("openai", "o", api_key="k"))
    local = openai_compatible("local", "ollama", base_url="http://127.0.0.1:11434/v1")
    assert "11434" in repr(local) and local._api_key  # a placeholder key when none is set
    with pytest.raises(ValueError, match="base_url"):
        openai_compatible("local", "vllm")
    with pytest.raises(ValueError, match="API key"):
        openai_compatible("xai", "x")
    with pytest.raises(ValueError, match="kind"):
        openai_compatible("bard", "b", api_key="k")


async def test_local_server_without_key(sim: str) -> None:
    p = openai_compatible("local", "vllm", base_url=sim)
    try:
        chunks = await collect(p, model="llama3.1")
    finally:
        await p.aclose()
    assert chunks[-1] == Finish(reason=FinishReason.STOP)


# --- the raw stream path against a hand-written HTTP/1.1 server (framing the simulator never sends) ---


@contextlib.asynccontextmanager
async def raw_sse_server(parts: list[bytes], *, end_body: bool = True) -> AsyncIterator[tuple[str, list[bytes]]]:
    """Serves every POST with a chunked ``text/event-stream`` body made of ``parts`` (one HTTP
    chunk each, written separately); ``end_body=False`` keeps the body open after the last part.
    Yields (base URL, the request bodies received)."""
    bodies: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))
            bodies.append(await reader.readexactly(length))
            writer.write(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
            )
            for part in parts:
                writer.write(b"%x\r\n%s\r\n" % (len(part), part))
                await writer.drain()
                await asyncio.sleep(0.005)
            if end_body:
                writer.write(b"0\r\n\r\n")
                await writer.drain()
                await reader.read()  # until the client closes the connection
            else:
                await asyncio.sleep(30)
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/v1", bodies
    finally:
        server.close()


def sse(*chunks: dict) -> list[bytes]:
    return [b"data: " + json.dumps(c).encode() + b"\n\n" for c in chunks]


async def test_raw_stream_framing_split_anywhere(make_provider) -> None:
    # CRLF line ends cut between CR and LF, a data line cut mid-JSON, multi-line data, comments
    stream = (
        b": ping\r\nevent: message\r\n"
        b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":"Hel"}}]}\r\n\r\n'
        b'data: {"choices":[{"index":0,"delta":{"content":"lo"}},{"index":1,"delta":{"content":"other"}}]}\r\n\r\n'
        b'data: {"choices":\r\ndata: [{"index":0,"delta":{},"finish_reason":"length"}]}\r\n\r\n'
        b'data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2,'
        b'"prompt_tokens_details":{"cached_tokens":1},"completion_tokens_details":{"reasoning_tokens":0}}}\r\n\r\n'
        b"data: [DONE]\r\n\r\n"
    )
    cuts = [1, 20, 91, 92, 150, 151, 200, 260, len(stream) - 3]
    parts = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    async with raw_sse_server(parts) as (base_url, bodies):
        p = make_provider(base_url=base_url)
        chunks = await collect(p, ChatRequest(messages=HELLO.messages, max_tokens=2))
    assert [c.text for c in chunks if isinstance(c, TextDelta)] == ["Hel", "lo"]  # choice 1 is not ours
    assert chunks[-2:] == [UsageChunk(usage=Usage(3, 2, cached_input_tokens=1)), Finish(reason=FinishReason.LENGTH)]
    sent = json.loads(bodies[0])  # the plain dict body, as the SDK's create() would send it
    assert sent == {
        "model": "sim-small",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": 2,
    }


async def test_a_body_left_open_after_done_still_finishes(make_provider) -> None:
    parts = sse(
        {"choices": [{"index": 0, "delta": {"content": "hi"}, "finish_reason": "stop"}]},
        {"choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 1}},
    ) + [b"data: [DONE]\n\n"]
    async with raw_sse_server(parts, end_body=False) as (base_url, _):
        p = make_provider(base_url=base_url)
        started = time.perf_counter()
        chunks = await collect(p)
    assert time.perf_counter() - started < 3  # the drain after [DONE] gives up after a second
    assert chunks == [TextDelta(text="hi"), UsageChunk(usage=Usage(1, 1)), Finish(reason=FinishReason.STOP)]


async def test_error_event_is_the_sdks_api_error(make_provider) -> None:
    parts = sse(
        {"choices": [{"index": 0, "delta": {"content": "a"}}]},
        {"error": {"message": "prompt too long", "type": "invalid_request_error", "code": "context_length_exceeded"}},
    )
    async with raw_sse_server(parts) as (base_url, _):
        p = make_provider(base_url=base_url)
        seen: list = []
        with pytest.raises(ContextLengthExceeded) as info:
            async for chunk in p.stream("sim-small", HELLO):
                seen.append(chunk)
    assert seen == [TextDelta(text="a")]
    assert type(info.value.__cause__) is openai.APIError and "prompt too long" in info.value.message
    # an error event whose other members do not fit a chunk is still an error event, not "malformed"
    async with raw_sse_server(sse({"error": {"message": "overloaded", "type": "server_error"}, "choices": 7})) as (
        base_url,
        _,
    ):
        with pytest.raises(UpstreamUnavailable, match="stream error: overloaded"):
            await collect(make_provider(base_url=base_url))


async def test_a_stream_without_finish_reason_is_unavailable(make_provider) -> None:
    parts = sse({"choices": [{"index": 0, "delta": {"content": "a"}}]}) + [b"data: [DONE]\n\n"]
    async with raw_sse_server(parts) as (base_url, _):
        with pytest.raises(UpstreamUnavailable, match="without a finish reason"):
            await collect(make_provider(base_url=base_url))


async def test_no_pydantic_chunk_models_on_the_hot_path(provider: OpenAIProvider, sim: str, monkeypatch) -> None:
    # the SDK stays the transport; its per-chunk model construction is what the raw path saves
    import openai._base_client as sdk_client

    built: list[object] = []
    original = sdk_client.construct_type

    def counting(*, value: object, type_: object) -> object:
        built.append(type_)
        return original(value=value, type_=type_)

    monkeypatch.setattr(sdk_client, "construct_type", counting)
    chunks = await collect(provider)
    assert chunks[-1] == Finish(reason=FinishReason.STOP) and len(chunks) == 10
    assert built == []
    async with (
        openai.AsyncOpenAI(api_key=KEY, base_url=sim, max_retries=0) as client,  # the SDK's own path
        await client.chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "hi"}], stream=True
        ) as stream,
    ):
        async for _ in stream:
            pass
    assert len(built) >= 8  # one model per chunk: the spy sees them


async def test_one_pool_over_aiohttp_reuses_connections_and_drops_early_closed_ones(make_provider, sim: str) -> None:
    from adapters.providers.transport import AiohttpTransport

    p = make_provider({"x-sim-chunks": "4", "x-sim-chunk-delay-ms": "20"})
    assert isinstance(p._client._client._transport, AiohttpTransport)  # the SDK's client, aiohttp under it
    n = 24
    before = (await asyncio.to_thread(fetch_stats, sim)).connections
    results = await asyncio.gather(*(collect(p) for _ in range(n)))
    assert all(r[-1] == Finish(reason=FinishReason.STOP) for r in results)
    opened = (await asyncio.to_thread(fetch_stats, sim)).connections - before
    assert n <= opened <= n + 1  # one connection per stream in flight (+ the stats fetch)
    # the same load again: all kept alive and reused, none opened
    before = (await asyncio.to_thread(fetch_stats, sim)).connections
    results = await asyncio.gather(*(collect(p) for _ in range(n)))
    assert all(r[-1] == Finish(reason=FinishReason.STOP) for r in results)
    assert (await asyncio.to_thread(fetch_stats, sim)).connections - before <= 1
    # closing a stream early drops its connection (the upstream sees the client leave); the
    # next request opens a new one while the kept-alive ones stay reusable
    stream = p.stream("sim-small", HELLO)
    await anext(stream)
    await stream.aclose()
    faulty = make_provider({"x-sim-fault": "disconnect-after-3"})
    with pytest.raises(UpstreamUnavailable):
        await collect(faulty)
    before = (await asyncio.to_thread(fetch_stats, sim)).connections
    for _ in range(3):
        assert (await collect(p))[-1] == Finish(reason=FinishReason.STOP)
    assert (await asyncio.to_thread(fetch_stats, sim)).connections - before <= 1  # + the stats fetch
