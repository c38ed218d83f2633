"""GeminiProvider (real google-genai SDK) against the real provider simulator's Gemini wire format."""

from __future__ import annotations

import asyncio
import json
import math
import socket
import time
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from adapters.providers.gemini import GeminiProvider
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
from tools.provider_sim.testing import fetch_stats, running_simulator

pytestmark = pytest.mark.timeout(60)

KEY = "gm-test-0123456789abcdef"
MODEL = "gemini-2.5-flash"
HELLO = ChatRequest(messages=(ChatMessage(Role.SYSTEM, "be brief"), ChatMessage(Role.USER, "hello there")))
LOOKUP = Tool(
    name="lookup",
    description="Look something up.",
    parameters={"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
)


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_simulator() as base_url:
        yield base_url.removesuffix("/v1")  # Gemini's base URL is the API root


@pytest_asyncio.fixture
async def make_provider(sim: str) -> AsyncIterator:
    made: list[GeminiProvider] = []

    def make(headers: dict[str, str] | None = None, *, base_url: str | None = None, **kw: object) -> GeminiProvider:
        p = GeminiProvider("gem", api_key=KEY, base_url=base_url or sim, default_headers=headers, **kw)  # type: ignore[arg-type]
        made.append(p)
        return p

    yield make
    for p in made:
        await p.aclose()


async def collect(p: GeminiProvider, request: ChatRequest = HELLO, model: str = MODEL) -> list:
    return [c async for c in p.stream(model, request)]


def text_of(chunks: list) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


async def stats(sim: str):
    return await asyncio.to_thread(fetch_stats, sim + "/v1")


# --- text, thinking, usage ---------------------------------------------------------------------------


async def test_text_is_deterministic_and_equals_the_non_stream_answer(make_provider, sim: str) -> None:
    p = make_provider({"x-sim-chunks": "4"})
    first, again = await collect(p), await collect(p)
    other = await collect(p, ChatRequest(messages=(ChatMessage(Role.USER, "something else"),)))
    assert sum(isinstance(c, TextDelta) for c in first) == 4
    assert text_of(first) == text_of(again) and len(text_of(first).split()) == 16
    assert text_of(other) != text_of(first)
    async with genai.Client(api_key=KEY, http_options=types.HttpOptions(base_url=sim, api_version="v1beta")).aio as c:
        whole = await c.models.generate_content(
            model=MODEL, contents="hello there", config=types.GenerateContentConfig(system_instruction="be brief")
        )
    assert whole.text == text_of(first)
    assert whole.candidates[0].finish_reason == types.FinishReason.STOP


async def test_stream_ends_with_one_usage_then_one_finish(make_provider) -> None:
    chunks = await collect(make_provider())
    assert chunks[-1] == Finish(reason=FinishReason.STOP)
    assert chunks[-2] == UsageChunk(usage=Usage(input_tokens=5, output_tokens=16))
    assert sum(isinstance(c, (UsageChunk, Finish)) for c in chunks) == 2


async def test_thoughts_are_reasoning_deltas_and_counted(make_provider) -> None:
    chunks = await collect(make_provider({"x-sim-reasoning-tokens": "4", "x-sim-cached-tokens": "2"}))
    kinds = [type(c) for c in chunks if isinstance(c, (ReasoningDelta, TextDelta))]
    assert kinds[:2] == [ReasoningDelta, ReasoningDelta] and set(kinds[2:]) == {TextDelta}
    assert len("".join(c.text for c in chunks if isinstance(c, ReasoningDelta)).split()) == 4
    assert chunks[-2].usage == Usage(input_tokens=5, output_tokens=20, cached_input_tokens=2, reasoning_tokens=4)
    hidden = await collect(make_provider({"x-sim-reasoning-tokens": "4"}, include_thoughts=False))
    assert not any(isinstance(c, ReasoningDelta) for c in hidden)
    assert hidden[-2].usage.reasoning_tokens == 4
    assert text_of(hidden) == text_of(chunks)


async def test_max_tokens_is_sent_and_length_finish_mapped(make_provider) -> None:
    chunks = await collect(make_provider(), ChatRequest(messages=HELLO.messages, max_tokens=3, temperature=0.2, seed=7))
    assert chunks[-1] == Finish(reason=FinishReason.LENGTH)
    assert chunks[-2].usage.output_tokens == 3
    assert len(text_of(chunks).split()) == 3


async def test_safety_finish_is_content_filter(make_provider) -> None:
    chunks = await collect(make_provider({"x-sim-gemini-finish": "SAFETY"}))
    assert chunks[-1] == Finish(reason=FinishReason.CONTENT_FILTER)


# --- tools -------------------------------------------------------------------------------------------


async def test_tool_call_round_trip(make_provider) -> None:
    p = make_provider({"x-sim-tool-call": "lookup"})
    request = ChatRequest(messages=(ChatMessage(Role.USER, "weather in Paris?"),), tools=(LOOKUP,))
    chunks = await collect(p, request)
    [delta] = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert (delta.index, delta.id, delta.name) == (0, "call_0", "lookup")
    assert set(json.loads(delta.arguments_fragment)) == {"query"}
    assert chunks[-1] == Finish(reason=FinishReason.TOOL_CALLS)
    call = ToolCall(id=delta.id, name="lookup", arguments=delta.arguments_fragment)
    follow_up = ChatRequest(
        messages=(
            *request.messages,
            ChatMessage(Role.ASSISTANT, "", tool_calls=(call,)),
            ChatMessage(Role.TOOL, '{"weather": "sunny"}', tool_call_id=call.id),
        ),
        tools=(LOOKUP,),
    )
    answer = await collect(p, follow_up)  # the simulator answers a function response with text
    assert text_of(answer).strip() and not any(isinstance(c, ToolCallDelta) for c in answer)
    assert answer[-1] == Finish(reason=FinishReason.STOP)
    assert text_of(answer) != text_of(await collect(p, ChatRequest(messages=request.messages)))


async def test_parallel_calls_get_their_own_index_and_id(make_provider) -> None:
    second = Tool(name="convert", parameters={"type": "object"})
    request = ChatRequest(messages=(ChatMessage(Role.USER, "go"),), tools=(LOOKUP, second))
    chunks = await collect(make_provider({"x-sim-tool-call": "lookup,convert"}), request)
    calls = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert [(c.index, c.id, c.name) for c in calls] == [(0, "call_0", "lookup"), (1, "call_1", "convert")]


async def test_tool_choice_none_is_sent(make_provider) -> None:
    request = ChatRequest(
        messages=(ChatMessage(Role.USER, "go"),), tools=(LOOKUP,), tool_choice=ToolChoice(ToolChoiceMode.NONE)
    )
    chunks = await collect(make_provider({"x-sim-tool-call": "lookup"}), request)
    assert not any(isinstance(c, ToolCallDelta) for c in chunks) and text_of(chunks)
    assert chunks[-1] == Finish(reason=FinishReason.STOP)


# --- JSON output -------------------------------------------------------------------------------------


async def test_json_schema_output_parses_and_has_the_required_keys(make_provider) -> None:
    schema = {
        "type": "object",
        "properties": {
            "title": {"type": "string"},
            "count": {"type": "integer"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "level": {"enum": ["low", "high"]},
            "owner": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"]},
        },
        "required": ["title", "count", "tags", "level", "owner"],
    }
    fmt = ResponseFormat(kind=ResponseFormatKind.JSON_SCHEMA, schema=schema)
    chunks = await collect(
        make_provider({"x-sim-chunks": "5"}), ChatRequest(messages=HELLO.messages, response_format=fmt)
    )
    assert sum(isinstance(c, TextDelta) for c in chunks) == 5  # streamed in pieces, valid once joined
    value = json.loads(text_of(chunks))
    assert set(schema["required"]) <= set(value)
    assert isinstance(value["title"], str) and isinstance(value["count"], int) and value["level"] == "low"
    assert isinstance(value["tags"], list) and isinstance(value["owner"]["name"], str)


async def test_json_object_output_parses(make_provider) -> None:
    fmt = ResponseFormat(kind=ResponseFormatKind.JSON_OBJECT)
    value = json.loads(
        text_of(await collect(make_provider(), ChatRequest(messages=HELLO.messages, response_format=fmt)))
    )
    assert isinstance(value, dict) and value


# --- errors ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        ("400", UpstreamInvalidRequest),
        ("401", AuthenticationFailed),
        ("403", PermissionDenied),
        ("404", UpstreamInvalidRequest),
        ("context_length", ContextLengthExceeded),
        ("500", UpstreamUnavailable),
        ("503", Overloaded),
        ("529", Overloaded),
    ],
)
async def test_faults_map_to_domain_errors(make_provider, fault: str, error: type[ProviderError]) -> None:
    with pytest.raises(ProviderError) as info:
        await collect(make_provider({"x-sim-fault": fault}))
    assert type(info.value) is error
    assert isinstance(info.value.__cause__, genai_errors.APIError)
    assert info.value.provider == "gem"


