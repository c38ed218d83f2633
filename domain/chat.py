"""Chat requests and the unified streaming protocol every provider adapter produces."""

from __future__ import annotations

import enum

import msgspec

from domain.errors import FieldViolation, InvalidRequest

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "Chunk",
    "ContentPart",
    "EmbeddingRequest",
    "Embeddings",
    "ErrorChunk",
    "Finish",
    "FinishReason",
    "ImagePart",
    "ReasoningDelta",
    "ResponseFormat",
    "ResponseFormatKind",
    "ResponseMetadata",
    "Role",
    "TextDelta",
    "TextPart",
    "Tool",
    "ToolCall",
    "ToolCallDelta",
    "ToolChoice",
    "ToolChoiceMode",
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


class ImagePart(msgspec.Struct, frozen=True, tag="image"):
    """An image given by URL (``https://...``) or inline as base64 ``data`` with its media type."""

    url: str | None = None
    data: str | None = None
    media_type: str = "image/png"


class TextPart(msgspec.Struct, frozen=True, tag="text"):
    text: str


ContentPart = TextPart | ImagePart


class ToolCall(msgspec.Struct, frozen=True):
    """A complete tool call the assistant made; ``arguments`` is a JSON text."""

    id: str
    name: str
    arguments: str


class Tool(msgspec.Struct, frozen=True):
    """A function the model may call; ``parameters`` is a JSON Schema object."""

    name: str
    description: str = ""
    parameters: dict[str, object] = msgspec.field(default_factory=dict)


class ToolChoiceMode(enum.StrEnum):
    AUTO = "auto"
    NONE = "none"
    REQUIRED = "required"


class ToolChoice(msgspec.Struct, frozen=True):
    """``mode`` auto/none/required, or ``name`` to force one tool."""

    mode: ToolChoiceMode = ToolChoiceMode.AUTO
    name: str | None = None


class ResponseFormatKind(enum.StrEnum):
    TEXT = "text"
    JSON_OBJECT = "json_object"
    JSON_SCHEMA = "json_schema"


class ResponseFormat(msgspec.Struct, frozen=True):
    kind: ResponseFormatKind = ResponseFormatKind.TEXT
    schema: dict[str, object] | None = None
    name: str = "response"
    strict: bool = False


class ChatMessage(msgspec.Struct, frozen=True):
    """One message. ``content`` is text; ``parts`` adds images (and more text) for user messages;
    assistant messages may carry ``tool_calls``; tool messages answer ``tool_call_id``."""

    role: Role
    content: str
    name: str | None = None
    tool_call_id: str | None = None
    parts: tuple[ContentPart, ...] = ()
    tool_calls: tuple[ToolCall, ...] = ()


