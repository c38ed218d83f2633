"""``ProviderClient`` for Google Gemini (the Gemini Developer API), through the ``google-genai`` SDK.

Requests: system messages become ``system_instruction``; user/assistant messages become contents
with roles ``user``/``model`` (consecutive ones of a role merged into one turn); images become
``inline_data`` (base64 or ``data:`` URLs) or ``file_data`` (other URLs) parts; assistant tool calls
become ``function_call`` parts and tool messages ``function_response`` parts (named after the
earlier assistant call with the same id); tools become ``function_declarations`` with JSON Schema
parameters; JSON output sets ``response_mime_type`` (+ ``response_json_schema``).

Stream: Gemini sends whole function calls, so each one is a single ``ToolCallDelta`` with the id
``call_<index>`` (unless Gemini gave one), its name and its JSON arguments; ``thought`` parts are
``ReasoningDelta``s. Error table (``google.genai.errors.APIError`` by HTTP code / RPC status):

    429 RESOURCE_EXHAUSTED                    RateLimited(retry_after: retry-after, else RetryInfo)
    401 UNAUTHENTICATED, 400 API_KEY_INVALID  AuthenticationFailed
    403 PERMISSION_DENIED                     PermissionDenied
    400 "input token count ... exceeds"       ContextLengthExceeded
    other 4xx (400, 404, 413, ...)            UpstreamInvalidRequest
    408, 504 DEADLINE_EXCEEDED                UpstreamTimeout
    503 UNAVAILABLE, 529                      Overloaded
    other 5xx                                 UpstreamUnavailable
    httpx timeouts / other transport errors   UpstreamTimeout / UpstreamUnavailable

Messages carry Google's message (never the raw body), with the API key redacted.
"""

from __future__ import annotations

import base64
import binascii
import contextvars
import json
import re
from collections.abc import AsyncIterator, Mapping
from typing import Any

import httpx
import httpx2
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from adapters.providers.errors import parse_retry_after, redact
from adapters.providers.transport import aiohttp_client_args
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
    ResponseFormatKind,
    Role,
    TextDelta,
    TextPart,
    ToolCallDelta,
    ToolChoiceMode,
    Usage,
    UsageChunk,
)
from domain.errors import (
    AuthenticationFailed,
    ContextLengthExceeded,
    Overloaded,
    PermissionDenied,
    ProviderError,
    RateLimited,
    UpstreamInvalidRequest,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "GEMINI_BASE_URL",
    "GeminiProvider",
    "to_contents",
    "to_finish",
    "to_generate_config",
    "to_usage",
    "translate_gemini_error",
]

GEMINI_BASE_URL = "https://generativelanguage.googleapis.com/"
EMBED_BATCH = 100  # batchEmbedContents takes at most 100 requests

_FILTERED = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "PROHIBITED_CONTENT",
        "BLOCKLIST",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)
_ERRORED = frozenset({"MALFORMED_FUNCTION_CALL", "MALFORMED_RESPONSE", "MISSING_THOUGHT_SIGNATURE"})
_CONTEXT = re.compile(r"input token count|exceeds the maximum number of tokens|too many tokens", re.IGNORECASE)
_DATA_URL = re.compile(r"^data:(?P<type>[\w.+-]+/[\w.+-]+)?(?:;[\w=-]+)*;base64,(?P<data>.*)$", re.DOTALL)

# The HTTP responses opened while a stream sends its request (an httpx event hook appends them),
# so that closing the stream closes its response at once rather than when the SDK's nested
# generators are garbage-collected.
_opened: contextvars.ContextVar[list[Any] | None] = contextvars.ContextVar("gemini_opened", default=None)


async def _track_response(response: Any) -> None:
    opened = _opened.get()
    if opened is not None:
        opened.append(response)


# --- request mapping ------------------------------------------------------------------------------