async def test_rate_limit_carries_retry_after(make_provider) -> None:
    with pytest.raises(RateLimited) as info:
        await collect(make_provider({"x-sim-fault": "429", "x-sim-retry-after": "7"}))
    assert info.value.retry_after == 7.0 and info.value.retryable
    assert "RESOURCE_EXHAUSTED" in str(info.value)


async def test_prompt_over_the_window_is_context_length_exceeded(make_provider) -> None:
    long = ChatRequest(messages=(ChatMessage(Role.USER, "word " * 7000),))
    with pytest.raises(ContextLengthExceeded, match="input token count"):
        await collect(make_provider(), long, model="sim-small")


async def test_error_event_mid_stream_raises_after_the_first_deltas(make_provider) -> None:
    seen: list = []
    with pytest.raises(UpstreamUnavailable):
        async for chunk in make_provider({"x-sim-fault": "midstream", "x-sim-chunks": "4"}).stream(MODEL, HELLO):
            seen.append(chunk)
    assert len(seen) == 2 and all(isinstance(c, TextDelta) for c in seen)


async def test_bad_key_is_authentication_failed_without_the_key() -> None:
    secret = "gm-wrong-secret-9f8e7d6c5b4a"
    with running_simulator(api_key="the-right-key") as base_url:
        p = GeminiProvider("gem", api_key=secret, base_url=base_url.removesuffix("/v1"))
        try:
            with pytest.raises(AuthenticationFailed) as info:
                await collect(p)
        finally:
            await p.aclose()
    assert "API key not valid" in str(info.value)  # Google answers 400 API_KEY_INVALID
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
    with pytest.raises(UpstreamUnavailable):
        await collect(make_provider(base_url=f"http://127.0.0.1:{port}"))


