"""Chat requests and the unified streaming protocol every provider adapter produces."""

from __future__ import annotations

import enum

import msgspec

from domain.errors import FieldViolation, InvalidRequest

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "Chunk",
    "ErrorChunk",
    "Finish",
    "FinishReason",
    "ResponseMetadata",
    "Role",
    "TextDelta",
    "ToolCallDelta",
    "Usage",
    "UsageChunk",
]

MAX_MESSAGES = 10_000
MAX_TOKENS_LIMIT = 1_000_000


class Role(enum.StrEnum):
    SYSTEM = "system"
    USER = "user"
    ASSISTANT = "assistant"
    TOOL = "tool"


class FinishReason(enum.StrEnum):
    STOP = "stop"
    LENGTH = "length"
    TOOL_CALLS = "tool_calls"
    CONTENT_FILTER = "content_filter"
    ERROR = "error"


class ChatMessage(msgspec.Struct, frozen=True):
    role: Role
    content: str
    name: str | None = None
    tool_call_id: str | None = None


class ChatRequest(msgspec.Struct, frozen=True):
    """A provider-neutral chat completion request. Validates itself on construction."""

    messages: tuple[ChatMessage, ...]
    model: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    conversation_id: str | None = None

    def __post_init__(self) -> None:
        problems: list[FieldViolation] = []
        if not self.messages:
            problems.append(FieldViolation("messages", "at least one message is required"))
        elif len(self.messages) > MAX_MESSAGES:
            problems.append(FieldViolation("messages", f"at most {MAX_MESSAGES} messages"))
        for i, m in enumerate(self.messages):
            if m.role is Role.TOOL and not m.tool_call_id:
                problems.append(FieldViolation(f"messages[{i}].tool_call_id", "required for tool messages"))
            if not m.content and m.role is not Role.ASSISTANT:
                problems.append(FieldViolation(f"messages[{i}].content", "must not be empty"))
        if self.temperature is not None and not (0.0 <= self.temperature <= 2.0):
            problems.append(FieldViolation("temperature", "must be between 0 and 2"))
        if self.max_tokens is not None and not (1 <= self.max_tokens <= MAX_TOKENS_LIMIT):
            problems.append(FieldViolation("max_tokens", f"must be between 1 and {MAX_TOKENS_LIMIT}"))
        if len(self.model) > 256:
            problems.append(FieldViolation("model", "at most 256 characters"))
        if problems:
            raise InvalidRequest(problems)


class Usage(msgspec.Struct, frozen=True):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class ResponseMetadata(msgspec.Struct, frozen=True):
    request_id: str
    provider: str
    model: str
    latency_ms: int
    cost_micros: int
    provider_label: str = ""


# --- the unified chunk union -------------------------------------------------------------


class TextDelta(msgspec.Struct, frozen=True, tag="text"):
    text: str


class ToolCallDelta(msgspec.Struct, frozen=True, tag="tool_call"):
    index: int
    id: str | None = None
    name: str | None = None
    arguments_fragment: str = ""


class UsageChunk(msgspec.Struct, frozen=True, tag="usage"):
    usage: Usage
    cost_micros: int = 0


class Finish(msgspec.Struct, frozen=True, tag="finish"):
    reason: FinishReason
    metadata: ResponseMetadata | None = None


class ErrorChunk(msgspec.Struct, frozen=True, tag="error"):
    code: str
    message: str
    retryable: bool = False


Chunk = TextDelta | ToolCallDelta | UsageChunk | Finish | ErrorChunk
