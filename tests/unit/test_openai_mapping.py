"""The OpenAI error table, request/usage mapping (on real SDK objects) and the raw stream's SSE
framing and chunk wire (no I/O)."""

from __future__ import annotations

import email.utils
import time

import httpx2
import msgspec
import openai
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from openai.types.completion_usage import CompletionTokensDetails, CompletionUsage, PromptTokensDetails

from adapters.providers.errors import parse_retry_after, redact, translate_openai_error
from adapters.providers.openai import ChunkWire, SSEDataLines, to_openai_messages, to_usage
from domain.chat import ChatMessage, Role, Usage
from domain.errors import (
    ContentFiltered,
    ContextLengthExceeded,
    PermissionDenied,
    ProviderError,
    RateLimited,
    UpstreamInvalidRequest,
    UpstreamTimeout,
    UpstreamUnavailable,
)

SECRET = "sk-live-abcdefghijklmnopqrstuvwxyz"
REQUEST = httpx2.Request("POST", "http://upstream.test/v1/chat/completions")


def status_error(cls: type[openai.APIStatusError], status: int, body: dict, headers: dict | None = None):
    response = httpx2.Response(status, headers=headers or {}, request=REQUEST)
    return cls(f"Error code: {status}", response=response, body=body)


def translate(exc: openai.OpenAIError) -> ProviderError:
    return translate_openai_error(exc, provider="p", secret=SECRET)


@pytest.mark.parametrize(
    ("cls", "status", "code", "expected"),
    [
        (openai.BadRequestError, 400, "context_length_exceeded", ContextLengthExceeded),
        (openai.BadRequestError, 400, "content_policy_violation", ContentFiltered),
        (openai.BadRequestError, 400, "invalid_value", UpstreamInvalidRequest),
        (openai.RateLimitError, 429, "insufficient_quota", PermissionDenied),
        (openai.InternalServerError, 504, None, UpstreamTimeout),
        (openai.InternalServerError, 502, None, UpstreamUnavailable),
        (openai.UnprocessableEntityError, 422, None, UpstreamInvalidRequest),
    ],
)
def test_status_errors(cls, status: int, code: str | None, expected: type[ProviderError]) -> None:
    err = translate(status_error(cls, status, {"message": "nope", "type": "t", "code": code}))
    assert type(err) is expected
    assert f"HTTP {status}" in err.message and "nope" in err.message and err.provider == "p"


def test_error_event_without_status() -> None:
    ctx = openai.APIError("too long", REQUEST, body={"message": "too long", "code": "context_length_exceeded"})
    other = openai.APIError("boom", REQUEST, body={"message": "boom", "type": "server_error"})
    assert type(translate(ctx)) is ContextLengthExceeded
    assert type(translate(other)) is UpstreamUnavailable and translate(other).retryable


def test_the_key_never_reaches_the_message() -> None:
    body = {"message": f"Incorrect API key provided: {SECRET}. Also {SECRET[:24]}...", "code": "invalid_api_key"}
    err = translate(status_error(openai.AuthenticationError, 401, body))
    assert SECRET[:20] not in str(err)
    assert len(redact("x" * 5000, SECRET)) == 500


def test_retry_after_forms() -> None:
    assert parse_retry_after(httpx2.Headers({"retry-after": "2"})) == 2.0
    assert parse_retry_after(httpx2.Headers({"retry-after-ms": "1500", "retry-after": "9"})) == 1.5
    in_ten = email.utils.formatdate(time.time() + 10, usegmt=True)
    assert 8 <= parse_retry_after(httpx2.Headers({"retry-after": in_ten})) <= 10
    assert parse_retry_after(httpx2.Headers({"retry-after": "soon"})) is None
    limited = translate(status_error(openai.RateLimitError, 429, {"message": "slow"}, {"retry-after": "3"}))
    assert isinstance(limited, RateLimited) and limited.retry_after == 3.0


def test_messages_and_usage_mapping() -> None:
    msgs = (
        ChatMessage(Role.SYSTEM, "s", name="ops"),
        ChatMessage(Role.ASSISTANT, ""),
        ChatMessage(Role.TOOL, "42", tool_call_id="call_1"),
    )
    assert to_openai_messages(msgs) == [
        {"role": "system", "content": "s", "name": "ops"},
        {"role": "assistant", "content": ""},
        {"role": "tool", "content": "42", "tool_call_id": "call_1"},
    ]
    usage = CompletionUsage(
        prompt_tokens=10,
        completion_tokens=7,
        total_tokens=17,
        prompt_tokens_details=PromptTokensDetails(cached_tokens=4),
        completion_tokens_details=CompletionTokensDetails(reasoning_tokens=3),
    )
    assert to_usage(usage) == Usage(input_tokens=10, output_tokens=7, cached_input_tokens=4, reasoning_tokens=3)
    assert to_usage(CompletionUsage(prompt_tokens=1, completion_tokens=2, total_tokens=3)) == Usage(1, 2)