def _image_part(part: ImagePart) -> types.Part:
    if part.data is not None:
        try:
            raw = base64.b64decode(part.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise UpstreamInvalidRequest("an image's data is not valid base64") from exc
        return types.Part(inline_data=types.Blob(data=raw, mime_type=part.media_type))
    url = part.url or ""
    match = _DATA_URL.match(url)
    if match:
        try:
            raw = base64.b64decode(match["data"], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise UpstreamInvalidRequest("an image data: URL is not valid base64") from exc
        return types.Part(inline_data=types.Blob(data=raw, mime_type=match["type"] or part.media_type))
    return types.Part(file_data=types.FileData(file_uri=url, mime_type=part.media_type))


def _arguments(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text else {}
    except json.JSONDecodeError:
        return {"arguments": text}
    return value if isinstance(value, dict) else {"value": value}


def _tool_output(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return {"output": text}
    return value if isinstance(value, dict) else {"output": value}


def _message_parts(m: ChatMessage) -> list[types.Part]:
    parts: list[types.Part] = []
    if m.content:
        parts.append(types.Part(text=m.content))
    for part in m.parts:
        if isinstance(part, TextPart):
            parts.append(types.Part(text=part.text))
        else:
            parts.append(_image_part(part))
    return parts


def to_contents(messages: tuple[ChatMessage, ...]) -> tuple[types.Content | None, list[types.Content]]:
    """``(system_instruction, contents)`` for ``messages``."""
    system: list[types.Part] = []
    contents: list[types.Content] = []
    call_names: dict[str, str] = {}
    for i, m in enumerate(messages):
        if m.role is Role.SYSTEM:
            system.extend(_message_parts(m))
            continue
        if m.role is Role.TOOL:
            name = call_names.get(m.tool_call_id or "") or m.name
            if not name:
                raise UpstreamInvalidRequest(
                    f"messages[{i}]: tool_call_id {m.tool_call_id!r} answers no earlier tool call"
                )
            response = types.FunctionResponse(name=name, response=_tool_output(m.content))
            role, parts = "user", [types.Part(function_response=response)]
        else:
            role = "model" if m.role is Role.ASSISTANT else "user"
            parts = _message_parts(m)
            for call in m.tool_calls:
                call_names[call.id] = call.name
                parts.append(
                    types.Part(function_call=types.FunctionCall(name=call.name, args=_arguments(call.arguments)))
                )
        if not parts:
            continue
        if contents and contents[-1].role == role:
            contents[-1].parts = [*(contents[-1].parts or ()), *parts]
        else:
            contents.append(types.Content(role=role, parts=parts))
    return (types.Content(role="user", parts=system) if system else None), contents


def to_generate_config(
    request: ChatRequest, system: types.Content | None, *, include_thoughts: bool
) -> types.GenerateContentConfig:
    config = types.GenerateContentConfig(
        system_instruction=system,
        temperature=request.temperature,
        top_p=request.top_p,
        stop_sequences=list(request.stop) or None,
        seed=request.seed,
        max_output_tokens=request.max_tokens,
    )
    if include_thoughts:
        config.thinking_config = types.ThinkingConfig(include_thoughts=True)
    if request.tools:
        config.tools = [
            types.Tool(
                function_declarations=[
                    types.FunctionDeclaration(
                        name=t.name,
                        description=t.description or None,
                        parameters_json_schema=dict(t.parameters) if t.parameters else None,
                    )
                    for t in request.tools
                ]
            )
        ]
        # the SDK would run Python callables itself; here there are none, and calls come back to us
        config.automatic_function_calling = types.AutomaticFunctionCallingConfig(disable=True)
    choice = request.tool_choice
    if choice is not None and request.tools:
        if choice.name is not None:
            fcc = types.FunctionCallingConfig(
                mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=[choice.name]
            )
        elif choice.mode is ToolChoiceMode.REQUIRED:
            fcc = types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.ANY)
        elif choice.mode is ToolChoiceMode.NONE:
            fcc = types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.NONE)
        else:
            fcc = types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode.AUTO)
        config.tool_config = types.ToolConfig(function_calling_config=fcc)
    fmt = request.response_format
    if fmt is not None and fmt.kind is not ResponseFormatKind.TEXT:
        config.response_mime_type = "application/json"
        if fmt.kind is ResponseFormatKind.JSON_SCHEMA and fmt.schema:
            config.response_json_schema = dict(fmt.schema)
    return config


# --- response mapping -------------------------------------------------------------------------------


def to_usage(meta: types.GenerateContentResponseUsageMetadata) -> Usage:
    """Gemini counts thoughts apart from the answer; both are output (and billed) tokens."""
    thoughts = meta.thoughts_token_count or 0
    return Usage(
        input_tokens=meta.prompt_token_count or 0,
        output_tokens=(meta.candidates_token_count or 0) + thoughts,
        cached_input_tokens=meta.cached_content_token_count or 0,
        reasoning_tokens=thoughts,
    )


def to_finish(reason: object, *, called: bool) -> FinishReason:
    """The unified finish reason for Gemini's ``reason`` (an enum or its name)."""
    name = str(getattr(reason, "value", reason) or "")
    if name in _FILTERED:
        return FinishReason.CONTENT_FILTER
    if name == "MAX_TOKENS":
        return FinishReason.LENGTH
    if name in _ERRORED:
        return FinishReason.ERROR
    return FinishReason.TOOL_CALLS if called else FinishReason.STOP


# --- errors ----------------------------------------------------------------------------------------


def _retry_delay(details: object) -> float | None:
    """Seconds from a ``google.rpc.RetryInfo`` detail (``"retryDelay": "2s"``), if any."""
    error = details.get("error", details) if isinstance(details, dict) else None
    items = error.get("details") if isinstance(error, dict) else None
    for item in items if isinstance(items, list) else ():
        delay = item.get("retryDelay") if isinstance(item, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


def _has_reason(details: object, reason: str) -> bool:
    error = details.get("error", details) if isinstance(details, dict) else None
    items = error.get("details") if isinstance(error, dict) else None
    return any(isinstance(i, dict) and i.get("reason") == reason for i in (items if isinstance(items, list) else ()))


def translate_gemini_error(exc: BaseException, *, provider: str, secret: str = "") -> ProviderError:
    """The domain error for an SDK or transport exception; the caller raises it ``from exc``."""
    if isinstance(exc, (httpx2.TimeoutException, httpx.TimeoutException)):
        return UpstreamTimeout("request timed out", provider=provider)
    if isinstance(exc, (httpx2.HTTPError, httpx.HTTPError)):
        return UpstreamUnavailable(f"connection error ({type(exc).__name__})", provider=provider)
    if not isinstance(exc, genai_errors.APIError):
        return UpstreamUnavailable(f"client error: {redact(str(exc), secret)}", provider=provider)
    code = exc.code if isinstance(exc.code, int) else 0
    rpc = exc.status or ""
    message = redact(exc.message or rpc or type(exc).__name__, secret)
    text = f"HTTP {code} {rpc}: {message}" if rpc else f"HTTP {code}: {message}"
    if code == 429 or rpc == "RESOURCE_EXHAUSTED":
        headers = getattr(exc.response, "headers", None)
        retry_after = parse_retry_after(headers)
        return RateLimited(
            text, provider=provider, retry_after=retry_after if retry_after is not None else _retry_delay(exc.details)
        )
    if code == 401 or rpc == "UNAUTHENTICATED" or _has_reason(exc.details, "API_KEY_INVALID"):
        return AuthenticationFailed(text, provider=provider)
    if code == 403 or rpc == "PERMISSION_DENIED":
        return PermissionDenied(text, provider=provider)
    if code == 400 and _CONTEXT.search(exc.message or ""):
        return ContextLengthExceeded(text, provider=provider)
    if code in (408, 504) or rpc == "DEADLINE_EXCEEDED":
        return UpstreamTimeout(text, provider=provider)
    if code in (503, 529) or rpc == "UNAVAILABLE":
        return Overloaded(text, provider=provider)
    if code >= 500 or code == 0:
        return UpstreamUnavailable(text, provider=provider)
    return UpstreamInvalidRequest(text, provider=provider)


_SDK_ERRORS = (genai_errors.APIError, genai_errors.UnknownApiResponseError, httpx2.HTTPError, httpx.HTTPError)


# --- the provider ------------------------------------------------------------------------------------


class GeminiProvider:
    """One configured Gemini provider: one SDK client (and connection pool), closed by ``aclose``.
    SDK retries stay off (retrying is the application's call). ``base_url`` is the API root
    (``https://generativelanguage.googleapis.com/`` by default); ``api_version`` is appended.
    ``include_thoughts`` asks thinking models for their thought summaries (``ReasoningDelta``)."""

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        default_headers: Mapping[str, str] | None = None,
        api_version: str = "v1beta",
        include_thoughts: bool = True,
        connect_timeout: float | None = None,
    ) -> None:
        self.name = name
        self._api_key = api_key
        # the API root: the SDK appends the version (a configured ".../v1beta" or ".../v1" is tolerated)
        self._base_url = (base_url or GEMINI_BASE_URL).rstrip("/").removesuffix("/v1beta").removesuffix("/v1") + "/"
        self._include_thoughts = include_thoughts
        self._client = genai.Client(
            api_key=api_key,
            http_options=types.HttpOptions(
                base_url=self._base_url,
                api_version=api_version,
                headers=dict(default_headers) if default_headers else None,
                timeout=max(1, round(timeout * 1000)),
                # an explicit transport keeps google-genai on httpx2 (it switches to its own
                # aiohttp path, without event hooks, whenever aiohttp is installed)
                async_client_args={"event_hooks": {"response": [_track_response]}, **aiohttp_client_args(connect_timeout=connect_timeout)},
            ),
        )

    def __repr__(self) -> str:  # never shows the key
        return f"GeminiProvider(name={self.name!r}, base_url={self._base_url!r})"

    async def aclose(self) -> None:
        await self._client.aio.aclose()
        self._client.close()

    def _error(self, exc: BaseException) -> ProviderError:
        return translate_gemini_error(exc, provider=self.name, secret=self._api_key)

    def _generate_args(self, upstream_model: str, request: ChatRequest) -> dict[str, Any]:
        system, contents = to_contents(request.messages)
        config = to_generate_config(request, system, include_thoughts=self._include_thoughts)
        return {"model": upstream_model, "contents": contents, "config": config}

    async def stream(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        """Text, reasoning and tool-call deltas as they come, then one ``UsageChunk`` (when Gemini
        reported usage) and one ``Finish``. ``aclose()`` on the iterator closes the response."""
        args = self._generate_args(upstream_model, request)
        opened: list[Any] = []
        token = _opened.set(opened)
        try:
            upstream = await self._client.aio.models.generate_content_stream(**args)
            first: types.GenerateContentResponse | None = await anext(upstream)
        except StopAsyncIteration:
            first = None
        except _SDK_ERRORS as exc:
            raise self._error(exc) from exc
        finally:
            _opened.reset(token)
        answer = _Answer(self.name)
        try:
            chunk = first
            while chunk is not None:
                for delta in answer.read(chunk):
                    yield delta
                try:
                    chunk = await anext(upstream)
                except StopAsyncIteration:
                    chunk = None
                except _SDK_ERRORS as exc:
                    raise self._error(exc) from exc
        finally:
            await _close(upstream, opened)
        for delta in answer.ending():
            yield delta

    async def complete(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        """The whole answer from one non-streaming ``generate_content``, as the chunks ``stream``
        would give: the reasoning and the text each in one delta, each function call in one
        ``ToolCallDelta``, then one ``UsageChunk`` (when Gemini reported usage) and one ``Finish``."""
        args = self._generate_args(upstream_model, request)
        try:
            response = await self._client.aio.models.generate_content(**args)
        except _SDK_ERRORS as exc:  # a body that is not JSON too (UnknownApiResponseError)
            raise self._error(exc) from exc
        answer = _Answer(self.name)
        for delta in whole_answer_chunks(answer.read(response)):
            yield delta
        for delta in answer.ending():
            yield delta

    async def embed(self, upstream_model: str, request: EmbeddingRequest) -> Embeddings:
        config = types.EmbedContentConfig(output_dimensionality=request.dimensions) if request.dimensions else None
        vectors: list[tuple[float, ...]] = []
        tokens = 0
        for start in range(0, len(request.inputs), EMBED_BATCH):
            batch = list(request.inputs[start : start + EMBED_BATCH])
            try:
                response = await self._client.aio.models.embed_content(
                    model=upstream_model,
                    contents=batch,
                    config=config,  # type: ignore[arg-type]
                )
            except _SDK_ERRORS as exc:
                raise self._error(exc) from exc
            got = [tuple(e.values or ()) for e in response.embeddings or ()]
            if len(got) != len(batch):
                raise UpstreamUnavailable(f"{len(got)} embeddings for {len(batch)} inputs", provider=self.name)
            vectors.extend(got)
            meta = response.usage_metadata
            tokens += (meta.prompt_token_count or 0) if meta is not None else 0
        return Embeddings(vectors=tuple(vectors), input_tokens=tokens)


class _Answer:
    """Reads an answer's ``GenerateContentResponse``s (the stream's events, or the one whole
    response) into chunks, keeping what the ending needs: usage, finish reason, calls made."""

    __slots__ = ("blocked", "calls", "provider", "reason", "usage")

    def __init__(self, provider: str) -> None:
        self.provider = provider
        self.usage: Usage | None = None
        self.reason: object = None
        self.calls = 0
        self.blocked = False

    def read(self, response: types.GenerateContentResponse) -> list[Chunk]:
        """The deltas of one response: function calls whole (id ``call_<index>`` unless Gemini
        gave one, compact JSON arguments), thoughts as reasoning, other text as text."""
        if response.usage_metadata is not None:
            self.usage = to_usage(response.usage_metadata)
        feedback = response.prompt_feedback
        if not response.candidates and feedback is not None and feedback.block_reason is not None:
            self.blocked = True
        out: list[Chunk] = []
        for candidate in (response.candidates or ())[:1]:
            for part in (candidate.content.parts if candidate.content else None) or ():
                if part.function_call is not None:
                    fn = part.function_call
                    out.append(
                        ToolCallDelta(
                            index=self.calls,
                            id=fn.id or f"call_{self.calls}",
                            name=fn.name or "",
                            arguments_fragment=json.dumps(fn.args or {}, separators=(",", ":")),
                        )
                    )
                    self.calls += 1
                elif part.text:
                    out.append(ReasoningDelta(text=part.text) if part.thought else TextDelta(text=part.text))
            if candidate.finish_reason is not None:
                self.reason = candidate.finish_reason
        return out

    def ending(self) -> list[Chunk]:
        """One ``UsageChunk`` (when Gemini reported usage) and the ``Finish``."""
        if self.blocked:
            finish = FinishReason.CONTENT_FILTER
        elif self.reason is None:
            raise UpstreamUnavailable("the answer ended without a finish reason", provider=self.provider)
        else:
            finish = to_finish(self.reason, called=self.calls > 0)
        usage: list[Chunk] = [UsageChunk(usage=self.usage)] if self.usage is not None else []
        return [*usage, Finish(reason=finish)]


async def _close(upstream: AsyncIterator[Any], opened: list[Any]) -> None:
    """Close the HTTP response(s) first (the socket goes at once), then the SDK's generator."""
    for response in opened:
        try:
            await response.aclose()
        except Exception:  # noqa: BLE001, S110 - closing is best effort; the connection is dropped anyway
            pass
    aclose = getattr(upstream, "aclose", None)
    if aclose is not None:
        try:
            await aclose()
        except Exception:  # noqa: BLE001, S110
            pass
