"""The subset of the OpenAI chat-completions wire format the simulator reads and writes."""

from __future__ import annotations

import msgspec

__all__ = [
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "Choice",
    "ChunkChoice",
    "CompletionDetails",
    "Delta",
    "ErrorBody",
    "ErrorEnvelope",
    "FunctionCall",
    "InMessage",
    "Model",
    "ModelList",
    "OutMessage",
    "PromptDetails",
    "ToolCall",
    "Usage",
    "decode_request",
    "encode",
]

# --- request --------------------------------------------------------------------------------


class ContentPart(msgspec.Struct):
    type: str
    text: str | None = None


class InMessage(msgspec.Struct):
    role: str
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        c = self.content
        if c is None:
            return ""
        if isinstance(c, str):
            return c
        return " ".join(p.text for p in c if p.text)


class StreamOptions(msgspec.Struct):
    include_usage: bool = False


class ChatCompletionRequest(msgspec.Struct):
    model: str
    messages: list[InMessage]
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None


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


class ErrorBody(msgspec.Struct):
    message: str
    type: str
    code: str | None = None
    param: str | None = None


class ErrorEnvelope(msgspec.Struct):
    error: ErrorBody


encode = msgspec.json.Encoder().encode