class ChatRequest(msgspec.Struct, frozen=True):
    """A provider-neutral chat completion request. Validates itself on construction."""

    messages: tuple[ChatMessage, ...]
    model: str = ""
    temperature: float | None = None
    max_tokens: int | None = None
    conversation_id: str | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    tools: tuple[Tool, ...] = ()
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    # a per-request hint: serve with this provider when it offers the model
    provider: str | None = None
    # long-term memory for this request (recall before, remember after): None = the tenant's default
    memory: bool | None = None

    def __post_init__(self) -> None:
        problems: list[FieldViolation] = []
        if not self.messages:
            problems.append(FieldViolation("messages", "at least one message is required"))
        elif len(self.messages) > MAX_MESSAGES:
            problems.append(FieldViolation("messages", f"at most {MAX_MESSAGES} messages"))
        for i, m in enumerate(self.messages):
            if m.role is Role.TOOL and not m.tool_call_id:
                problems.append(FieldViolation(f"messages[{i}].tool_call_id", "required for tool messages"))
            if not m.content and not m.parts and m.role is not Role.ASSISTANT:
                problems.append(FieldViolation(f"messages[{i}].content", "must not be empty"))
            if m.tool_calls and m.role is not Role.ASSISTANT:
                problems.append(FieldViolation(f"messages[{i}].tool_calls", "only assistant messages carry tool calls"))
            for j, part in enumerate(m.parts):
                if isinstance(part, ImagePart) and not (part.url or part.data):
                    problems.append(FieldViolation(f"messages[{i}].parts[{j}]", "an image needs a url or data"))
        if self.temperature is not None and not (0.0 <= self.temperature <= 2.0):
            problems.append(FieldViolation("temperature", "must be between 0 and 2"))
        if self.max_tokens is not None and not (1 <= self.max_tokens <= MAX_TOKENS_LIMIT):
            problems.append(FieldViolation("max_tokens", f"must be between 1 and {MAX_TOKENS_LIMIT}"))
        if len(self.model) > 256:
            problems.append(FieldViolation("model", "at most 256 characters"))
        if self.top_p is not None and not (0.0 < self.top_p <= 1.0):
            problems.append(FieldViolation("top_p", "must be greater than 0 and at most 1"))
        if len(self.stop) > 4:
            problems.append(FieldViolation("stop", "at most 4 stop sequences"))
        names = [t.name for t in self.tools]
        for i, tool in enumerate(self.tools):
            if not tool.name or len(tool.name) > 64 or not all(c.isalnum() or c in "_-" for c in tool.name):
                problems.append(FieldViolation(f"tools[{i}].name", "1-64 letters, digits, '_' or '-'"))
        if len(set(names)) != len(names):
            problems.append(FieldViolation("tools", "tool names must be unique"))
        if self.tool_choice is not None and self.tool_choice.name is not None and self.tool_choice.name not in names:
            problems.append(FieldViolation("tool_choice.name", "names no tool of this request"))
        if self.tool_choice is not None and self.tool_choice.mode is ToolChoiceMode.REQUIRED and not self.tools:
            problems.append(FieldViolation("tool_choice", "'required' needs at least one tool"))
        fmt = self.response_format
        if fmt is not None and fmt.kind is ResponseFormatKind.JSON_SCHEMA and not fmt.schema:
            problems.append(FieldViolation("response_format.schema", "required for json_schema output"))
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
    """Which provider and model served a request, what it cost, and how it was routed:
    ``requested`` (the model, alias or group asked for; '' the default) and the ``strategy`` that
    ranked the candidates; ``fallbacks_tried``: the models that failed before this one served, in
    order; ``attempts``: provider calls made (retries and fallbacks included); ``stepped_down_from``:
    the model cost-aware routing replaced (else ''); ``estimate_micros``: the pre-call estimate
    (the budget reservation when budgets apply); ``hedged``: a hedged second request won;
    ``notes``: what chat hooks added (e.g. memories recalled)."""

    request_id: str
    provider: str
    model: str
    latency_ms: int
    cost_micros: int
    provider_label: str = ""
    requested: str = ""
    strategy: str = ""
    fallbacks_tried: tuple[str, ...] = ()
    attempts: int = 1
    stepped_down_from: str = ""
    estimate_micros: int = 0
    hedged: bool = False
    notes: dict[str, str] = {}


# --- the unified chunk union -------------------------------------------------------------


class TextDelta(msgspec.Struct, frozen=True, tag="text"):
    text: str


class ReasoningDelta(msgspec.Struct, frozen=True, tag="reasoning"):
    """A fragment of the model's visible reasoning (e.g. DeepSeek ``reasoning_content``,
    Anthropic thinking, Gemini thoughts)."""

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


Chunk = TextDelta | ReasoningDelta | ToolCallDelta | UsageChunk | Finish | ErrorChunk


# --- embeddings ----------------------------------------------------------------------------


class EmbeddingRequest(msgspec.Struct, frozen=True):
    inputs: tuple[str, ...]
    model: str = ""
    dimensions: int | None = None

    def __post_init__(self) -> None:
        if not self.inputs:
            raise InvalidRequest.single("input", "at least one input is required")
        if len(self.inputs) > 2048:
            raise InvalidRequest.single("input", "at most 2048 inputs per request")
        if self.dimensions is not None and self.dimensions < 1:
            raise InvalidRequest.single("dimensions", "must be positive")


class Embeddings(msgspec.Struct, frozen=True):
    vectors: tuple[tuple[float, ...], ...]
    input_tokens: int = 0
