"""Protobuf messages <-> domain values. Decoding validates; problems carry proto field paths
(``parameters.tools[0].parameters_json: not valid JSON``)."""

from __future__ import annotations

import base64

import msgspec
from lumina.v1 import chat_pb2 as pb

from domain.chat import (
    ChatMessage,
    ChatRequest,
    Chunk,
    ContentPart,
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
_TOOL_MODES = {
    pb.ToolChoice.MODE_AUTO: ToolChoiceMode.AUTO,
    pb.ToolChoice.MODE_NONE: ToolChoiceMode.NONE,
    pb.ToolChoice.MODE_REQUIRED: ToolChoiceMode.REQUIRED,
}
_FORMATS = {
    pb.ResponseFormat.KIND_TEXT: ResponseFormatKind.TEXT,
    pb.ResponseFormat.KIND_JSON_OBJECT: ResponseFormatKind.JSON_OBJECT,
    pb.ResponseFormat.KIND_JSON_SCHEMA: ResponseFormatKind.JSON_SCHEMA,
}
_json_object = msgspec.json.Decoder(dict[str, object])


def _json_field(text: str, path: str, problems: list[FieldViolation]) -> dict[str, object] | None:
    """A JSON object text, or None (with a violation naming ``path``) when it is not one."""
    if not text:
        return None
    try:
        return _json_object.decode(text)
    except msgspec.ValidationError:
        problems.append(FieldViolation(path, "must be a JSON object"))
    except msgspec.DecodeError:
        problems.append(FieldViolation(path, "not valid JSON"))
    return None


def _decode_parts(m: pb.ChatMessage, path: str, problems: list[FieldViolation]) -> tuple[ContentPart, ...]:
    parts: list[ContentPart] = []
    for j, part in enumerate(m.parts):
        match part.WhichOneof("part"):
            case "text":
                parts.append(TextPart(text=part.text))
            case "image":
                img = part.image
                parts.append(
                    ImagePart(
                        url=img.url or None,
                        data=base64.b64encode(img.data).decode("ascii") if img.data else None,
                        media_type=img.media_type or "image/png",
                    )
                )
            case _:
                problems.append(FieldViolation(f"{path}.parts[{j}]", "must set text or image"))
    return tuple(parts)


def _decode_messages(params: pb.ChatParameters, prefix: str, problems: list[FieldViolation]) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    for i, m in enumerate(params.messages):
        path = f"{prefix}.messages[{i}]"
        role = _ROLES.get(m.role)
        if role is None:
            problems.append(FieldViolation(f"{path}.role", "must be one of ROLE_SYSTEM, ROLE_USER, ROLE_ASSISTANT, ROLE_TOOL"))
            continue
        calls = tuple(ToolCall(id=c.id, name=c.name, arguments=c.arguments) for c in m.tool_calls)
        for j, c in enumerate(m.tool_calls):
            if not c.id or not c.name:
                problems.append(FieldViolation(f"{path}.tool_calls[{j}]", "id and name are required"))
            if c.arguments:
                _json_field(c.arguments, f"{path}.tool_calls[{j}].arguments", problems)
        messages.append(
            ChatMessage(
                role=role, content=m.content, name=m.name or None, tool_call_id=m.tool_call_id or None,
                parts=_decode_parts(m, path, problems), tool_calls=calls,
            )
        )
    return messages


def _decode_tools(params: pb.ChatParameters, prefix: str, problems: list[FieldViolation]) -> tuple[Tool, ...]:
    tools: list[Tool] = []
    for i, t in enumerate(params.tools):
        schema = _json_field(t.parameters_json, f"{prefix}.tools[{i}].parameters_json", problems)
        tools.append(Tool(name=t.name, description=t.description, parameters=schema or {}))
    return tuple(tools)


def _decode_tool_choice(params: pb.ChatParameters, prefix: str, problems: list[FieldViolation]) -> ToolChoice | None:
    if not params.HasField("tool_choice"):
        return None
    choice = params.tool_choice
    if choice.name:
        return ToolChoice(name=choice.name)
    if choice.mode == pb.ToolChoice.MODE_UNSPECIFIED:
        return None
    mode = _TOOL_MODES.get(choice.mode)
    if mode is None:
        problems.append(FieldViolation(f"{prefix}.tool_choice.mode", "must be one of MODE_AUTO, MODE_NONE, MODE_REQUIRED"))
        return None
    return ToolChoice(mode=mode)


def _decode_format(params: pb.ChatParameters, prefix: str, problems: list[FieldViolation]) -> ResponseFormat | None:
    if not params.HasField("response_format"):
        return None
    fmt = params.response_format
    if fmt.kind == pb.ResponseFormat.KIND_UNSPECIFIED:
        return None
    kind = _FORMATS.get(fmt.kind)
    if kind is None:
        problems.append(
            FieldViolation(f"{prefix}.response_format.kind", "must be one of KIND_TEXT, KIND_JSON_OBJECT, KIND_JSON_SCHEMA")
        )
        return None
    schema = _json_field(fmt.schema_json, f"{prefix}.response_format.schema_json", problems)
    return ResponseFormat(kind=kind, schema=schema, name=fmt.name or "response", strict=fmt.strict)


# domain field paths that are named differently in the proto
_RENAMED = {"response_format.schema": "response_format.schema_json"}


def _proto_path(field: str) -> str:
    return _RENAMED.get(field, field)


def decode_parameters(params: pb.ChatParameters, prefix: str = "parameters") -> ChatRequest:
    problems: list[FieldViolation] = []
    messages = _decode_messages(params, prefix, problems)
    tools = _decode_tools(params, prefix, problems)
    tool_choice = _decode_tool_choice(params, prefix, problems)
    response_format = _decode_format(params, prefix, problems)
    try:
        request = ChatRequest(
            messages=tuple(messages),
            model=params.model,
            temperature=params.temperature if params.HasField("temperature") else None,
            max_tokens=params.max_tokens if params.HasField("max_tokens") else None,
            conversation_id=params.conversation_id or None,
            top_p=params.top_p if params.HasField("top_p") else None,
            stop=tuple(params.stop),
            seed=params.seed if params.HasField("seed") else None,
            tools=tools,
            tool_choice=tool_choice,
            parallel_tool_calls=params.parallel_tool_calls if params.HasField("parallel_tool_calls") else None,
            response_format=response_format,
            provider=params.provider or None,
            memory=params.memory if params.HasField("memory") else None,
        )
    except InvalidRequest as exc:
        if not messages and problems:  # every message was rejected above; "at least one" adds nothing
            raise InvalidRequest(problems) from None
        problems.extend(FieldViolation(f"{prefix}.{_proto_path(v.field)}", v.description) for v in exc.violations)
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
        requested=meta.requested, strategy=meta.strategy, fallbacks_tried=meta.fallbacks_tried,
        attempts=meta.attempts, stepped_down_from=meta.stepped_down_from, estimate_micros=meta.estimate_micros,
        hedged=meta.hedged, notes=meta.notes,
    )


def encode_chunk(chunk: Chunk) -> pb.StreamCompleteResponse:
    match chunk:
        case TextDelta(text=text):
            return pb.StreamCompleteResponse(text_delta=pb.TextDelta(text=text))
        case ReasoningDelta(text=text):
            return pb.StreamCompleteResponse(reasoning_delta=pb.ReasoningDelta(text=text))
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
