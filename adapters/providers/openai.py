"""``ProviderClient`` for OpenAI and OpenAI-compatible servers (DeepSeek, xAI Grok, vLLM, Ollama,
llama.cpp, the simulator), through the official ``openai`` SDK.

The SDK is the client: auth, base URL, headers, timeouts, retries (off) and its error classes
(HTTP status errors are raised by the SDK as before); under it, its ``httpx2`` client sends
through aiohttp (``adapters.providers.transport.AiohttpTransport``). On the hot path the adapter
skips the SDK's per-request parameter transformation and per-chunk pydantic models: the request
body is a plain dict encoded with msgspec, sent with ``AsyncOpenAI.post(..., stream=True)``, and
the raw SSE ``data:`` lines are decoded with msgspec into minimal Structs (``ChunkWire``) holding
only what the domain chunks need.

``openai_compatible(kind, name, ...)`` builds one with the vendor's default base URL.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import httpx2
import msgspec
import openai
from yarl import URL

from adapters.providers.errors import translate_openai_error
from adapters.providers.transport import WholeResponse, sdk_http_client
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
    Usage,
    UsageChunk,
)
from domain.errors import UpstreamUnavailable

if TYPE_CHECKING:
    from openai.types.completion_usage import CompletionUsage

__all__ = [
    "DEEPSEEK_BASE_URL",
    "OPENAI_BASE_URL",
    "PROVIDER_KINDS",
    "XAI_BASE_URL",
    "ChunkWire",
    "OpenAIProvider",
    "SSEDataLines",
    "openai_compatible",
    "to_openai_messages",
    "to_openai_params",
    "to_usage",
]

T = TypeVar("T")

OPENAI_BASE_URL = "https://api.openai.com/v1"
DEEPSEEK_BASE_URL = "https://api.deepseek.com"
XAI_BASE_URL = "https://api.x.ai/v1"
LOCAL_PLACEHOLDER_KEY = "sk-no-key-required"  # the SDK insists on a key; local servers ignore it

PROVIDER_KINDS: dict[str, str | None] = {
    "openai": OPENAI_BASE_URL,
    "deepseek": DEEPSEEK_BASE_URL,
    "xai": XAI_BASE_URL,
    "local": None,  # vLLM, Ollama, llama.cpp: the base URL is the deployment's
}
"""Kinds served by ``OpenAIProvider`` -> their default base URL."""

MaxTokensParam = Literal["max_tokens", "max_completion_tokens"]

_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}
# where OpenAI-compatible servers put visible reasoning in a delta: DeepSeek (and vLLM's
# deepseek parser) say ``reasoning_content``, newer vLLM and Ollama say ``reasoning``
_REASONING_FIELDS = ("reasoning_content", "reasoning")


def _image_url(part: ImagePart) -> str:
    if part.url:
        return part.url
    return f"data:{part.media_type};base64,{part.data}"


def _content(m: ChatMessage) -> str | list[dict[str, Any]]:
    if not m.parts:
        return m.content
    items: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
    for part in m.parts:
        match part:
            case TextPart(text=text):
                items.append({"type": "text", "text": text})
            case ImagePart():
                items.append({"type": "image_url", "image_url": {"url": _image_url(part)}})
    return items


def to_openai_messages(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role.value, "content": _content(m)}
        if m.role is Role.TOOL:
            item["tool_call_id"] = m.tool_call_id
        elif m.name:
            item["name"] = m.name
        if m.tool_calls:
            item["content"] = item["content"] or None
            item["tool_calls"] = [
                {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
                for c in m.tool_calls
            ]
        out.append(item)
    return out


def _tool(tool: Tool) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name, "parameters": tool.parameters or {"type": "object", "properties": {}}}
    if tool.description:
        fn["description"] = tool.description
    return {"type": "function", "function": fn}


def _tool_choice(choice: ToolChoice) -> str | dict[str, Any]:
    if choice.name is not None:
        return {"type": "function", "function": {"name": choice.name}}
    return choice.mode.value


def _response_format(fmt: ResponseFormat) -> dict[str, Any]:
    if fmt.kind is ResponseFormatKind.JSON_SCHEMA:
        return {
            "type": "json_schema",
            "json_schema": {"name": fmt.name, "schema": fmt.schema or {}, "strict": fmt.strict},
        }
    return {"type": fmt.kind.value}


def to_openai_params(
    upstream_model: str, request: ChatRequest, *, max_tokens_param: MaxTokensParam = "max_tokens", stream: bool = True
) -> dict[str, Any]:
    """The ``chat.completions.create`` keywords of a streamed request (``stream=False``: of a
    request for the whole answer)."""
    params: dict[str, Any] = {"model": upstream_model, "messages": to_openai_messages(request.messages), "stream": stream}
    if stream:
        params["stream_options"] = {"include_usage": True}
    if request.temperature is not None:
        params["temperature"] = request.temperature
    if request.top_p is not None:
        params["top_p"] = request.top_p
    if request.max_tokens is not None:
        params[max_tokens_param] = request.max_tokens
    if request.stop:
        params["stop"] = list(request.stop)
    if request.seed is not None:
        params["seed"] = request.seed
    if request.tools:
        params["tools"] = [_tool(t) for t in request.tools]
        if request.parallel_tool_calls is not None:  # rejected by the API without tools
            params["parallel_tool_calls"] = request.parallel_tool_calls
    if request.tool_choice is not None:
        params["tool_choice"] = _tool_choice(request.tool_choice)
    fmt = request.response_format
    if fmt is not None and fmt.kind is not ResponseFormatKind.TEXT:
        params["response_format"] = _response_format(fmt)
    return params


# --- the wire: only the fields the domain chunks need, decoded by msgspec (unknown fields ignored) ---


class FunctionWire(msgspec.Struct, frozen=True, gc=False):
    name: str | None = None
    arguments: str | None = None


class ToolCallWire(msgspec.Struct, frozen=True, gc=False):
    index: int = 0
    id: str | None = None
    function: FunctionWire | None = None


class DeltaWire(msgspec.Struct, frozen=True, gc=False):
    content: str | None = None
    refusal: str | None = None
    reasoning_content: Any = None  # DeepSeek (and vLLM's deepseek parser)
    reasoning: Any = None  # newer vLLM, Ollama
    tool_calls: list[ToolCallWire] | None = None


class ChoiceWire(msgspec.Struct, frozen=True, gc=False):
    index: int = 0
    delta: DeltaWire | None = None
    finish_reason: str | None = None


class PromptDetailsWire(msgspec.Struct, frozen=True, gc=False):
    cached_tokens: int | None = None


class CompletionDetailsWire(msgspec.Struct, frozen=True, gc=False):
    reasoning_tokens: int | None = None


class UsageWire(msgspec.Struct, frozen=True, gc=False):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    prompt_tokens_details: PromptDetailsWire | None = None
    completion_tokens_details: CompletionDetailsWire | None = None


class ChunkWire(msgspec.Struct, frozen=True):
    """One ``chat.completion.chunk`` (or an error event: ``{"error": {...}}``) as far as Lumina reads it."""

    choices: list[ChoiceWire] | None = None
    usage: UsageWire | None = None
    error: Any = None


class CompletionChoiceWire(msgspec.Struct, frozen=True, gc=False):
    index: int = 0
    message: DeltaWire | None = None  # a whole message has a delta's fields (tool calls without index)
    finish_reason: str | None = None


class CompletionWire(msgspec.Struct, frozen=True):
    """One ``chat.completion`` (a whole answer) as far as Lumina reads it."""

    choices: list[CompletionChoiceWire] | None = None
    usage: UsageWire | None = None
    error: Any = None


class _EmbeddingWire(msgspec.Struct, frozen=True, gc=False):
    embedding: list[float]
    index: int = 0


class _EmbeddingUsageWire(msgspec.Struct, frozen=True, gc=False):
    prompt_tokens: int | None = None


class _EmbeddingsWire(msgspec.Struct, frozen=True):
    data: list[_EmbeddingWire]
    usage: _EmbeddingUsageWire | None = None


_CHUNK_DECODER = msgspec.json.Decoder(ChunkWire)
_COMPLETION_DECODER = msgspec.json.Decoder(CompletionWire)
_EMBEDDINGS_DECODER = msgspec.json.Decoder(_EmbeddingsWire)
_ENCODER = msgspec.json.Encoder()
_AUTH = {"security": {"bearer_auth": True}}  # what the SDK's chat/embeddings resources send
_DRAIN_SECONDS = 1.0  # after [DONE]: reading the rest of the body lets the connection be reused


class SSEDataLines:
    """Incremental server-sent-events parser: ``feed(bytes)`` returns the data of every event
    completed so far (its ``data:`` lines joined by ``\\n``); other fields and comments are
    ignored. Lines end with LF, CRLF or CR, also when split across reads."""

    __slots__ = ("_data", "_tail")

    def __init__(self) -> None:
        self._tail = b""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        buf = self._tail + chunk if self._tail else chunk
        if b"\r" in buf:
            held = buf.endswith(b"\r")  # its LF may come with the next read
            buf = buf.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
            lines = buf.split(b"\n")
            if held:
                lines.pop()  # the empty remainder after the held line end
                self._tail = lines.pop() + b"\r"
            else:
                self._tail = lines.pop()
        else:
            lines = buf.split(b"\n")
            self._tail = lines.pop()
        return self._events(lines)

    def flush(self) -> list[bytes]:
        """At the end of the body: the last event even without its blank line."""
        tail, self._tail = self._tail.rstrip(b"\r"), b""
        return self._events([tail, b""] if tail else [b""])

    def _events(self, lines: list[bytes]) -> list[bytes]:
        out: list[bytes] = []
        data = self._data
        for line in lines:
            if not line:
                if data:
                    out.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data.clear()
            elif line.startswith(b"data:"):
                value = line[5:]
                data.append(value[1:] if value.startswith(b" ") else value)
        return out


def to_usage(usage: CompletionUsage | UsageWire) -> Usage:
    prompt_details = usage.prompt_tokens_details
    completion_details = usage.completion_tokens_details
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_input_tokens=(prompt_details.cached_tokens or 0) if prompt_details else 0,
        reasoning_tokens=(completion_details.reasoning_tokens or 0) if completion_details else 0,
    )


def _reasoning(delta: DeltaWire) -> str:
    value = delta.reasoning_content
    if isinstance(value, str) and value:
        return value
    value = delta.reasoning
    return value if isinstance(value, str) else ""


def _delta_chunks(delta: DeltaWire, *, whole: bool) -> Iterator[Chunk]:
    """The domain chunks of one delta, or of a whole message (``whole``: its tool calls carry no
    index and are numbered in order)."""
    if delta.reasoning_content is not None or delta.reasoning is not None:
        reasoning = _reasoning(delta)
        if reasoning:
            yield ReasoningDelta(text=reasoning)
    if delta.content:
        yield TextDelta(text=delta.content)
    if delta.refusal:
        yield TextDelta(text=delta.refusal)
    for position, call in enumerate(delta.tool_calls or ()):
        fn = call.function
        yield ToolCallDelta(
            index=position if whole else call.index,
            id=call.id or None,
            name=(fn.name or None) if fn is not None else None,
            arguments_fragment=(fn.arguments or "") if fn is not None else "",
        )


_NO_CHUNKS: tuple[Chunk, ...] = ()


def _first_choice(
    choices: Sequence[ChoiceWire] | Sequence[CompletionChoiceWire] | None, *, whole: bool
) -> tuple[Iterable[Chunk], FinishReason | None]:
    """The chunks of choice 0 among an event's choices (``whole``: a completion's, its message)
    and its finish reason, if it gave one; other choices (``n`` > 1) are not relayed."""
    for choice in choices or ():
        if choice.index == 0:
            delta = choice.message if whole else choice.delta  # type: ignore[union-attr]
            parts = _NO_CHUNKS if delta is None else _delta_chunks(delta, whole=whole)
            return parts, _FINISH.get(choice.finish_reason, FinishReason.STOP) if choice.finish_reason else None
    return _NO_CHUNKS, None


def _error_event(data: bytes) -> Any:
    """The ``error`` member of an event that is a JSON object with a truthy one, else None."""
    try:
        value = msgspec.json.decode(data)
    except msgspec.DecodeError:
        return None
    return (value.get("error") or None) if isinstance(value, dict) else None


def _stream_error(error: Any, request: httpx2.Request) -> openai.APIError:
    """The SDK's own exception for an error event inside a stream (as ``AsyncStream`` raises it)."""
    message = error.get("message") if isinstance(error, dict) else None
    if not message or not isinstance(message, str):
        message = "An error occurred during streaming"
    return openai.APIError(message=message, request=request, body=error)


