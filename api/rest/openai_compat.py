"""The OpenAI-compatible edge, so unmodified OpenAI SDKs work against Lumina by changing only their
base URL: ``POST /v1/chat/completions`` (tools, tool_choice, response_format, images, top_p, stop,
seed; streamed in OpenAI's SSE framing, reasoning as ``reasoning_content`` deltas like DeepSeek),
``GET /v1/models`` (the catalog) and ``POST /v1/embeddings``.

Errors stay ``application/problem+json`` (api/rest/problems.py); OpenAI SDKs still raise their
status-specific ``APIStatusError`` subclasses for them, with the problem's detail in the message.
"""

from __future__ import annotations

import base64
import re
import struct
import time
from collections.abc import AsyncIterator, Sequence
from typing import Annotated, Any, Literal, Protocol, runtime_checkable

import msgspec
from litestar import Controller, Litestar, asgi, get, post
from litestar.di import NamedDependency
from litestar.exceptions import MethodNotAllowedException
from litestar.params import JSONBody
from litestar.types import Receive, Scope, Send

from api.auth import current_principal
from api.rest.budgets import rate_limit_headers
from api.rest.chat_options import (
    CONVERSATION_HEADER,
    MEMORY_HEADER,
    LuminaOptions,
    conversation_option,
    memory_option,
)
from api.rest.raw_asgi import decode_json_body, read_body, send_stream
from application.chat import CompleteChat, StreamChat
from application.embeddings import EmbedTexts
from domain.budgets import RateLimitStatus
from domain.chat import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    EmbeddingRequest,
    ErrorChunk,
    Finish,
    FinishReason,
    ImagePart,
    ReasoningDelta,
    ResponseFormat,
    ResponseFormatKind,
    ResponseMetadata,
    Role,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    Usage,
    UsageChunk,
)
from domain.errors import InvalidRequest, Unavailable
from domain.health import HealthState
from domain.registry import ModelRoute

__all__ = ["ChatEdge", "ModelHealthView", "ModelListing", "OAChatRequest", "OAEmbeddingRequest", "OpenAIController"]

_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.+)$", re.DOTALL)


@runtime_checkable
class ModelListing(Protocol):
    async def models(self) -> Sequence[ModelRoute]: ...


@runtime_checkable
class ModelHealthView(Protocol):
    """The health monitor as ``GET /v1/models`` reads it (``application.health.HealthMonitor``)."""

    def state(self, provider: str, model: str) -> HealthState: ...


class ChatEdge(msgspec.Struct, frozen=True):
    """The chat use cases of ``POST /v1/chat/completions`` (a raw ASGI handler: it takes them from
    the app's state). The tenant is the caller's principal's (``api.auth.current_principal()``)."""

    stream: StreamChat
    complete: CompleteChat


# --- request bodies --------------------------------------------------------------------------


class OAImageURL(msgspec.Struct, forbid_unknown_fields=False):
    url: str
    detail: str | None = None


class OAContentPart(msgspec.Struct, forbid_unknown_fields=False):
    type: str
    text: str | None = None
    image_url: OAImageURL | None = None


