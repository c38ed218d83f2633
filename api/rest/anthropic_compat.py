"""``POST /v1/messages`` in Anthropic's Messages wire format, so unmodified Anthropic SDKs work
against Lumina by changing only their base URL. Streams use Anthropic's named SSE events
(``message_start``, ``content_block_start``/``_delta``/``_stop``, ``message_delta``,
``message_stop``, ``ping``, ``error``); errors are Anthropic error bodies
``{"type":"error","error":{"type","message"}}`` with the statuses of ``api/errors.py``.

Non-stream answers carry text and tool_use blocks (thinking is streamed only).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
import structlog
from litestar import Controller, MediaType, Request, Response, post
from litestar.di import NamedDependency
from litestar.exceptions import HTTPException, ValidationException
from litestar.params import HeaderParameter, JSONBody
from litestar.response import Stream

from api.auth import current_principal
from api.errors import map_error
from api.rest.chat_options import (
    CONVERSATION_HEADER,
    MEMORY_HEADER,
    conversation_option,
    memory_option,
)
from api.rest.openai_compat import chat_headers, route_summary
from api.rest.problems import retry_after_header
from application.chat import CompleteChat, StreamChat
from domain.chat import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    ErrorChunk,
    Finish,
    FinishReason,
    ImagePart,
    ReasoningDelta,
    Role,
    TextDelta,
    TextPart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    UsageChunk,
)
from domain.errors import DomainError, Overloaded, RateLimited, UpstreamTimeout

__all__ = ["AnthropicController", "AnthropicMessagesRequest"]

log = structlog.get_logger("lumina.rest")


# --- request ----------------------------------------------------------------------------------


class ImageSource(msgspec.Struct, forbid_unknown_fields=False):
    type: Literal["base64", "url"]
    media_type: str = "image/png"
    data: str | None = None
    url: str | None = None


class ContentBlock(msgspec.Struct, forbid_unknown_fields=False):
    type: str
    text: str | None = None
    source: ImageSource | None = None
    id: str | None = None
    name: str | None = None
    input: dict[str, Any] | None = None
    tool_use_id: str | None = None
    content: str | list[ContentBlock] | None = None


class AnthropicMessage(msgspec.Struct, forbid_unknown_fields=False):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class AnthropicTool(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    description: str = ""
    input_schema: dict[str, Any] = msgspec.field(default_factory=dict)


class AnthropicToolChoice(msgspec.Struct, forbid_unknown_fields=False):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


def _text_of(content: str | list[ContentBlock] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "\n".join(b.text for b in content if b.type == "text" and b.text)


def _user_messages(blocks: list[ContentBlock]) -> list[ChatMessage]:
    out = [
        ChatMessage(Role.TOOL, _text_of(b.content) or "(empty)", tool_call_id=b.tool_use_id)
        for b in blocks
        if b.type == "tool_result"
    ]
    parts: list[ContentPart] = []
    for b in blocks:
        if b.type == "text" and b.text:
            parts.append(TextPart(b.text))
        elif b.type == "image" and b.source is not None:
            src = b.source
            parts.append(ImagePart(url=src.url) if src.type == "url" else ImagePart(data=src.data, media_type=src.media_type))
    if parts and not any(isinstance(p, ImagePart) for p in parts):
        out.append(ChatMessage(Role.USER, "\n".join(p.text for p in parts if isinstance(p, TextPart))))
    elif parts:
        out.append(ChatMessage(Role.USER, "", parts=tuple(parts)))
    return out


def _assistant_message(blocks: list[ContentBlock]) -> ChatMessage:
    calls = tuple(
        ToolCall(id=b.id or "", name=b.name or "", arguments=json.dumps(b.input or {}))
        for b in blocks
        if b.type == "tool_use"
    )
    return ChatMessage(Role.ASSISTANT, _text_of(blocks), tool_calls=calls)


class AnthropicMessagesRequest(msgspec.Struct, forbid_unknown_fields=False):
    model: str
    messages: list[AnthropicMessage]
    max_tokens: Annotated[int, msgspec.Meta(ge=1)]
    system: str | list[ContentBlock] | None = None
    stream: bool = False
    temperature: Annotated[float, msgspec.Meta(ge=0, le=1)] | None = None
    top_p: Annotated[float, msgspec.Meta(gt=0, le=1)] | None = None
    stop_sequences: list[str] | None = None
    tools: list[AnthropicTool] | None = None
    tool_choice: AnthropicToolChoice | None = None

    def to_domain(self, memory_header: str | None = None, conversation_header: str | None = None) -> ChatRequest:
        messages: list[ChatMessage] = []
        system = _text_of(self.system)
        if system:
            messages.append(ChatMessage(Role.SYSTEM, system))
        for m in self.messages:
            if isinstance(m.content, str):
                role = Role.USER if m.role == "user" else Role.ASSISTANT
                messages.append(ChatMessage(role, m.content))
            elif m.role == "user":
                messages.extend(_user_messages(m.content))
            else:
                messages.append(_assistant_message(m.content))
        choice: ToolChoice | None = None
        parallel: bool | None = None
        if self.tool_choice is not None:
            tc = self.tool_choice
            mode = {"auto": ToolChoiceMode.AUTO, "any": ToolChoiceMode.REQUIRED, "none": ToolChoiceMode.NONE}
            choice = ToolChoice(name=tc.name) if tc.type == "tool" else ToolChoice(mode=mode[tc.type])
            parallel = False if tc.disable_parallel_tool_use else None
        return ChatRequest(
            messages=tuple(messages),
            model=self.model,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            top_p=self.top_p,
            stop=tuple(self.stop_sequences or ()),
            tools=tuple(Tool(t.name, t.description, t.input_schema) for t in self.tools or ()),
            tool_choice=choice,
            parallel_tool_calls=parallel,
            conversation_id=conversation_option(conversation_header),
            memory=memory_option(memory_header),
        )


# --- errors -----------------------------------------------------------------------------------

_TYPE_BY_STATUS = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    422: "invalid_request_error",
    429: "rate_limit_error",
    504: "timeout_error",
}


def error_type(exc: DomainError | None, status: int) -> str:
    if isinstance(exc, Overloaded):
        return "overloaded_error"
    if isinstance(exc, RateLimited):
        return "rate_limit_error"
    if isinstance(exc, UpstreamTimeout):
        return "timeout_error"
    return _TYPE_BY_STATUS.get(status, "api_error" if status >= 500 else "invalid_request_error")


def _error_body(etype: str, message: str) -> dict[str, Any]:
    return {"type": "error", "error": {"type": etype, "message": message}}


def _anthropic_error(status: int, etype: str, message: str, headers: dict[str, str] | None = None) -> Response[Any]:
    return Response(_error_body(etype, message), status_code=status, media_type="application/json", headers=headers)


def _domain(_: Request[Any, Any, Any], exc: DomainError) -> Response[Any]:
    status = map_error(exc).http_status
    headers = None
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        headers = {"retry-after": retry_after_header(exc.retry_after)}
    if status == 401:
        headers = {"www-authenticate": 'Bearer realm="lumina"'}
    return _anthropic_error(status, error_type(exc, status), exc.message, headers)


def _validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[Any]:
    details = [f"{e.get('key') or 'body'}: {e.get('message')}" for e in (exc.extra or []) if isinstance(e, dict)]
    return _anthropic_error(400, "invalid_request_error", "; ".join(details) or str(exc.detail))


def _http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[Any]:
    return _anthropic_error(exc.status_code, error_type(None, exc.status_code), str(exc.detail))


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[Any]:
    log.error("request failed", exc_info=exc)
    return _anthropic_error(500, "api_error", "internal error; the server log has the details")


# --- responses --------------------------------------------------------------------------------

_STOP_REASON = {
    FinishReason.STOP: "end_turn",
    FinishReason.LENGTH: "max_tokens",
    FinishReason.TOOL_CALLS: "tool_use",
    FinishReason.CONTENT_FILTER: "refusal",
    FinishReason.ERROR: "end_turn",
}
_encoder = msgspec.json.Encoder()


def _tool_input(arguments: str) -> dict[str, Any]:
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _event(name: str, payload: dict[str, Any]) -> bytes:
    return b"event: " + name.encode() + b"\ndata: " + _encoder.encode(payload) + b"\n\n"


class AnthropicController(Controller):
    path = "/v1"
    exception_handlers = {  # noqa: RUF012 - Litestar reads this class attribute
        DomainError: _domain,
        ValidationException: _validation,
        HTTPException: _http,
        Exception: _unexpected,
    }

    @post("/messages", status_code=200)
    async def messages(
        self,
        data: JSONBody[AnthropicMessagesRequest],
        stream_chat: NamedDependency[StreamChat],
        complete_chat: NamedDependency[CompleteChat],
        memory_header: Annotated[str | None, HeaderParameter(name=MEMORY_HEADER)] = None,
        conversation_header: Annotated[str | None, HeaderParameter(name=CONVERSATION_HEADER)] = None,
    ) -> Any:
        chat = data.to_domain(memory_header, conversation_header)
        principal = current_principal()
        message_id = f"msg_{uuid.uuid4().hex}"
        if not data.stream:
            answer = await complete_chat(principal, chat)
            meta = answer.finish.metadata
            content: list[dict[str, Any]] = []
            if answer.text or not answer.tool_calls:
                content.append({"type": "text", "text": answer.text})
            content.extend(
                {"type": "tool_use", "id": c.id or f"toolu_{c.index}", "name": c.name or "",
                 "input": _tool_input(c.arguments_fragment)}
                for c in answer.tool_calls
            )
            body = {
                "id": message_id,
                "type": "message",
                "role": "assistant",
                "model": meta.model if meta else data.model,
                "content": content,
                "stop_reason": _STOP_REASON[answer.finish.reason],
                "stop_sequence": None,
                "usage": {
                    "input_tokens": answer.usage.input_tokens - answer.usage.cached_input_tokens,
                    "output_tokens": answer.usage.output_tokens,
                    "cache_read_input_tokens": answer.usage.cached_input_tokens,
                    "cache_creation_input_tokens": 0,
                },
                "lumina": {"request_id": meta.request_id if meta else "", "provider": meta.provider if meta else "",
                           "cost_micros": answer.cost_micros, **({"route": route_summary(meta)} if meta else {})},
            }
            headers = chat_headers(meta.provider if meta else "", meta.model if meta else "", answer.rate_limit)
            return Response(body, media_type=MediaType.JSON, headers=headers)
        chunks = await stream_chat(principal, chat)
        # the content-type header, not media_type: the handler's JSON media type would win over it
        return Stream(_render(chunks, message_id, data.model),
                      headers={"cache-control": "no-cache", "content-type": "text/event-stream",
                               **chat_headers(chunks.provider, chunks.model, chunks.rate_limit)})


async def _render(chunks: AsyncIterator[Any], message_id: str, model: str) -> AsyncIterator[bytes]:
    """The unified chunks as Anthropic's named events: one content block per run of text,
    thinking or one tool call."""
    start = {"id": message_id, "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None,
             "usage": {"input_tokens": 0, "output_tokens": 0}}
    open_kind: tuple[str, int] | None = None  # ("text"|"thinking"|"tool", tool index)
    index = -1
    usage: UsageChunk | None = None

    def switch(kind: tuple[str, int], block: dict[str, Any]) -> bytes:
        nonlocal open_kind, index
        out = _event("content_block_stop", {"type": "content_block_stop", "index": index}) if open_kind else b""
        open_kind, index = kind, index + 1
        return out + _event("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})

    def delta(payload: dict[str, Any]) -> bytes:
        return _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": payload})

    try:
        yield _event("message_start", {"type": "message_start", "message": start}) + _event("ping", {"type": "ping"})
        async for chunk in chunks:
            match chunk:
                case TextDelta(text=text):
                    head = b"" if open_kind == ("text", 0) else switch(("text", 0), {"type": "text", "text": ""})
                    yield head + delta({"type": "text_delta", "text": text})
                case ReasoningDelta(text=text):
                    head = b"" if open_kind == ("thinking", 0) else switch(
                        ("thinking", 0), {"type": "thinking", "thinking": "", "signature": ""})
                    yield head + delta({"type": "thinking_delta", "thinking": text})
                case ToolCallDelta(index=i, id=call_id, name=name, arguments_fragment=frag):
                    head = b""
                    if open_kind != ("tool", i):
                        head = switch(("tool", i), {"type": "tool_use", "id": call_id or f"toolu_{i}",
                                                    "name": name or "", "input": {}})
                    body = delta({"type": "input_json_delta", "partial_json": frag}) if frag else b""
                    if head or body:
                        yield head + body
                case UsageChunk():
                    usage = chunk
                case Finish(reason=reason, metadata=meta):
                    out = _event("content_block_stop", {"type": "content_block_stop", "index": index}) if open_kind else b""
                    open_kind = None
                    u = usage.usage if usage is not None else None
                    counts = {
                        "input_tokens": (u.input_tokens - u.cached_input_tokens) if u else 0,
                        "output_tokens": u.output_tokens if u else 0,
                        "cache_read_input_tokens": u.cached_input_tokens if u else 0,
                    }
                    message_delta: dict[str, Any] = {
                        "type": "message_delta",
                        "delta": {"stop_reason": _STOP_REASON[reason], "stop_sequence": None},
                        "usage": counts,
                    }
                    if meta is not None:
                        message_delta["lumina"] = {"request_id": meta.request_id, "provider": meta.provider,
                                                   "model": meta.model, "cost_micros": meta.cost_micros}
                    yield out + _event("message_delta", message_delta) + _event("message_stop", {"type": "message_stop"})
                case ErrorChunk(code=code, message=message):
                    etype = "overloaded_error" if code == "overloaded" else (
                        "rate_limit_error" if code == "rate_limited" else "api_error")
                    yield _event("error", _error_body(etype, message))
                    return
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]