def _transport_error(exc: Exception, response: httpx2.Response) -> openai.APIError:
    """The SDK's exception for a transport failure while reading a response body."""
    err: openai.APIError
    if isinstance(exc, httpx2.TimeoutException):
        err = openai.APITimeoutError(request=response.request)
    else:
        err = openai.APIConnectionError(request=response.request)
    err.__cause__ = exc
    return err


class _SdkRequestHead(msgspec.Struct, frozen=True):
    """What the SDK puts on every POST to one path of one client: the URL, its headers (auth,
    user agent, ``X-Stainless-*``) and the timeout extension; ``dynamic`` when the client's
    credentials are resolved per request (then every call goes through ``AsyncOpenAI.post``)."""

    url: httpx2.URL
    headers: list[tuple[bytes, bytes]]  # raw, as on the wire (Host included), without Content-Length
    extensions: dict[str, Any]
    dynamic: bool
    wire_url: URL  # the URL and headers as ``AiohttpTransport.post_whole`` takes them
    wire_headers: list[tuple[str, str]]

    def request(self, body: bytes) -> httpx2.Request:
        """The POST of ``body``: the head as built, its ``Content-Length``, ``body`` read already
        (what ``httpx2.Request(content=...)`` makes, without parsing the URL and normalising every
        header again: ~30 µs per request)."""
        headers = [*self.headers, (b"Content-Length", str(len(body)).encode())]
        request = httpx2.Request("POST", self.url, headers=headers, stream=httpx2.ByteStream(body), extensions=self.extensions)
        request.read()
        return request

    @classmethod
    async def build(cls, client: openai.AsyncOpenAI, path: str) -> _SdkRequestHead:
        from openai._base_client import get_platform
        from openai._models import FinalRequestOptions
        from openai._utils import asyncify

        dynamic = (
            getattr(client, "_workload_identity_auth", None) is not None
            or getattr(client, "_provider_runtime", None) is not None
            or getattr(client, "custom_auth", None) is not None
            or getattr(client, "_idempotency_header", None) is not None
        )
        if client._platform is None:  # as AsyncAPIClient.request does before its first request
            client._platform = await asyncify(get_platform)()
        options = await client._prepare_options(
            FinalRequestOptions.construct(method="post", url=path, content=b"", **_AUTH)  # type: ignore[arg-type]
        )
        prototype = client._build_request(options)
        await client._prepare_request(prototype)
        headers = [(k, v) for k, v in prototype.headers.raw if k.lower() != b"content-length"]
        return cls(
            url=prototype.url, headers=headers, extensions=dict(prototype.extensions), dynamic=dynamic,
            wire_url=URL(str(prototype.url), encoded=True),
            wire_headers=[(k.decode("latin-1"), v.decode("latin-1")) for k, v in headers],
        )