class OAFunctionCall(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    arguments: str = ""


class OAToolCall(msgspec.Struct, forbid_unknown_fields=False):
    id: str
    function: OAFunctionCall
    type: str = "function"


class OAMessage(msgspec.Struct, forbid_unknown_fields=False):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[OAContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[OAToolCall] | None = None


class OAFunction(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OATool(msgspec.Struct, forbid_unknown_fields=False):
    function: OAFunction
    type: str = "function"


class OANamedFunction(msgspec.Struct, forbid_unknown_fields=False):
    name: str


class OANamedToolChoice(msgspec.Struct, forbid_unknown_fields=False):
    function: OANamedFunction
    type: str = "function"


class OAJsonSchema(msgspec.Struct, forbid_unknown_fields=False):
    name: str = "response"
    schema: dict[str, Any] | None = None
    strict: bool | None = None
    description: str | None = None


class OAResponseFormat(msgspec.Struct, forbid_unknown_fields=False):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: OAJsonSchema | None = None


class StreamOptions(msgspec.Struct, forbid_unknown_fields=False):
    include_usage: bool = False


def _part(p: OAContentPart, field: str) -> ContentPart:
    if p.type == "text":
        return TextPart(p.text or "")
    if p.type == "image_url" and p.image_url is not None:
        found = _DATA_URL.match(p.image_url.url)
        if found:
            return ImagePart(data=found["data"], media_type=found["type"])
        return ImagePart(url=p.image_url.url)
    raise InvalidRequest.single(field, f"unsupported content part type {p.type!r}")


def _message(m: OAMessage, i: int) -> ChatMessage:
    content, parts = "", ()
    if isinstance(m.content, str):
        content = m.content
    elif m.content:
        converted = tuple(_part(p, f"messages[{i}].content[{j}]") for j, p in enumerate(m.content))
        if any(isinstance(p, ImagePart) for p in converted):
            parts = converted
        else:
            content = "\n".join(p.text for p in converted if isinstance(p, TextPart))
    return ChatMessage(
        role=Role.SYSTEM if m.role == "developer" else Role(m.role),
        content=content,
        name=m.name,
        tool_call_id=m.tool_call_id,
        parts=parts,
        tool_calls=tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ()),
    )


def _tool_choice(choice: str | OANamedToolChoice | None) -> ToolChoice | None:
    if choice is None:
        return None
    if isinstance(choice, OANamedToolChoice):
        return ToolChoice(name=choice.function.name)
    try:
        return ToolChoice(mode=ToolChoiceMode(choice))
    except ValueError:
        raise InvalidRequest.single("tool_choice", "auto, none, required or a named function") from None


def _response_format(fmt: OAResponseFormat | None) -> ResponseFormat | None:
    if fmt is None:
        return None
    spec = fmt.json_schema
    if fmt.type == "json_schema":
        if spec is None:
            raise InvalidRequest.single("response_format.json_schema", "required for json_schema output")
        return ResponseFormat(
            kind=ResponseFormatKind.JSON_SCHEMA, schema=spec.schema, name=spec.name, strict=bool(spec.strict)
        )
    return ResponseFormat(kind=ResponseFormatKind(fmt.type))


class OAChatRequest(msgspec.Struct, forbid_unknown_fields=False):
    messages: list[OAMessage]
    model: str = ""
    stream: bool = False
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    top_p: float | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[OATool] | None = None
    tool_choice: str | OANamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: OAResponseFormat | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None
    lumina: LuminaOptions | None = None  # Lumina's own options (api/rest/chat_options.py)

    def to_domain(self, memory_header: str | None = None, conversation_header: str | None = None) -> ChatRequest:
        stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop or ())
        options = self.lumina or LuminaOptions()
        return ChatRequest(
            messages=tuple(_message(m, i) for i, m in enumerate(self.messages)),
            model=self.model,
            temperature=self.temperature,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            top_p=self.top_p,
            stop=stop,
            seed=self.seed,
            tools=tuple(
                Tool(t.function.name, t.function.description or "", t.function.parameters or {})
                for t in self.tools or ()
            ),
            tool_choice=_tool_choice(self.tool_choice),
            parallel_tool_calls=self.parallel_tool_calls,
            response_format=_response_format(self.response_format),
            conversation_id=conversation_option(conversation_header, options.conversation_id),
            memory=memory_option(memory_header, options.memory),
        )


class OAEmbeddingRequest(msgspec.Struct, forbid_unknown_fields=False):
    input: str | list[str]
    model: str = ""
    dimensions: int | None = None
    encoding_format: Literal["float", "base64"] = "float"
    user: str | None = None

    def to_domain(self) -> EmbeddingRequest:
        inputs = (self.input,) if isinstance(self.input, str) else tuple(self.input)
        return EmbeddingRequest(inputs=inputs, model=self.model, dimensions=self.dimensions)


# --- responses -------------------------------------------------------------------------------

_encoder = msgspec.json.Encoder()
_CHAT_REQUEST = msgspec.json.Decoder(OAChatRequest, strict=False)  # as Litestar converts bodies: "7" is 7
_MEMORY_HEADER = MEMORY_HEADER.encode()  # ASGI header names are lower-case bytes
_CONVERSATION_HEADER = CONVERSATION_HEADER.encode()
_JSON = (b"content-type", b"application/json")
_EVENT_STREAM = (b"content-type", b"text/event-stream; charset=utf-8")
_NO_CACHE = (b"cache-control", b"no-cache")


def _latin1(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]


def _sse(payload: Any) -> bytes:
    return b"data: " + _encoder.encode(payload) + b"\n\n"


# Response bodies as Structs, encoded by the one module-level encoder: no dict per member per
# request. Field order is the JSON's; ``UNSET`` members are left out.


class _PromptDetails(msgspec.Struct):
    cached_tokens: int


class _CompletionDetails(msgspec.Struct):
    reasoning_tokens: int


class _UsageOut(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: _PromptDetails
    completion_tokens_details: _CompletionDetails


class _FunctionOut(msgspec.Struct):
    name: str
    arguments: str


class _ToolCallOut(msgspec.Struct):
    id: str
    type: str
    function: _FunctionOut


class _MessageOut(msgspec.Struct, kw_only=True):
    role: str = "assistant"
    content: str | None
    refusal: None = None
    tool_calls: list[_ToolCallOut] | msgspec.UnsetType = msgspec.UNSET
    reasoning_content: str | msgspec.UnsetType = msgspec.UNSET


class _ChoiceOut(msgspec.Struct, kw_only=True):
    index: int = 0
    message: _MessageOut
    finish_reason: str
    logprobs: None = None


class _LuminaOut(msgspec.Struct):
    provider: str
    cost_micros: int
    route: dict[str, Any] | msgspec.UnsetType = msgspec.UNSET  # how it was routed (route_summary)


def route_summary(meta: ResponseMetadata) -> dict[str, Any]:
    """The routing decision as the response body carries it (the ``lumina`` member)."""
    out: dict[str, Any] = {
        "request_id": meta.request_id, "provider": meta.provider, "model": meta.model,
        "requested": meta.requested, "strategy": meta.strategy, "attempts": meta.attempts,
        "fallbacks_tried": list(meta.fallbacks_tried), "estimate_micros": meta.estimate_micros,
    }
    if meta.stepped_down_from:
        out["stepped_down_from"] = meta.stepped_down_from
    if meta.hedged:
        out["hedged"] = True
    if meta.notes:
        out["notes"] = meta.notes
    return out


def chat_headers(provider: str, model: str, rate_limit: RateLimitStatus | None) -> dict[str, str]:
    """``x-lumina-route: <provider>/<model>`` (who serves the answer) and the ``x-ratelimit-*``
    headers of the limits that applied."""
    headers = rate_limit_headers(rate_limit)
    if provider:
        headers["x-lumina-route"] = f"{provider}/{model}"
    return headers


class _CompletionOut(msgspec.Struct, kw_only=True):
    id: str
    object: str = "chat.completion"
    created: int
    model: str
    choices: list[_ChoiceOut]
    usage: _UsageOut
    lumina: _LuminaOut


def _usage(u: Usage) -> _UsageOut:
    return _UsageOut(
        u.input_tokens, u.output_tokens, u.total_tokens,
        _PromptDetails(u.cached_input_tokens), _CompletionDetails(u.reasoning_tokens),
    )


def _vector(values: tuple[float, ...], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return list(values)


class OpenAIController(Controller):
    path = "/v1"

    # A raw ASGI handler (POST only): the body decoded straight into its type, the whole answer
    # sent as two ASGI messages; Litestar's parameter and response machinery cost about a tenth
    # of the backend's instructions per request here (api/rest/raw_asgi.py). Middleware (tracing,
    # metrics, authentication) and the exception handlers (problem+json) apply as to any route.
    @asgi("/chat/completions", copy_scope=False)
    async def chat_completions(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] != "POST":
            raise MethodNotAllowedException(headers={"allow": "POST"})
        app = Litestar.from_scope(scope)
        chat_edge: ChatEdge | None = app.state.get("chat_edge")
        if chat_edge is None:
            raise Unavailable("chat is not configured on this server")
        data = decode_json_body(scope, await read_body(scope, receive, app.request_max_body_size), _CHAT_REQUEST)
        memory_header = conversation_header = None
        for name, value in scope["headers"]:
            if name == _MEMORY_HEADER:
                memory_header = value.decode("latin-1")
            elif name == _CONVERSATION_HEADER:
                conversation_header = value.decode("latin-1")
        chat = data.to_domain(memory_header, conversation_header)
        principal = current_principal()
        created = int(time.time())
        if not data.stream:
            answer = await chat_edge.complete(principal, chat)
            meta = answer.finish.metadata
            tool_calls: list[_ToolCallOut] | msgspec.UnsetType = msgspec.UNSET
            content: str | None = answer.text
            if answer.tool_calls:
                tool_calls = [
                    _ToolCallOut(c.id or f"call_{c.index}", "function", _FunctionOut(c.name or "", c.arguments_fragment))
                    for c in answer.tool_calls
                ]
                content = answer.text or None
            message = _MessageOut(content=content, tool_calls=tool_calls, reasoning_content=answer.reasoning or msgspec.UNSET)
            body = _encoder.encode(_CompletionOut(
                id=f"chatcmpl-{meta.request_id if meta else ''}",
                created=created,
                model=meta.model if meta else data.model,
                choices=[_ChoiceOut(message=message, finish_reason=answer.finish.reason.value)],
                usage=_usage(answer.usage),
                lumina=_LuminaOut(meta.provider if meta else "", answer.cost_micros,
                                  route_summary(meta) if meta else msgspec.UNSET),
            ))
            headers = chat_headers(meta.provider, meta.model, answer.rate_limit) if meta else rate_limit_headers(answer.rate_limit)
            await send({"type": "http.response.start", "status": 200, "headers": [
                _JSON, (b"content-length", str(len(body)).encode()), *_latin1(headers),
            ]})
            await send({"type": "http.response.body", "body": body})
            return
        chunks = await chat_edge.stream(principal, chat)
        include_usage = bool(data.stream_options and data.stream_options.include_usage)
        headers = [_EVENT_STREAM, _NO_CACHE, *_latin1(chat_headers(chunks.provider, chunks.model, chunks.rate_limit))]
        try:
            await send_stream(receive, send, headers, _render(chunks, created, data.model, include_usage))
        finally:
            await chunks.aclose()  # also when the rendering never started (its own clean-up did not run)

    @get("/models")
    async def list_models(
        self, catalog: NamedDependency[ModelListing | None], model_health: NamedDependency[ModelHealthView | None] = None
    ) -> dict[str, Any]:
        if catalog is None:
            raise Unavailable("model listing is not configured on this server")
        routes = await catalog.models()
        data: list[dict[str, Any]] = [
            {"id": r.name, "object": "model", "created": 0, "owned_by": r.provider} for r in routes
        ]
        if model_health is not None:  # Lumina's extra member: this replica's view of each model's health
            for item, r in zip(data, routes, strict=True):
                item["lumina"] = {"health": model_health.state(r.provider, r.upstream_model).value}
        return {"object": "list", "data": data}

    @post("/embeddings", status_code=200)
    async def embeddings(
        self, data: JSONBody[OAEmbeddingRequest], embed_texts: NamedDependency[EmbedTexts | None]
    ) -> dict[str, Any]:
        if embed_texts is None:
            raise Unavailable("embeddings are not configured on this server")
        result = await embed_texts(data.to_domain())
        return {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _vector(v, data.encoding_format)}
                for i, v in enumerate(result.vectors)
            ],
            "model": data.model,
            "usage": {"prompt_tokens": result.input_tokens, "total_tokens": result.input_tokens},
        }


_DELTA_TAIL = b'},"finish_reason":null}]}\n\n'


async def _render(chunks: AsyncIterator[Any], created: int, model: str, include_usage: bool) -> AsyncIterator[bytes]:
    base = {"id": "chatcmpl-pending", "object": "chat.completion.chunk", "created": created, "model": model}
    # a text delta's event is this prefix, the JSON of its text and a fixed tail: one string encoded
    # per chunk instead of three dicts built and encoded
    head = (b'data: {"id":"chatcmpl-pending","object":"chat.completion.chunk","created":' + str(created).encode()
            + b',"model":' + _encoder.encode(model) + b',"choices":[{"index":0,"delta":{')
    usage: UsageChunk | None = None
    first = True

    def text_event(member: bytes, text: str) -> bytes:
        nonlocal first
        if first:
            first = False
            return head + b'"role":"assistant",' + member + _encoder.encode(text) + _DELTA_TAIL
        return head + member + _encoder.encode(text) + _DELTA_TAIL

    def delta_event(delta: dict[str, Any]) -> bytes:
        nonlocal first
        if first:
            delta = {"role": "assistant", **delta}
            first = False
        return _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})

    try:
        async for chunk in chunks:
            match chunk:
                case TextDelta(text=text):
                    yield text_event(b'"content":', text)
                case ReasoningDelta(text=text):
                    yield text_event(b'"reasoning_content":', text)
                case ToolCallDelta(index=i, id=call_id, name=name, arguments_fragment=frag):
                    call: dict[str, Any] = {"index": i, "function": {"arguments": frag}}
                    if call_id:
                        call["id"], call["type"] = call_id, "function"
                    if name:
                        call["function"]["name"] = name
                    yield delta_event({"tool_calls": [call]})
                case UsageChunk():
                    usage = chunk
                case Finish(reason=reason, metadata=meta):
                    if meta is not None:
                        base = {**base, "id": f"chatcmpl-{meta.request_id}", "model": meta.model}
                    last = {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reason.value}]}
                    if meta is not None:  # Lumina's extra member: how the answer was routed
                        last["lumina"] = route_summary(meta)
                    yield _sse(last)
                    if include_usage and usage is not None:
                        yield _sse({**base, "choices": [], "usage": _usage(usage.usage)})
                case ErrorChunk(code=code, message=message):
                    yield _sse({"error": {"message": message, "type": code, "code": code}})
                    yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": FinishReason.ERROR.value}]})
        yield b"data: [DONE]\n\n"
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