def test_the_whole_request_is_mapped() -> None:
    from adapters.providers.openai import to_openai_params
    from domain.chat import (
        ChatRequest,
        ImagePart,
        ResponseFormat,
        ResponseFormatKind,
        TextPart,
        Tool,
        ToolCall,
        ToolChoice,
        ToolChoiceMode,
    )

    call = ToolCall("call_1", "lookup", '{"q": "x"}')
    request = ChatRequest(
        messages=(
            ChatMessage(Role.USER, "look", parts=(ImagePart(url="https://x.test/a.png"), ImagePart(data="QUJD", media_type="image/jpeg"), TextPart("and"))),
            ChatMessage(Role.ASSISTANT, "", tool_calls=(call,)),
            ChatMessage(Role.TOOL, "found", tool_call_id="call_1"),
        ),
        temperature=0.5, top_p=0.8, max_tokens=9, stop=("END",), seed=3,
        tools=(Tool("lookup", "search", {"type": "object", "properties": {"q": {"type": "string"}}}), Tool("other")),
        tool_choice=ToolChoice(name="lookup"), parallel_tool_calls=False,
        response_format=ResponseFormat(ResponseFormatKind.JSON_SCHEMA, schema={"type": "object"}, name="out", strict=True),
    )
    params = to_openai_params("up", request, max_tokens_param="max_completion_tokens")
    assert params["messages"][0]["content"] == [
        {"type": "text", "text": "look"},
        {"type": "image_url", "image_url": {"url": "https://x.test/a.png"}},
        {"type": "image_url", "image_url": {"url": "data:image/jpeg;base64,QUJD"}},
        {"type": "text", "text": "and"},
    ]
    assert params["messages"][1] == {
        "role": "assistant", "content": None,
        "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}],
    }
    assert params["tools"][1] == {"type": "function", "function": {"name": "other", "parameters": {"type": "object", "properties": {}}}}
    assert params["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert params["response_format"] == {"type": "json_schema", "json_schema": {"name": "out", "schema": {"type": "object"}, "strict": True}}
    assert (params["top_p"], params["stop"], params["seed"], params["max_completion_tokens"], params["parallel_tool_calls"]) == (0.8, ["END"], 3, 9, False)
    modes = [to_openai_params("up", ChatRequest(messages=request.messages[:1], tools=request.tools, tool_choice=ToolChoice(mode=m)))["tool_choice"] for m in ToolChoiceMode]
    assert modes == ["auto", "none", "required"]
    plain = to_openai_params("up", ChatRequest(messages=request.messages[:1], response_format=ResponseFormat(ResponseFormatKind.JSON_OBJECT)))
    assert plain["response_format"] == {"type": "json_object"} and "tools" not in plain and "parallel_tool_calls" not in plain


# --- the raw stream path: SSE framing and the msgspec chunk wire (no pydantic per chunk) ---

SSE_STREAM = (
    b": keep-alive comment\r\n"
    b"event: message\r\nid: 1\r\n"
    b'data: {"choices":[{"index":0,"delta":{"content":"Hel"}}]}\r\n\r\n'
    b'data:{"choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n'
    b'data: {"choices":\ndata: [{"index":0,"delta":{},"finish_reason":"stop"}]}\r\r'
    b"retry: 100\n"
    b"data: [DONE]\n\n"
)
SSE_EVENTS = [
    b'{"choices":[{"index":0,"delta":{"content":"Hel"}}]}',
    b'{"choices":[{"index":0,"delta":{"content":"lo"}}]}',
    b'{"choices":\n[{"index":0,"delta":{},"finish_reason":"stop"}]}',
    b"[DONE]",
]


def feed_in_parts(stream: bytes, cuts: list[int]) -> list[bytes]:
    parser = SSEDataLines()
    events: list[bytes] = []
    start = 0
    for cut in [*sorted(cuts), len(stream)]:
        events += parser.feed(stream[start:cut])
        start = cut
    return events + parser.flush()


def test_sse_events_in_one_read() -> None:
    assert feed_in_parts(SSE_STREAM, []) == SSE_EVENTS


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(SSE_STREAM)), max_size=12))
def test_sse_events_do_not_depend_on_how_the_bytes_are_split(cuts: list[int]) -> None:
    # LF, CRLF (also a CR in one read and its LF in the next) and CR line ends, multi-line data,
    # comments and other fields: the same events however the reads cut the stream
    assert feed_in_parts(SSE_STREAM, cuts) == SSE_EVENTS


def test_sse_last_event_without_blank_line_is_kept_at_the_end() -> None:
    parser = SSEDataLines()
    assert parser.feed(b'data: {"a":1}\n\ndata: [DONE]') == [b'{"a":1}']
    assert parser.flush() == [b"[DONE]"]
    assert SSEDataLines().flush() == []


def test_chunk_wire_reads_only_what_the_domain_needs() -> None:
    chunk = msgspec.json.decode(
        b'{"id":"c1","object":"chat.completion.chunk","created":1,"model":"m","system_fingerprint":null,'
        b'"choices":[{"index":0,"logprobs":null,"finish_reason":null,"delta":{"role":"assistant",'
        b'"reasoning_content":"think","tool_calls":[{"index":1,"id":"call_1","type":"function",'
        b'"function":{"name":"f","arguments":"{"}}]}}],'
        b'"usage":{"prompt_tokens":10,"completion_tokens":7,"total_tokens":17,'
        b'"prompt_tokens_details":{"cached_tokens":4,"audio_tokens":0},'
        b'"completion_tokens_details":{"reasoning_tokens":3,"accepted_prediction_tokens":0}}}',
        type=ChunkWire,
    )
    delta = chunk.choices[0].delta
    assert delta.reasoning_content == "think" and delta.content is None
    call = delta.tool_calls[0]
    assert (call.index, call.id, call.function.name, call.function.arguments) == (1, "call_1", "f", "{")
    assert to_usage(chunk.usage) == Usage(input_tokens=10, output_tokens=7, cached_input_tokens=4, reasoning_tokens=3)
    bare = msgspec.json.decode(b'{"choices":[],"usage":{"prompt_tokens":1,"completion_tokens":2}}', type=ChunkWire)
    assert to_usage(bare.usage) == Usage(1, 2) and bare.error is None
    with pytest.raises(msgspec.ValidationError):  # a wrong type is a malformed chunk, not a silent None
        msgspec.json.decode(b'{"choices":[{"delta":{"content":5}}]}', type=ChunkWire)
