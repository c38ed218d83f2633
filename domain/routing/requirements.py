"""What a request needs from a model, derived from the request itself (plus the caller's prompt
token count: counting is the ``TokenCounter`` port's job, outside the domain)."""

from __future__ import annotations

import msgspec

from domain.chat import ChatRequest, ImagePart, ResponseFormatKind
from domain.errors import InvalidRequest

__all__ = ["Requirements", "requirements_for"]

DEFAULT_OUTPUT_RESERVE = 256
"""Output room a request without ``max_tokens`` still needs inside the context window."""


class Requirements(msgspec.Struct, frozen=True, gc=False):
    """``prompt_tokens`` is the counted prompt (messages, tools, schema); ``max_output_tokens`` the
    requested cap (None: the model's default). ``context_tokens`` is what must fit in the window."""

    prompt_tokens: int
    max_output_tokens: int | None = None
    tools: bool = False
    parallel_tools: bool = False
    images: bool = False
    json_schema: bool = False
    json_mode: bool = False
    reasoning: bool = False
    streaming: bool = False
    output_reserve: int = DEFAULT_OUTPUT_RESERVE

    def __post_init__(self) -> None:
        if self.prompt_tokens < 0:
            raise InvalidRequest.single("prompt_tokens", "cannot be negative")
        if self.max_output_tokens is not None and self.max_output_tokens < 1:
            raise InvalidRequest.single("max_output_tokens", "must be positive")
        if self.output_reserve < 0:
            raise InvalidRequest.single("output_reserve", "cannot be negative")

    @property
    def context_tokens(self) -> int:
        """Prompt plus the output room: the requested ``max_tokens``, else ``output_reserve``."""
        out = self.max_output_tokens if self.max_output_tokens is not None else self.output_reserve
        return self.prompt_tokens + out


def requirements_for(
    request: ChatRequest,
    prompt_tokens: int,
    *,
    streaming: bool = False,
    reasoning: bool = False,
    output_reserve: int = DEFAULT_OUTPUT_RESERVE,
) -> Requirements:
    """The requirements of ``request``. ``prompt_tokens`` comes from the ``TokenCounter`` port;
    ``streaming`` from the edge (the request struct does not say how it is delivered); ``reasoning``
    from the caller (a reasoning-effort hint or a group that demands it).

    Tools count only when the model may call them (``tool_choice`` mode ``none`` needs none);
    parallel tool calls only when the request asks for them explicitly (``parallel_tool_calls=True``;
    a model without them still serves a request that leaves it unset, one call at a time). JSON mode is a ``json_object`` response format; a JSON schema a ``json_schema`` one."""
    tool_choice = request.tool_choice
    tools_used = bool(request.tools) and not (tool_choice is not None and tool_choice.mode == "none" and tool_choice.name is None)
    images = False
    for message in request.messages:
        for part in message.parts:
            if isinstance(part, ImagePart):
                images = True
                break
        if images:
            break
    fmt = request.response_format
    kind = fmt.kind if fmt is not None else ResponseFormatKind.TEXT
    return Requirements(
        prompt_tokens=prompt_tokens,
        max_output_tokens=request.max_tokens,
        tools=tools_used,
        parallel_tools=tools_used and request.parallel_tool_calls is True,
        images=images,
        json_schema=kind is ResponseFormatKind.JSON_SCHEMA,
        json_mode=kind is ResponseFormatKind.JSON_OBJECT,
        reasoning=reasoning,
        streaming=streaming,
        output_reserve=output_reserve,
    )
