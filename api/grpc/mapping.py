"""Protobuf messages <-> domain values. Decoding validates; problems carry proto field paths."""

from __future__ import annotations

from lumina.v1 import chat_pb2 as pb

from domain.chat import (
    ChatMessage,
    ChatRequest,
    Chunk,
    ErrorChunk,
    Finish,
    FinishReason,
    ResponseMetadata,
    Role,
    TextDelta,
    ToolCallDelta,
    UsageChunk,
)
from domain.errors import FieldViolation, InvalidRequest

__all__ = ["decode_parameters", "encode_chunk", "encode_finish_reason", "encode_metadata"]

_ROLES = {pb.ROLE_SYSTEM: Role.SYSTEM, pb.ROLE_USER: Role.USER, pb.ROLE_ASSISTANT: Role.ASSISTANT, pb.ROLE_TOOL: Role.TOOL}
_FINISH = {
    FinishReason.STOP: pb.FINISH_REASON_STOP,
    FinishReason.LENGTH: pb.FINISH_REASON_LENGTH,
    FinishReason.TOOL_CALLS: pb.FINISH_REASON_TOOL_CALLS,
    FinishReason.CONTENT_FILTER: pb.FINISH_REASON_CONTENT_FILTER,
    FinishReason.ERROR: pb.FINISH_REASON_ERROR,
}


def decode_parameters(params: pb.ChatParameters, prefix: str = "parameters") -> ChatRequest:
    problems: list[FieldViolation] = []
    messages: list[ChatMessage] = []
    for i, m in enumerate(params.messages):
        role = _ROLES.get(m.role)
        if role is None:
            problems.append(FieldViolation(f"{prefix}.messages[{i}].role", "must be one of ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL"))
            continue
        messages.append(ChatMessage(role=role, content=m.content, name=m.name or None, tool_call_id=m.tool_call_id or None))
    try:
        request = ChatRequest(
            messages=tuple(messages),
            model=params.model,
            temperature=params.temperature if params.HasField("temperature") else None,
            max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
            conversation_id=params.conversation_id or None,
        )
    except InvalidRequest as exc:
        problems.extend(FieldViolation(f"{prefix}.{v.field}", v.description) for v in exc.violations)
        raise InvalidRequest(problems) from None
    if problems:
        raise InvalidRequest(problems)
    return request


def encode_finish_reason(reason: FinishReason) -> int:
    return _FINISH.get(reason, pb.FINISH_REASON_UNSPECIFIED)


def encode_metadata(meta: ResponseMetadata | None) -> pb.ResponseMetadata | None:
    if meta is None:
        return None
    return pb.ResponseMetadata(
        request_id=meta.request_id, provider=meta.provider, model=meta.model,
        latency_ms=meta.latency_ms, cost_micros=meta.cost_micros, provider_label=meta.provider_label,
    )


def encode_chunk(chunk: Chunk) -> pb.StreamCompleteResponse:
    match chunk:
        case TextDelta(text=text):
            return pb.StreamCompleteResponse(text_delta=pb.TextDelta(text=text))
        case ToolCallDelta(index=index, id=call_id, name=name, arguments_fragment=fragment):
            return pb.StreamCompleteResponse(
                tool_call_delta=pb.ToolCallDelta(index=index, id=call_id or "", name=name or "", arguments_fragment=fragment)
            )
        case UsageChunk(usage=u, cost_micros=cost):
            return pb.StreamCompleteResponse(
                usage=pb.Usage(
                    input_tokens=u.input_tokens, output_tokens=u.output_tokens,
                    cached_input_tokens=u.cached_input_tokens, reasoning_tokens=u.reasoning_tokens, cost_micros=cost,
                )
            )
        case Finish(reason=reason, metadata=meta):
            return pb.StreamCompleteResponse(finish=pb.Finish(reason=encode_finish_reason(reason), metadata=encode_metadata(meta)))
        case ErrorChunk(code=code, message=message, retryable=retryable):
            return pb.StreamCompleteResponse(error=pb.StreamError(code=code, message=message, retryable=retryable))
    raise TypeError(f"unknown chunk {chunk!r}")
