"""``POST /v1/chat/completions`` in the OpenAI wire format, so unmodified OpenAI SDKs work against
Lumina by changing only their base URL. Streaming uses OpenAI's SSE framing."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Annotated, Any, Literal

import msgspec
from litestar import Controller, post
from litestar.di import NamedDependency
from litestar.params import JSONBody
from litestar.response import Stream

from application.chat import CompleteChat, StreamChat
from domain.chat import ChatMessage, ChatRequest, ErrorChunk, Finish, FinishReason, Role, TextDelta, ToolCallDelta, UsageChunk

__all__ = ["OpenAIController"]


class OAMessage(msgspec.Struct, forbid_unknown_fields=False):
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | None = None
    name: str | None = None
    tool_call_id: str | None = None


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class OAChatRequest(msgspec.Struct, forbid_unknown_fields=False):
    messages: list[OAMessage]
    model: str = ""
    stream: bool = False
    temperature: Annotated[float, msgspec.Meta(ge=0, le=2)] | None = None
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    max_completion_tokens: Annotated[int, msgspec.Meta(ge=1)] | None = None
    stream_options: StreamOptions | None = None
    user: str | None = None

    def to_domain(self) -> ChatRequest:
        return ChatRequest(
            messages=tuple(
                ChatMessage(
                    role=Role.SYSTEM if m.role == "developer" else Role(m.role),
                    content=m.content or "",
                    name=m.name,
                    tool_call_id=m.tool_call_id,
                )
                for m in self.messages
            ),
            model=self.model,
            temperature=self.temperature,
            max_tokens=self.max_completion_tokens or self.max_tokens,
        )


_encoder = msgspec.json.Encoder()


def _sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + _encoder.encode(payload) + b"\n\n"


class OpenAIController(Controller):
    path = "/v1"

    @post("/chat/completions", status_code=200)
    async def chat_completions(
        self,
        data: JSONBody[OAChatRequest],
        stream_chat: NamedDependency[StreamChat],
        complete_chat: NamedDependency[CompleteChat],
        tenant_id: NamedDependency[str],
    ) -> Any:
        chat = data.to_domain()
        created = int(time.time())
        if not data.stream:
            answer = await complete_chat(tenant_id, chat)
            meta = answer.finish.metadata
            return {
                "id": f"chatcmpl-{meta.request_id if meta else ''}",
                "object": "chat.completion",
                "created": created,
                "model": meta.model if meta else data.model,
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": answer.text},
                    "finish_reason": answer.finish.reason.value,
                }],
                "usage": {
                    "prompt_tokens": answer.usage.input_tokens,
                    "completion_tokens": answer.usage.output_tokens,
                    "total_tokens": answer.usage.total_tokens,
                },
                "lumina": {"provider": meta.provider if meta else "", "cost_micros": answer.cost_micros},
            }
        chunks = await stream_chat(tenant_id, chat)
        include_usage = bool(data.stream_options and data.stream_options.include_usage)
        return Stream(_render(chunks, created, data.model, include_usage), media_type="text/event-stream",
                      headers={"cache-control": "no-cache"})


async def _render(chunks: AsyncIterator[Any], created: int, model: str, include_usage: bool) -> AsyncIterator[bytes]:
    base = {"id": "chatcmpl-pending", "object": "chat.completion.chunk", "created": created, "model": model}
    usage: UsageChunk | None = None
    first = True
    try:
        async for chunk in chunks:
            match chunk:
                case TextDelta(text=text):
                    delta: dict[str, Any] = {"content": text}
                    if first:
                        delta["role"] = "assistant"
                        first = False
                    yield _sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]})
                case ToolCallDelta(index=i, id=call_id, name=name, arguments_fragment=frag):
                    call: dict[str, Any] = {"index": i, "function": {"arguments": frag}}
                    if call_id:
                        call["id"], call["type"] = call_id, "function"
                    if name:
                        call["function"]["name"] = name
                    yield _sse({**base, "choices": [{"index": 0, "delta": {"tool_calls": [call]}, "finish_reason": None}]})
                case UsageChunk():
                    usage = chunk
                case Finish(reason=reason, metadata=meta):
                    if meta is not None:
                        base = {**base, "id": f"chatcmpl-{meta.request_id}", "model": meta.model}
                    yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": reason.value}]})
                    if include_usage and usage is not None:
                        u = usage.usage
                        yield _sse({**base, "choices": [], "usage": {
                            "prompt_tokens": u.input_tokens, "completion_tokens": u.output_tokens,
                            "total_tokens": u.total_tokens}})
                case ErrorChunk(code=code, message=message):
                    yield _sse({"error": {"message": message, "type": code, "code": code}})
                    yield _sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": FinishReason.ERROR.value}]})
        yield b"data: [DONE]\n\n"
    finally:
        await chunks.aclose()  # type: ignore[attr-defined]

