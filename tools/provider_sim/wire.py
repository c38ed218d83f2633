"""The subset of the OpenAI wire format (chat completions, embeddings, models) the simulator reads and writes."""

from __future__ import annotations

import msgspec

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "Choice",
    "ChunkChoice",
    "ContentPart",
    "CompletionDetails",
    "Delta",
    "EmbeddingData",
    "EmbeddingList",
    "EmbeddingRequest",
    "EmbeddingUsage",
    "ErrorBody",
    "ErrorEnvelope",
    "FunctionCall",
    "FunctionDef",
    "ImageURL",
    "InToolCall",
    "InMessage",
    "Model",
    "ModelList",
    "NamedToolChoice",
    "OutMessage",
    "PromptDetails",
    "ResponseFormatSpec",
    "ToolDef",
    "ToolCall",
    "Usage",
    "decode_embedding_request",
    "decode_request",
    "encode",
]

# --- request --------------------------------------------------------------------------------


class ImageURL(msgspec.Struct):
    url: str
    detail: str | None = None


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None
    image_url: ImageURL | None = None


class InFunctionCall(msgspec.Struct):
    name: str
    arguments: str = ""


class InToolCall(msgspec.Struct):
    id: str
    function: InFunctionCall
    type: str = "function"


class InMessage(msgspec.Struct):
    role: str
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[InToolCall] | None = None

    def text(self) -> str:
        """The words of this message (image parts count as their URL), for seeds and token counts."""
        c = self.content
        out: list[str] = []
        if isinstance(c, str):
            out.append(c)
        elif c is not None:
            out.extend(p.text if p.text else p.image_url.url[:64] for p in c if p.text or p.image_url)
        for call in self.tool_calls or ():
            out.append(f"{call.function.name} {call.function.arguments}")
        return " ".join(out)

    def images(self) -> list[str]:
        c = self.content
        if c is None or isinstance(c, str):
            return []
        return [p.image_url.url for p in c if p.type == "image_url" and p.image_url is not None]


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class FunctionDef(msgspec.Struct):
    name: str
    description: str | None = None
    parameters: dict[str, object] | None = None
    strict: bool | None = None


class ToolDef(msgspec.Struct):
    function: FunctionDef
    type: str = "function"


class NamedFunction(msgspec.Struct):
    name: str


class NamedToolChoice(msgspec.Struct):
    function: NamedFunction
    type: str = "function"


class JsonSchemaSpec(msgspec.Struct):
    name: str
    schema: dict[str, object] | None = None
    strict: bool | None = None
    description: str | None = None


class ResponseFormatSpec(msgspec.Struct):
    type: str
    json_schema: JsonSchemaSpec | None = None


class ChatCompletionRequest(msgspec.Struct):
    model: str
    messages: list[InMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    tools: list[ToolDef] | None = None
    tool_choice: str | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormatSpec | None = None


_request_decoder = msgspec.json.Decoder(ChatCompletionRequest)


def decode_request(body: bytes) -> ChatCompletionRequest:
    return _request_decoder.decode(body)


# --- responses ------------------------------------------------------------------------------


class PromptDetails(msgspec.Struct):
    cached_tokens: int = 0


class CompletionDetails(msgspec.Struct):
    reasoning_tokens: int = 0


class Usage(msgspec.Struct):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: PromptDetails
    completion_tokens_details: CompletionDetails


class FunctionCall(msgspec.Struct):
    arguments: str
    name: str | msgspec.UnsetType = msgspec.UNSET


class ToolCall(msgspec.Struct):
    function: FunctionCall
    index: int | msgspec.UnsetType = msgspec.UNSET  # stream chunks only
    id: str | msgspec.UnsetType = msgspec.UNSET  # first fragment only
    type: str | msgspec.UnsetType = msgspec.UNSET


class Delta(msgspec.Struct, omit_defaults=True):
    role: str | None = None
    content: str | None = None
    reasoning_content: str | None = None  # DeepSeek's visible reasoning
    tool_calls: list[ToolCall] | None = None


class ChunkChoice(msgspec.Struct):
    index: int
    delta: Delta
    finish_reason: str | None = None
    logprobs: None = None


class ChatCompletionChunk(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[ChunkChoice]
    object: str = "chat.completion.chunk"
    system_fingerprint: str = "fp_sim"
    usage: Usage | None | msgspec.UnsetType = msgspec.UNSET  # null in every chunk when asked for


class OutMessage(msgspec.Struct):
    role: str
    content: str | None
    tool_calls: list[ToolCall] | msgspec.UnsetType = msgspec.UNSET
    reasoning_content: str | msgspec.UnsetType = msgspec.UNSET
    refusal: None = None


class Choice(msgspec.Struct):
    index: int
    message: OutMessage
    finish_reason: str
    logprobs: None = None


class ChatCompletion(msgspec.Struct):
    id: str
    created: int
    model: str
    choices: list[Choice]
    usage: Usage
    object: str = "chat.completion"
    system_fingerprint: str = "fp_sim"


class Model(msgspec.Struct):
    id: str
    created: int = 1_700_000_000
    owned_by: str = "lumina-sim"
    object: str = "model"
    context_window: int = 0


class ModelList(msgspec.Struct):
    data: list[Model]
    object: str = "list"


# --- embeddings -----------------------------------------------------------------------------


class EmbeddingRequest(msgspec.Struct):
    model: str
    input: str | list[str | int | list[int]]
    dimensions: int | None = None
    encoding_format: str = "float"
    user: str | None = None

    def texts(self) -> list[str]:
        """Every input as text (token-id inputs become their ids, space-separated)."""
        value = self.input
        if isinstance(value, str):
            return [value]
        if value and isinstance(value[0], int):
            return [" ".join(str(t) for t in value)]
        return [v if isinstance(v, str) else " ".join(str(t) for t in v) if isinstance(v, list) else str(v) for v in value]


class EmbeddingData(msgspec.Struct):
    index: int
    embedding: list[float] | str  # floats, or base64 of little-endian float32
    object: str = "embedding"


class EmbeddingUsage(msgspec.Struct):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(msgspec.Struct):
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
    object: str = "list"


_embedding_decoder = msgspec.json.Decoder(EmbeddingRequest)


def decode_embedding_request(body: bytes) -> EmbeddingRequest:
    return _embedding_decoder.decode(body)


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


encode = msgspec.json.Encoder().encode
