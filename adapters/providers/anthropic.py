"""``ProviderClient`` for Anthropic's Messages API (Claude), through the official ``anthropic`` SDK.

Mapping from the unified request:

- system messages -> ``system`` (joined by blank lines); user messages -> text and image blocks
  (``url`` images as URL sources, ``data`` and ``data:`` URLs as base64 sources); assistant
  ``tool_calls`` -> ``tool_use`` blocks; tool messages -> ``tool_result`` blocks in a user turn.
  Consecutive messages of one role are merged into one turn (tool results first, as required).
- tools -> ``tools`` (``input_schema`` = the parameters), tool choice auto/none/required/name ->
  ``auto``/``none``/``any``/``tool``; ``parallel_tool_calls=False`` -> ``disable_parallel_tool_use``.
- ``stop`` -> ``stop_sequences``; ``max_tokens`` (required by the API) defaults to
  ``default_max_tokens``; ``seed`` has no equivalent and is ignored.
- JSON output: the API has no ``response_format``. A JSON object / JSON-schema request adds a
  tool (named after the format) whose ``input_schema`` is the schema, and forces it (or, when the
  request has tools of its own, requires *some* tool). The input of that tool is streamed back as
  ``TextDelta``s, so callers see plain JSON text exactly as with OpenAI's ``response_format``, and
  the finish reason is ``stop``.
- ``thinking_budget_tokens`` (constructor): asks for extended thinking on every request whose
  ``max_tokens`` exceeds the budget and that forces no tool (the API refuses both); thinking
  arrives as ``ReasoningDelta``s. Temperature and top_p are not sent with thinking (the API
  requires their defaults).

Stream events -> chunks: ``text_delta`` -> ``TextDelta``, ``thinking_delta`` -> ``ReasoningDelta``,
``tool_use`` block start + ``input_json_delta`` -> ``ToolCallDelta`` (``index`` counts tool_use
blocks in order), usage from ``message_start``/``message_delta`` -> one ``UsageChunk``
(``input_tokens`` includes cache reads and writes; ``cached_input_tokens`` =
``cache_read_input_tokens``), ``stop_reason`` -> ``Finish``.

Errors (SDK exception or in-stream ``error`` event) -> domain errors:

    429 / rate_limit_error                     RateLimited(retry_after from retry-after)
    401 / authentication_error                 AuthenticationFailed
    402 (billing), 403 / permission_error      PermissionDenied
    400 "prompt is too long"                   ContextLengthExceeded
    other 4xx / invalid_request_error          UpstreamInvalidRequest
    408, 504, timeouts                         UpstreamTimeout
    503, 529 / overloaded_error                Overloaded
    other 5xx, api_error, connection errors    UpstreamUnavailable

Messages carry the vendor's message with the API key redacted.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import anthropic
import httpx2

from adapters.providers.errors import parse_retry_after, redact
from adapters.providers.transport import sdk_http_client
from adapters.providers.whole import whole_answer_chunks
from domain.chat import (
    ChatMessage,
    ChatRequest,
    Chunk,
    EmbeddingRequest,
    Embeddings,
    Finish,
    FinishReason,
    ImagePart,
    ReasoningDelta,
    ResponseFormat,
    ResponseFormatKind,
    Role,
    TextDelta,
    TextPart,
    Tool,
    ToolCallDelta,
    ToolChoice,
    ToolChoiceMode,
    Usage,
    UsageChunk,
)
from domain.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    InvalidRequest,
    Overloaded,
    PermissionDenied,
    ProviderError,
    RateLimited,
    UpstreamInvalidRequest,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "ANTHROPIC_BASE_URL",
    "AnthropicProvider",
    "to_anthropic_messages",
    "to_anthropic_params",
    "translate_anthropic_error",
]

ANTHROPIC_BASE_URL = "https://api.anthropic.com"

_FINISH = {
    "end_turn": FinishReason.STOP,
    "stop_sequence": FinishReason.STOP,
    "pause_turn": FinishReason.STOP,
    "max_tokens": FinishReason.LENGTH,
    "model_context_window_exceeded": FinishReason.LENGTH,
    "tool_use": FinishReason.TOOL_CALLS,
    "refusal": FinishReason.CONTENT_FILTER,
}
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+);base64,(?P<data>.*)$", re.DOTALL)
_TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]")
_CONTEXT_MARKERS = ("prompt is too long", "context window", "context length")


# --- request mapping --------------------------------------------------------------------------


def _image(part: ImagePart) -> dict[str, Any]:
    if part.url:
        m = _DATA_URL.match(part.url)
        if m is None:
            return {"type": "image", "source": {"type": "url", "url": part.url}}
        return {"type": "image", "source": {"type": "base64", "media_type": m["type"], "data": m["data"]}}
    return {"type": "image", "source": {"type": "base64", "media_type": part.media_type, "data": part.data}}


def _tool_input(arguments: str, where: str) -> dict[str, Any]:
    if not arguments.strip():
        return {}
    try:
        value = json.loads(arguments)
    except ValueError:
        raise InvalidRequest.single(where, "tool call arguments must be a JSON object") from None
    if not isinstance(value, dict):
        raise InvalidRequest.single(where, "tool call arguments must be a JSON object")
    return value


def _blocks(i: int, m: ChatMessage) -> list[dict[str, Any]]:
    if m.role is Role.TOOL:
        return [{"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}]
    blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    for part in m.parts:
        match part:
            case TextPart(text=text):
                blocks.append({"type": "text", "text": text})
            case ImagePart():
                blocks.append(_image(part))
    for j, call in enumerate(m.tool_calls):
        where = f"messages[{i}].tool_calls[{j}].arguments"
        blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": _tool_input(call.arguments, where)})
    return blocks


def to_anthropic_messages(messages: tuple[ChatMessage, ...]) -> tuple[str | None, list[dict[str, Any]]]:
    """``(system, messages)``: system texts joined; consecutive turns of one role merged."""
    system = [m.content for m in messages if m.role is Role.SYSTEM and m.content]
    out: list[dict[str, Any]] = []
    for i, m in enumerate(messages):
        if m.role is Role.SYSTEM:
            continue
        role = "assistant" if m.role is Role.ASSISTANT else "user"
        blocks = _blocks(i, m)
        if not blocks:
            continue  # an empty assistant turn: the API refuses empty content
        if out and out[-1]["role"] == role:
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": role, "content": blocks})
    return ("\n\n".join(system) or None), out


def _tool(tool: Tool) -> dict[str, Any]:
    item: dict[str, Any] = {
        "name": tool.name,
        "input_schema": tool.parameters or {"type": "object", "properties": {}},
    }
    if tool.description:
        item["description"] = tool.description
    return item


def _tool_choice(choice: ToolChoice | None, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None:
        item: dict[str, Any] | None = {"type": "auto"} if parallel is False else None
    elif choice.name is not None:
        item = {"type": "tool", "name": choice.name}
    elif choice.mode is ToolChoiceMode.NONE:
        return {"type": "none"}
    elif choice.mode is ToolChoiceMode.REQUIRED:
        item = {"type": "any"}
    else:
        item = {"type": "auto"}
    if item is not None and parallel is False:
        item["disable_parallel_tool_use"] = True
    return item


def _json_tool(fmt: ResponseFormat, taken: set[str]) -> dict[str, Any]:
    name = _TOOL_NAME.sub("_", fmt.name)[:56] or "response"
    while name in taken:
        name = f"{name}_json"[-64:]
    schema = fmt.schema if fmt.kind is ResponseFormatKind.JSON_SCHEMA and fmt.schema else {"type": "object"}
    return {"name": name, "description": "Answer with a JSON value passed as this tool's input.", "input_schema": schema}


def to_anthropic_params(
    upstream_model: str,
    request: ChatRequest,
    *,
    default_max_tokens: int = 4096,
    thinking_budget_tokens: int | None = None,
) -> tuple[dict[str, Any], str | None]:
    """``(params for messages.create, name of the JSON-output tool or None)``."""
    system, messages = to_anthropic_messages(request.messages)
    max_tokens = request.max_tokens or default_max_tokens
    params: dict[str, Any] = {"model": upstream_model, "messages": messages, "max_tokens": max_tokens, "stream": True}
    if system:
        params["system"] = system
    tools = [_tool(t) for t in request.tools]
    choice = _tool_choice(request.tool_choice, request.parallel_tool_calls)
    json_tool: str | None = None
    fmt = request.response_format
    if fmt is not None and fmt.kind is not ResponseFormatKind.TEXT:
        spec = _json_tool(fmt, {t.name for t in request.tools})
        json_tool = spec["name"]
        forced = {"type": "tool", "name": json_tool} if not tools else {"type": "any"}
        if choice is None or choice["type"] in ("auto", "none"):
            choice = forced
        tools.append(spec)
    if tools:
        params["tools"] = tools
    if choice is not None and tools:
        params["tool_choice"] = choice
    forcing = choice is not None and choice["type"] in ("any", "tool")
    thinking = thinking_budget_tokens is not None and max_tokens > thinking_budget_tokens and not forcing
    if thinking:
        params["thinking"] = {"type": "enabled", "budget_tokens": thinking_budget_tokens}
    else:
        # sampling knobs travel in the body: this SDK's signature no longer lists them
        sampling: dict[str, float] = {}
        if request.temperature is not None:
            sampling["temperature"] = min(request.temperature, 1.0)  # the API's range is 0..1
        if request.top_p is not None:
            sampling["top_p"] = request.top_p
        if sampling:
            params["extra_body"] = sampling
    if request.stop:
        params["stop_sequences"] = list(request.stop)
    return params, json_tool


# --- errors -----------------------------------------------------------------------------------


def _body_error(body: object) -> tuple[str, str]:
    """(type, message) of an Anthropic error body, or empty strings."""
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict):
            return str(err.get("type") or ""), str(err.get("message") or "")
    return "", ""


def translate_anthropic_error(exc: BaseException, *, provider: str, secret: str = "") -> ProviderError:
    """The domain error for an SDK (or transport) exception; the caller raises it ``from exc``."""
    if isinstance(exc, (anthropic.APITimeoutError, httpx2.TimeoutException)):
        return UpstreamTimeout("request timed out", provider=provider)
    if isinstance(exc, (anthropic.APIConnectionError, httpx2.TransportError)):
        return UpstreamUnavailable("connection error", provider=provider)
    if not isinstance(exc, anthropic.APIStatusError):
        return UpstreamUnavailable(f"client error: {type(exc).__name__}", provider=provider)
    etype, vendor = _body_error(exc.body)
    message = redact(vendor or exc.message or type(exc).__name__, secret)
    status = exc.status_code
    text = f"HTTP {status}: {message}" if status >= 400 else f"stream error: {message}"
    context = any(marker in message.lower() for marker in _CONTEXT_MARKERS)
    if status == 429 or etype == "rate_limit_error":
        retry_after = parse_retry_after(exc.response.headers) if status == 429 else None
        return RateLimited(text, provider=provider, retry_after=retry_after)
    if status == 401 or etype == "authentication_error":
        return AuthenticationFailed(text, provider=provider)
    if status in (402, 403) or etype in ("permission_error", "billing_error"):
        return PermissionDenied(text, provider=provider)
    if status in (503, 529) or etype == "overloaded_error":
        return Overloaded(text, provider=provider)
    if status in (408, 504) or etype == "timeout_error":
        return UpstreamTimeout(text, provider=provider)
    if (status == 400 or etype in ("invalid_request_error", "request_too_large")) and context:
        return ContextLengthExceeded(text, provider=provider)
    if 400 <= status < 500 or etype in ("invalid_request_error", "not_found_error", "request_too_large"):
        return UpstreamInvalidRequest(text, provider=provider)
    return UpstreamUnavailable(text, provider=provider)


# --- the provider -----------------------------------------------------------------------------


class _Blocks:
    """Per-stream state: what each content block index is."""

    __slots__ = ("json_tool", "kinds", "tool_index", "tools_called")

    def __init__(self, json_tool: str | None) -> None:
        self.json_tool = json_tool
        self.kinds: dict[int, str] = {}  # block index -> "text" | "thinking" | "tool" | "json" | other
        self.tool_index: dict[int, int] = {}  # block index -> ToolCallDelta.index
        self.tools_called = 0


class AnthropicProvider:
    """One configured Anthropic provider; one SDK client (and connection pool) per instance,
    closed by ``aclose``; its HTTP client sends through aiohttp (``AiohttpTransport``). SDK
    retries are off: retrying is the application's call.

    ``base_url`` is the API root (``https://api.anthropic.com`` by default); a trailing ``/v1`` is
    dropped, so the simulator's ``http://host:port/v1`` works as is.
    """

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        default_headers: Mapping[str, str] | None = None,
        default_max_tokens: int = 4096,
        thinking_budget_tokens: int | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self.name = name
        self._api_key = api_key
        self._default_max_tokens = default_max_tokens
        self._thinking_budget = thinking_budget_tokens
        root = (base_url or ANTHROPIC_BASE_URL).rstrip("/").removesuffix("/v1")
        self._client = anthropic.AsyncAnthropic(
            api_key=api_key,
            base_url=root,
            timeout=timeout,
            max_retries=0,
            default_headers=dict(default_headers) if default_headers else None,
            http_client=sdk_http_client(anthropic.DefaultAsyncHttpxClient, connect_timeout=connect_timeout),
        )

    def __repr__(self) -> str:  # never shows the key
        return f"AnthropicProvider(name={self.name!r}, base_url={str(self._client.base_url)!r})"

    async def aclose(self) -> None:
        await self._client.close()

    async def embed(self, upstream_model: str, request: EmbeddingRequest) -> Embeddings:
        raise UpstreamInvalidRequest("anthropic offers no embeddings", provider=self.name)

    def _error(self, exc: BaseException) -> ProviderError:
        return translate_anthropic_error(exc, provider=self.name, secret=self._api_key)

    def _params(self, upstream_model: str, request: ChatRequest, *, stream: bool) -> tuple[dict[str, Any], str | None]:
        params, json_tool = to_anthropic_params(
            upstream_model, request, default_max_tokens=self._default_max_tokens,
            thinking_budget_tokens=self._thinking_budget,
        )
        params["stream"] = stream
        return params, json_tool

    async def _create(self, params: dict[str, Any]) -> Any:
        """``messages.create``: an event stream (``stream`` true) or a whole ``Message``."""
        try:
            return await self._client.messages.create(**params)
        except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
            raise self._error(exc) from exc
        except json.JSONDecodeError as exc:  # a whole answer whose body is not JSON
            raise UpstreamUnavailable("malformed response from the provider", provider=self.name) from exc

    async def stream(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        """Deltas as they come, then one ``UsageChunk`` and one ``Finish``. ``aclose()`` on the
        iterator closes the upstream response."""
        params, json_tool = self._params(upstream_model, request, stream=True)
        upstream = await self._create(params)
        blocks = _Blocks(json_tool)
        stop_reason: str | None = None
        counts = _counts()
        async with upstream:  # closes the HTTP response however this generator ends
            while True:
                try:
                    event = await anext(upstream)
                except StopAsyncIteration:
                    break
                except (anthropic.AnthropicError, httpx2.HTTPError) as exc:
                    raise self._error(exc) from exc
                except ValueError as exc:  # an event whose data is not JSON (json.JSONDecodeError)
                    raise UpstreamUnavailable("malformed stream event from the provider", provider=self.name) from exc
                match event.type:
                    case "message_start":
                        _count(counts, event.message.usage)
                    case "content_block_start":
                        for chunk in _block_start(blocks, event.index, event.content_block):
                            yield chunk
                    case "content_block_delta":
                        chunk = _block_delta(blocks, event.index, event.delta)
                        if chunk is not None:
                            yield chunk
                    case "message_delta":
                        stop_reason = event.delta.stop_reason or stop_reason
                        _count(counts, event.usage)
        if stop_reason is None:
            raise UpstreamUnavailable("stream ended without a stop reason", provider=self.name)
        for chunk in _ending(counts, stop_reason, blocks):
            yield chunk

    async def complete(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        """The whole answer from one non-streaming ``messages.create``, as the chunks ``stream``
        would give: the thinking and the text (the JSON-output tool's input) each in one delta,
        each tool call in one ``ToolCallDelta``, then one ``UsageChunk`` and one ``Finish``."""
        params, json_tool = self._params(upstream_model, request, stream=False)
        message = await self._create(params)
        if not isinstance(message, anthropic.types.Message):  # the SDK hands over a non-JSON body as text
            raise UpstreamUnavailable("malformed response from the provider", provider=self.name)
        blocks = _Blocks(json_tool)
        content = [c for i, block in enumerate(message.content or ()) for c in _block_start(blocks, i, block, whole=True)]
        for chunk in whole_answer_chunks(content):
            yield chunk
        if message.stop_reason is None:
            raise UpstreamUnavailable("message without a stop reason", provider=self.name)
        counts = _counts()
        _count(counts, message.usage)
        for chunk in _ending(counts, message.stop_reason, blocks):
            yield chunk


def _counts() -> dict[str, int]:
    return {"input": 0, "output": 0, "cache_read": 0, "cache_write": 0, "thinking": 0}


def _ending(counts: dict[str, int], stop_reason: str, blocks: _Blocks) -> tuple[UsageChunk, Finish]:
    """The closing ``UsageChunk`` (input includes cache reads and writes) and ``Finish``."""
    usage = Usage(
        input_tokens=counts["input"] + counts["cache_read"] + counts["cache_write"],
        output_tokens=counts["output"],
        cached_input_tokens=counts["cache_read"],
        reasoning_tokens=counts["thinking"],
    )
    finish = _FINISH.get(stop_reason, FinishReason.STOP)
    if finish is FinishReason.TOOL_CALLS and blocks.tools_called == 0:
        finish = FinishReason.STOP  # only the JSON-output tool was called: a plain answer
    return UsageChunk(usage=usage), Finish(reason=finish)


def _count(counts: dict[str, int], usage: Any) -> None:
    """Usage numbers are cumulative: later events override earlier ones where present."""
    for key, attr in (("input", "input_tokens"), ("output", "output_tokens"),
                      ("cache_read", "cache_read_input_tokens"), ("cache_write", "cache_creation_input_tokens")):
        value = getattr(usage, attr, None)
        if value is not None:
            counts[key] = value
    details = getattr(usage, "output_tokens_details", None)
    if details is not None and getattr(details, "thinking_tokens", None) is not None:
        counts["thinking"] = details.thinking_tokens


def _block_start(blocks: _Blocks, index: int, block: Any, *, whole: bool = False) -> list[Chunk]:
    """The chunks a content block opens with; ``whole`` (a non-streamed ``Message``): with its
    tool input too, as compact JSON (the JSON-output tool's input as text)."""
    kind = block.type
    if kind == "text":
        blocks.kinds[index] = "text"
        return [TextDelta(text=block.text)] if block.text else []
    if kind == "thinking":
        blocks.kinds[index] = "thinking"
        return [ReasoningDelta(text=block.thinking)] if block.thinking else []
    if kind == "tool_use":
        arguments = _compact_json(block.input) if whole else ""
        if block.name == blocks.json_tool:
            blocks.kinds[index] = "json"
            return [TextDelta(text=arguments)] if arguments else []
        blocks.kinds[index] = "tool"
        position = blocks.tool_index[index] = blocks.tools_called
        blocks.tools_called += 1
        return [ToolCallDelta(index=position, id=block.id, name=block.name, arguments_fragment=arguments)]
    blocks.kinds[index] = kind  # redacted thinking, server tools: nothing to relay
    return []


def _block_delta(blocks: _Blocks, index: int, delta: Any) -> Chunk | None:
    kind = delta.type
    if kind == "text_delta":
        return TextDelta(text=delta.text) if delta.text else None
    if kind == "thinking_delta":
        return ReasoningDelta(text=delta.thinking) if delta.thinking else None
    if kind == "input_json_delta" and delta.partial_json:
        owner = blocks.kinds.get(index)
        if owner == "json":
            return TextDelta(text=delta.partial_json)
        if owner == "tool":
            return ToolCallDelta(index=blocks.tool_index[index], arguments_fragment=delta.partial_json)
    return None


def _compact_json(value: Any) -> str:
    """A tool's input as the API streams it: compact JSON, non-ASCII as is."""
    return json.dumps(value if value is not None else {}, separators=(",", ":"), ensure_ascii=False)