class OpenAIProvider:
    """One configured OpenAI(-compatible) provider: one SDK client whose HTTP client sends
    through aiohttp (one keep-alive connection pool), closed by ``aclose``. SDK retries are off:
    retrying is the application's call.

    ``max_tokens_param``: the request field carrying ``ChatRequest.max_tokens``; by default
    ``max_completion_tokens`` for the OpenAI API (its reasoning models reject ``max_tokens``) and
    ``max_tokens`` for other servers (what every OpenAI-compatible server understands).
    ``http_client``: the SDK's HTTP client (closed with the provider); by default the SDK's own
    client class over ``AiohttpTransport``.
    """

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        default_headers: Mapping[str, str] | None = None,
        max_tokens_param: MaxTokensParam | None = None,
        http_client: httpx2.AsyncClient | None = None,
        connect_timeout: float | None = None,
    ) -> None:
        self.name = name
        self._api_key = api_key
        self._max_tokens_param: MaxTokensParam = max_tokens_param or (
            "max_completion_tokens" if base_url is None else "max_tokens"
        )
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url or OPENAI_BASE_URL,
            timeout=timeout,
            max_retries=0,
            default_headers=dict(default_headers) if default_headers else None,
            http_client=http_client or sdk_http_client(openai.DefaultAsyncHttpxClient, connect_timeout=connect_timeout),
        )
        self._heads: dict[str, _SdkRequestHead] = {}
        self._transports: dict[str, httpx2.AsyncBaseTransport] = {}

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIProvider(name={self.name!r}, base_url={str(self._client.base_url)!r})"

    async def aclose(self) -> None:
        await self._client.close()

    def _error(self, exc: openai.OpenAIError) -> Exception:
        return translate_openai_error(exc, provider=self.name, secret=self._api_key)

    async def _post(self, path: str, body: bytes, *, stream: bool = False) -> httpx2.Response | WholeResponse:
        """POST ``body`` to ``path``: the SDK's request (URL, auth and SDK headers, timeout) sent
        through the transport the SDK's HTTP client picks for that URL (its proxy mounts
        included); a 4xx/5xx raises the SDK's own status error, a transport failure its
        ``APITimeoutError``/``APIConnectionError``, as ``AsyncOpenAI.post`` does (with retries off).

        The SDK builds the request head once per path (``_SdkRequestHead``), not per call: its
        per-call option models and header merging were ~0.4 ms of CPU per request, more than the
        HTTP client itself. The HTTP client's own layers (auth flow, redirects — the SDK follows
        none —, event hooks, its cookie jar) are skipped for the same reason. Clients whose
        credentials change per request (workload identity, provider runtimes) keep the SDK's
        full path. A whole answer through ``AiohttpTransport`` is its ``WholeResponse``
        (``post_whole``: no ``httpx2`` request or response is built unless for an error)."""
        head = self._heads.get(path)
        if head is None:
            head = self._heads[path] = await _SdkRequestHead.build(self._client, path)
        if head.dynamic:
            return await self._client.post(path, cast_to=httpx2.Response, content=body, options=_AUTH, stream=stream)
        http = self._client._client
        if http.is_closed:  # as the HTTP client says for a request after its close
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        transport = self._transports.get(path)
        if transport is None:
            transport = self._transports[path] = http._transport_for_url(head.url)
        whole = None if stream else getattr(transport, "post_whole", None)  # AiohttpTransport's
        if whole is not None:  # no httpx2 request or response unless for an error
            try:
                answer = await whole(head.wire_url, head.wire_headers, body, head.extensions)
            except httpx2.TimeoutException as exc:
                raise openai.APITimeoutError(request=head.request(body)) from exc
            except httpx2.HTTPError as exc:
                raise openai.APIConnectionError(request=head.request(body)) from exc
            if answer.status_code >= 400:
                raise self._client._make_status_error_from_response(answer.httpx(head.request(body)))
            return answer
        request = head.request(body)
        try:
            response = await transport.handle_async_request(request)
            response.request = request
            if not stream or response.status_code >= 400:  # read whole: the connection goes back to the pool
                try:
                    await response.aread()
                finally:
                    await response.aclose()
        except httpx2.TimeoutException as exc:
            raise openai.APITimeoutError(request=request) from exc
        except httpx2.HTTPError as exc:
            raise openai.APIConnectionError(request=request) from exc
        if response.status_code >= 400:
            raise self._client._make_status_error_from_response(response)
        return response

    def _request_of(self, response: httpx2.Response | WholeResponse, path: str) -> httpx2.Request:
        """The request ``response`` answered (for the SDK's exceptions, which carry one)."""
        if isinstance(response, httpx2.Response):
            return response.request
        return self._heads[path].request(b"")

    async def _call(
        self, path: str, params: dict[str, Any], decoder: msgspec.json.Decoder[T], what: str
    ) -> tuple[T, httpx2.Response | WholeResponse]:
        """POST ``params`` as JSON to ``path``; the body decoded by ``decoder`` (domain errors for
        the SDK's, ``UpstreamUnavailable`` for a body that does not decode), and the response."""
        try:
            response = await self._post(path, _ENCODER.encode(params))
        except openai.OpenAIError as exc:
            raise self._error(exc) from exc
        try:
            return decoder.decode(response.content), response
        except msgspec.DecodeError as exc:
            raise UpstreamUnavailable(f"malformed {what}", provider=self.name) from exc

    async def stream(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        """Reasoning, text and tool-call deltas as they come, then at most one ``UsageChunk`` and
        exactly one ``Finish``. ``aclose()`` on the iterator closes the upstream response."""
        body = _ENCODER.encode(to_openai_params(upstream_model, request, max_tokens_param=self._max_tokens_param))
        try:
            response = await self._post("/chat/completions", body, stream=True)
        except openai.OpenAIError as exc:  # HTTP status errors come as the SDK's classes, as before
            raise self._error(exc) from exc
        finish: FinishReason | None = None
        usage: Usage | None = None
        events = SSEDataLines()
        # an identity body (the rule for event streams) is read straight from the transport's
        # stream, without httpx2's decoder chain per chunk; an encoded one through it
        encoded = "content-encoding" in response.headers
        reads = response.aiter_bytes() if encoded else aiter(response.stream)  # type: ignore[arg-type]
        done = False
        try:  # closes the HTTP response however this generator ends
            while not done:
                try:
                    raw = await anext(reads)
                    batch = events.feed(raw)
                except StopAsyncIteration:
                    batch = events.flush()
                    done = True
                except (httpx2.RequestError, ssl.SSLError) as exc:
                    err = _transport_error(exc, response)
                    raise self._error(err) from err
                for data in batch:
                    if data.startswith(b"[DONE]"):
                        if not done:
                            done = True
                            await _drain(reads)
                        break
                    try:
                        chunk = _CHUNK_DECODER.decode(data)
                    except msgspec.DecodeError as exc:
                        error = _error_event(data)
                        if error is not None:
                            err = _stream_error(error, response.request)
                            raise self._error(err) from err
                        raise UpstreamUnavailable("malformed stream chunk", provider=self.name) from exc
                    if chunk.error:
                        err = _stream_error(chunk.error, response.request)
                        raise self._error(err) from err
                    if chunk.usage is not None:
                        usage = to_usage(chunk.usage)
                    parts, ended = _first_choice(chunk.choices, whole=False)
                    for part in parts:
                        yield part
                    if ended is not None:
                        finish = ended
        finally:
            await reads.aclose()
            await response.aclose()
        if finish is None:
            raise UpstreamUnavailable("stream ended without a finish reason", provider=self.name)
        if usage is not None:
            yield UsageChunk(usage=usage)
        yield Finish(reason=finish)

    async def complete(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        """The whole answer in one upstream call (``"stream": false``), as the chunks ``stream``
        would have produced: the reasoning, the text, each tool call whole, then at most one
        ``UsageChunk`` and exactly one ``Finish``."""
        params = to_openai_params(upstream_model, request, max_tokens_param=self._max_tokens_param, stream=False)
        answer, response = await self._call("/chat/completions", params, _COMPLETION_DECODER, "completion")
        if answer.error:
            err = _stream_error(answer.error, self._request_of(response, "/chat/completions"))
            raise self._error(err) from err
        parts, finish = _first_choice(answer.choices, whole=True)
        for part in parts:
            yield part
        if finish is None:
            raise UpstreamUnavailable("completion without a finish reason", provider=self.name)
        if answer.usage is not None:
            yield UsageChunk(usage=to_usage(answer.usage))
        yield Finish(reason=finish)

    async def embed(self, upstream_model: str, request: EmbeddingRequest) -> Embeddings:
        params: dict[str, Any] = {"model": upstream_model, "input": list(request.inputs), "encoding_format": "float"}
        if request.dimensions is not None:
            params["dimensions"] = request.dimensions
        result, _ = await self._call("/embeddings", params, _EMBEDDINGS_DECODER, "embeddings response")
        rows = sorted(result.data, key=lambda d: d.index)
        if len(rows) != len(request.inputs):
            raise UpstreamUnavailable(
                f"expected {len(request.inputs)} embeddings, got {len(rows)}", provider=self.name
            )
        usage = result.usage
        return Embeddings(
            vectors=tuple(tuple(row.embedding) for row in rows),
            input_tokens=(usage.prompt_tokens or 0) if usage is not None else 0,
        )


async def _drain(reads: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (normally just the end of the body, already buffered) so the
    connection goes back to the pool; a server that keeps the body open gets ``_DRAIN_SECONDS``."""
    try:
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in reads:
                pass
    except (TimeoutError, httpx2.RequestError, ssl.SSLError):
        pass  # the answer is complete; closing the response drops the connection instead


def openai_compatible(
    kind: str,
    name: str,
    *,
    api_key: str | None = None,
    base_url: str | None = None,
    timeout: float = 60.0,
    default_headers: Mapping[str, str] | None = None,
    max_tokens_param: MaxTokensParam | None = None,
    connect_timeout: float | None = None,
) -> OpenAIProvider:
    """An ``OpenAIProvider`` for ``kind`` (a key of ``PROVIDER_KINDS``): ``base_url`` defaults to
    the vendor's; ``local`` servers need ``base_url`` and take a placeholder key when none is set.
    Raises ``ValueError`` for an unknown kind or missing settings."""
    if kind not in PROVIDER_KINDS:
        raise ValueError(f"unknown OpenAI-compatible provider kind {kind!r}; expected one of {sorted(PROVIDER_KINDS)}")
    url = base_url or PROVIDER_KINDS[kind]
    if url is None:
        raise ValueError(f"provider {name!r} of kind {kind!r} needs a base_url")
    if not api_key:
        if kind != "local":
            raise ValueError(f"provider {name!r} of kind {kind!r} needs an API key")
        api_key = LOCAL_PLACEHOLDER_KEY
    if max_tokens_param is None:
        max_tokens_param = "max_completion_tokens" if kind == "openai" else "max_tokens"
    return OpenAIProvider(
        name,
        api_key=api_key,
        base_url=url,
        timeout=timeout,
        default_headers=default_headers,
        max_tokens_param=max_tokens_param,
        connect_timeout=connect_timeout,
    )
