"""The one contract every provider adapter meets, run against each kind through the vendor's own
SDK and the simulator speaking that vendor's wire format: deterministic text, a tool-call round
trip, JSON output, usage, the error classes, and cancellation.

The text, tool-call, JSON and error tests run in two modes (the ``mode`` fixture): ``stream``
(``provider.stream``) and ``whole`` (``provider.complete``, one non-streaming upstream call). A
whole answer must have the whole-answer shape (one delta per text, reasoning and tool call) and
the same text, tool calls and usage as the stream of the same request (the simulator is
deterministic)."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator, Mapping

import pytest

from domain.chat import (
    ChatMessage,
    ChatRequest,
    Chunk,
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
    UsageChunk,
)
from domain.errors import (
    AuthenticationFailed,
    Overloaded,
    ProviderError,
    RateLimited,
    UpstreamInvalidRequest,
    UpstreamUnavailable,
)
from domain.ports import ProviderClient
from tests.contract.adapters import KINDS, MODELS, make_provider
from tools.provider_sim.stats import RequestRecord
from tools.provider_sim.testing import fetch_stats, running_simulator

pytestmark = pytest.mark.timeout(60)

LOOKUP = Tool(
    name="lookup",
    description="Look something up.",
    parameters={"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]},
)
ANSWER_SCHEMA: dict[str, object] = {
    "type": "object",
    "properties": {"answer": {"type": "string"}},
    "required": ["answer"],
}


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_simulator() as base_url:
        yield base_url


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(params=["stream", "whole"])
def mode(request: pytest.FixtureRequest) -> str:
    """``stream``: ``provider.stream``; ``whole``: ``provider.complete`` (one non-streaming call)."""
    return str(request.param)


def ask(text: str = "Name three colours.", **kwargs: object) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage(Role.USER, text),), **kwargs)  # type: ignore[arg-type]


def answer_of(provider: ProviderClient, kind: str, request: ChatRequest, mode: str) -> AsyncIterator[Chunk]:
    if mode == "stream":
        return provider.stream(MODELS[kind], request)
    complete = getattr(provider, "complete", None)
    assert complete is not None, f"{kind}: the adapter has no complete()"
    return complete(MODELS[kind], request)  # type: ignore[no-any-return]


async def collect(
    kind: str, sim: str, request: ChatRequest, headers: Mapping[str, str] | None = None, mode: str = "stream"
) -> list[Chunk]:
    """The chunks of ``request``'s answer. In ``whole`` mode the answer must have the whole-answer
    shape and match the stream of the same request (text, tool calls, usage, finish reason)."""
    provider = make_provider(kind, sim, dict(headers or {}))
    before = await asyncio.to_thread(fetch_stats, sim) if mode == "whole" else None
    try:
        chunks = [c async for c in answer_of(provider, kind, request, mode)]
    finally:
        await provider.aclose()
    if before is not None:
        after = await asyncio.to_thread(fetch_stats, sim)
        assert (after.requests - before.requests, after.streams - before.streams) == (1, 0), "one non-streaming call"
        assert_whole_shape(chunks)
        streamed = await collect(kind, sim, request, headers)
        assert text_of(chunks) == text_of(streamed)
        assert [(c.name, json.loads(c.arguments)) for c in calls_of(chunks)] == [
            (c.name, json.loads(c.arguments)) for c in calls_of(streamed)
        ]
        assert usage_of(chunks) == usage_of(streamed)
        assert chunks[-1] == streamed[-1]
    return chunks


def assert_whole_shape(chunks: list[Chunk]) -> None:
    """At most one reasoning and one text delta, and one complete delta per tool call, in order."""
    assert sum(isinstance(c, ReasoningDelta) for c in chunks) <= 1
    assert sum(isinstance(c, TextDelta) for c in chunks) <= 1
    deltas = [c for c in chunks if isinstance(c, ToolCallDelta)]
    assert [c.index for c in deltas] == list(range(len(deltas)))
    assert all(c.id and c.name and c.arguments_fragment for c in deltas), deltas


def usage_of(chunks: list[Chunk]) -> list[object]:
    return [c.usage for c in chunks if isinstance(c, UsageChunk)]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.text for c in chunks if isinstance(c, TextDelta))


def calls_of(chunks: list[Chunk]) -> list[ToolCall]:
    merged: dict[int, list[str]] = {}
    ids: dict[int, str] = {}
    names: dict[int, str] = {}
    for c in chunks:
        if isinstance(c, ToolCallDelta):
            merged.setdefault(c.index, []).append(c.arguments_fragment)
            if c.id:
                ids[c.index] = c.id
            if c.name:
                names[c.index] = c.name
    return [ToolCall(id=ids.get(i, ""), name=names.get(i, ""), arguments="".join(merged[i])) for i in sorted(merged)]


def assert_well_ended(chunks: list[Chunk], reason: FinishReason) -> None:
    assert isinstance(chunks[-1], Finish), chunks[-1]
    assert chunks[-1].reason is reason
    usage = [c for c in chunks if isinstance(c, UsageChunk)]
    assert len(usage) == 1 and chunks[-2] is usage[0], "exactly one UsageChunk, right before Finish"
    assert usage[0].usage.input_tokens > 0 and usage[0].usage.output_tokens > 0


async def test_text_is_deterministic_non_empty_with_usage(kind: str, sim: str, mode: str) -> None:
    first = await collect(kind, sim, ask(), mode=mode)
    again = await collect(kind, sim, ask(), mode=mode)
    other = await collect(kind, sim, ask("Something else entirely."), mode=mode)
    assert text_of(first).strip()
    assert text_of(first) == text_of(again)
    assert text_of(other) != text_of(first)
    assert_well_ended(first, FinishReason.STOP)


async def test_tool_call_round_trip(kind: str, sim: str, mode: str) -> None:
    request = ask("Look up the weather in Paris.", tools=(LOOKUP,), tool_choice=ToolChoice(name="lookup"))
    chunks = await collect(kind, sim, request, {"x-sim-tool-call": "lookup"}, mode=mode)
    [call] = calls_of(chunks)
    assert call.name == "lookup" and call.id
    assert isinstance(json.loads(call.arguments), dict)
    assert_well_ended(chunks, FinishReason.TOOL_CALLS)

    follow_up = ChatRequest(
        messages=(
            *request.messages,
            ChatMessage(Role.ASSISTANT, "", tool_calls=(call,)),
            ChatMessage(Role.TOOL, '{"weather": "sunny"}', tool_call_id=call.id, name="lookup"),
        ),
        tools=(LOOKUP,),
    )
    answer = await collect(kind, sim, follow_up, mode=mode)
    assert text_of(answer).strip()
    assert not calls_of(answer)
    assert_well_ended(answer, FinishReason.STOP)


@pytest.mark.parametrize("fmt", [
    ResponseFormat(kind=ResponseFormatKind.JSON_OBJECT),
    ResponseFormat(kind=ResponseFormatKind.JSON_SCHEMA, schema=ANSWER_SCHEMA, name="answer", strict=True),
], ids=["json_object", "json_schema"])
async def test_json_output_parses(kind: str, sim: str, fmt: ResponseFormat, mode: str) -> None:
    chunks = await collect(kind, sim, ask("Answer in JSON.", response_format=fmt), mode=mode)
    parsed = json.loads(text_of(chunks))
    assert isinstance(parsed, dict) and parsed
    if fmt.kind is ResponseFormatKind.JSON_SCHEMA:
        assert isinstance(parsed.get("answer"), str)
    assert_well_ended(chunks, FinishReason.STOP)


@pytest.mark.parametrize(("fault", "error"), [
    ("429", RateLimited),
    ("401", AuthenticationFailed),
    ("400", UpstreamInvalidRequest),
    ("500", UpstreamUnavailable),
    ("503", (Overloaded, UpstreamUnavailable)),
])
async def test_error_classes(
    kind: str, sim: str, mode: str, fault: str, error: type[ProviderError] | tuple[type[ProviderError], ...]
) -> None:
    provider = make_provider(kind, sim, {"x-sim-fault": fault, "x-sim-retry-after": "3"})
    try:
        with pytest.raises(ProviderError) as info:
            await anext(answer_of(provider, kind, ask(), mode))
    finally:
        await provider.aclose()
    assert isinstance(info.value, error), f"{fault} became {type(info.value).__name__}"
    assert info.value.provider == kind
    assert "sim-key" not in str(info.value)
    if fault == "429":
        assert isinstance(info.value, RateLimited) and info.value.retry_after == 3.0
    assert info.value.retryable is (fault != "401" and fault != "400")


async def test_closing_the_stream_early_closes_the_upstream_request(kind: str, sim: str) -> None:
    provider = make_provider(kind, sim, {"x-sim-tokens": "400", "x-sim-chunks": "40", "x-sim-chunk-delay-ms": "20"})
    started = time.time()
    try:
        stream = provider.stream(MODELS[kind], ask(f"cancel me ({kind})"))
        assert isinstance(stream, AsyncIterator)
        got = 0
        async for chunk in stream:
            if isinstance(chunk, TextDelta) and chunk.text:
                got += 1
                if got == 2:
                    break
        closed_at = time.time()
        await stream.aclose()  # type: ignore[attr-defined]
    finally:
        await provider.aclose()
    record = await _disconnect_since(sim, started)
    assert record.ended_at - closed_at < 0.5, "the simulator noticed the close late"


async def _disconnect_since(sim: str, since: float, timeout: float = 5.0) -> RequestRecord:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        snap = await asyncio.to_thread(fetch_stats, sim)
        gone = [r for r in snap.recent if r.disconnected and r.ended_at >= since]
        if gone:
            return gone[-1]
        await asyncio.sleep(0.02)
    raise AssertionError("the simulator recorded no disconnect")