async def test_unknown_model_is_an_invalid_upstream_request(make_provider) -> None:
    with pytest.raises(UpstreamInvalidRequest, match="not found"):
        await collect(make_provider(), model="gemini-nope")


# --- cancellation, pooling ---------------------------------------------------------------------------


async def test_closing_the_stream_early_disconnects_upstream(make_provider, sim: str) -> None:
    before = (await stats(sim)).disconnects
    stream = make_provider({"x-sim-chunks": "40", "x-sim-chunk-delay-ms": "50"}).stream(MODEL, HELLO)  # a 2 s stream
    assert isinstance(await anext(stream), TextDelta)
    started = time.perf_counter()
    await stream.aclose()
    assert time.perf_counter() - started < 0.5
    deadline = time.monotonic() + 1.5  # well before the stream would have ended by itself
    while (await stats(sim)).disconnects == before and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    snap = await stats(sim)
    assert snap.disconnects == before + 1
    assert snap.recent[-1].disconnected and snap.recent[-1].model == MODEL


async def test_one_connection_pool_per_provider(make_provider, sim: str) -> None:
    p = make_provider()
    await collect(p)  # opens the pool's connection
    before = (await stats(sim)).connections
    for _ in range(4):
        await collect(p)
    assert (await stats(sim)).connections - before == 1  # only the second stats request's own


# --- embeddings --------------------------------------------------------------------------------------


async def test_embeddings_are_deterministic_unit_vectors(make_provider) -> None:
    p = make_provider()
    request = EmbeddingRequest(inputs=("alpha", "beta", "alpha"), dimensions=8)
    first, again = await p.embed("sim-embed", request), await p.embed("sim-embed", request)
    assert first == again and len(first.vectors) == 3
    assert all(len(v) == 8 and math.isclose(math.fsum(x * x for x in v), 1.0, abs_tol=1e-5) for v in first.vectors)
    assert first.vectors[0] == first.vectors[2] != first.vectors[1]
    assert first.input_tokens > 0
    default = await p.embed("text-embedding-004", EmbeddingRequest(inputs=("alpha",)))
    assert len(default.vectors[0]) == 8


async def test_many_inputs_go_in_batches_of_one_hundred(make_provider, sim: str) -> None:
    before = (await stats(sim)).requests
    result = await make_provider().embed(
        "sim-embed", EmbeddingRequest(inputs=tuple(f"text {i}" for i in range(150)), dimensions=4)
    )
    assert len(result.vectors) == 150 and len(set(result.vectors)) == 150
    assert (await stats(sim)).requests - before == 2


async def test_embedding_faults_map_to_domain_errors(make_provider) -> None:
    with pytest.raises(RateLimited) as info:
        await make_provider({"x-sim-fault": "429"}).embed("sim-embed", EmbeddingRequest(inputs=("a",)))
    assert info.value.retry_after == 2.0


# --- models listing, base URLs ------------------------------------------------------------------------


@pytest.mark.parametrize("version", ["v1beta", "v1"])
async def test_models_are_listed_in_either_api_version(sim: str, version: str) -> None:
    options = types.HttpOptions(base_url=sim, api_version=version)
    async with genai.Client(api_key=KEY, http_options=options).aio as client:
        names = [m.name async for m in await client.models.list()]
        one = await client.models.get(model=MODEL)
    assert f"models/{MODEL}" in names and "models/sim-small" in names
    assert one.input_token_limit == 1_048_576


async def test_a_base_url_with_a_version_suffix_is_tolerated(make_provider, sim: str) -> None:
    chunks = await collect(make_provider(base_url=sim + "/v1"))
    assert chunks[-1] == Finish(reason=FinishReason.STOP) and text_of(chunks)
