"""OpenAIProvider (real openai SDK) against the real provider simulator over loopback."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import AsyncIterator, Iterator

import openai
import pytest
import pytest_asyncio

from adapters.providers import OpenAIProvider
from domain.chat import (
    ChatMessage,
    ChatRequest,
    Finish,
    FinishReason,
    Role,
    TextDelta,
    ToolCallDelta,
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
