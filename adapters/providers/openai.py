"""``ProviderClient`` for OpenAI and OpenAI-compatible servers (vLLM, Ollama, llama.cpp, the
simulator), through the official ``openai`` SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal

import openai
from openai.types.chat import ChatCompletionChunk
from openai.types.completion_usage import CompletionUsage

from adapters.providers.errors import translate_openai_error
from domain.chat import (
    ChatMessage,
    ChatRequest,
    Chunk,
    Finish,
    FinishReason,
    Role,
    TextDelta,
    ToolCallDelta,
    Usage,
    UsageChunk,
)
from domain.errors import UpstreamUnavailable

__all__ = ["OPENAI_BASE_URL", "OpenAIProvider", "to_openai_messages", "to_usage"]

OPENAI_BASE_URL = "https://api.openai.com/v1"

_FINISH = {
    "stop": FinishReason.STOP,
    "length": FinishReason.LENGTH,
    "tool_calls": FinishReason.TOOL_CALLS,
    "function_call": FinishReason.TOOL_CALLS,
    "content_filter": FinishReason.CONTENT_FILTER,
}


def to_openai_messages(messages: tuple[ChatMessage, ...]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for m in messages:
        item: dict[str, Any] = {"role": m.role.value, "content": m.content}
        if m.role is Role.TOOL:
            item["tool_call_id"] = m.tool_call_id
        elif m.name:
            item["name"] = m.name
        out.append(item)
    return out


def to_usage(usage: CompletionUsage) -> Usage:
    prompt_details = usage.prompt_tokens_details
    completion_details = usage.completion_tokens_details
    return Usage(
        input_tokens=usage.prompt_tokens or 0,
        output_tokens=usage.completion_tokens or 0,
        cached_input_tokens=(prompt_details.cached_tokens or 0) if prompt_details else 0,
        reasoning_tokens=(completion_details.reasoning_tokens or 0) if completion_details else 0,
    )


class OpenAIProvider:
    """One configured OpenAI(-compatible) provider; one SDK client (and connection pool) per
    instance, closed by ``aclose``. SDK retries are off: retrying is the application's call.

    ``max_tokens_param``: the request field carrying ``ChatRequest.max_tokens``; by default
    ``max_completion_tokens`` for the OpenAI API (its reasoning models reject ``max_tokens``) and
    ``max_tokens`` for other servers (what every OpenAI-compatible server understands).
    """

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        base_url: str | None = None,
        timeout: float = 60.0,
        default_headers: Mapping[str, str] | None = None,
        max_tokens_param: Literal["max_tokens", "max_completion_tokens"] | None = None,
    ) -> None:
        self.name = name
        self._api_key = api_key
        self._max_tokens_param = max_tokens_param or ("max_completion_tokens" if base_url is None else "max_tokens")
        self._client = openai.AsyncOpenAI(
            api_key=api_key,
            base_url=base_url or OPENAI_BASE_URL,
            timeout=timeout,
            max_retries=0,
            default_headers=dict(default_headers) if default_headers else None,
        )

    def __repr__(self) -> str:  # never shows the key
        return f"OpenAIProvider(name={self.name!r}, base_url={str(self._client.base_url)!r})"

    async def aclose(self) -> None:
        await self._client.close()

    def _params(self, upstream_model: str, request: ChatRequest) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": upstream_model,
            "messages": to_openai_messages(request.messages),
            "stream": True,
            "stream_options": {"include_usage": True},
        }
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.max_tokens is not None:
            params[self._max_tokens_param] = request.max_tokens
        return params

    async def stream(self, upstream_model: str, request: ChatRequest) -> AsyncIterator[Chunk]:
        """Text and tool-call deltas as they come, then at most one ``UsageChunk`` and exactly one
        ``Finish``. ``aclose()`` on the iterator closes the upstream response."""
        params = self._params(upstream_model, request)
        try:
            upstream = await self._client.chat.completions.create(**params)
        except openai.OpenAIError as exc:
            raise translate_openai_error(exc, provider=self.name, secret=self._api_key) from exc
        finish: FinishReason | None = None
        usage: Usage | None = None
        async with upstream:  # closes the HTTP response however this generator ends
            while True:
                try:
                    chunk: ChatCompletionChunk = await anext(upstream)
                except StopAsyncIteration:
                    break
                except openai.OpenAIError as exc:
                    raise translate_openai_error(exc, provider=self.name, secret=self._api_key) from exc
                if chunk.usage is not None:
                    usage = to_usage(chunk.usage)
                for choice in chunk.choices:
                    if choice.index != 0:
                        continue
                    delta = choice.delta
                    if delta is not None:
                        if delta.content:
                            yield TextDelta(text=delta.content)
                        if delta.refusal:
                            yield TextDelta(text=delta.refusal)
                        for call in delta.tool_calls or ():
                            fn = call.function
                            yield ToolCallDelta(
                                index=call.index,
                                id=call.id,
                                name=fn.name if fn is not None else None,
                                arguments_fragment=(fn.arguments or "") if fn is not None else "",
                            )
                    if choice.finish_reason:
                        finish = _FINISH.get(choice.finish_reason, FinishReason.STOP)
        if finish is None:
            raise UpstreamUnavailable("stream ended without a finish reason", provider=self.name)
        if usage is not None:
            yield UsageChunk(usage=usage)
        yield Finish(reason=finish)
