"""What the simulator answers to an OpenAI chat-completions request: text, JSON output (for
``response_format``), tool calls (one or several in parallel), visible reasoning; and the request
checks the real API makes on tools and images. Pure functions of the request and the knobs."""

from __future__ import annotations

import re

import msgspec

from tools.provider_sim import wire
from tools.provider_sim.config import Knobs
from tools.provider_sim.text import answer_words, digest, json_for_schema, split_even, split_text

__all__ = ["Answer", "CallPlan", "build_answer", "completion_message", "reasoning_words", "stream_deltas", "validate"]

REASONER_DEFAULT_WORDS = 8
_IMAGE = re.compile(r"^(https?://\S+|data:image/[a-z0-9.+-]+;base64,[A-Za-z0-9+/=]+)$")


class CallPlan(msgspec.Struct, frozen=True):
    id: str
    name: str
    pieces: list[str]  # argument fragments

    @property
    def arguments(self) -> str:
        return "".join(self.pieces)


class Answer(msgspec.Struct, frozen=True):
    reasoning: list[str]  # reasoning_content pieces
    content: list[str]  # content pieces (text or JSON); empty when the answer is tool calls
    calls: list[CallPlan]
    completion_tokens: int  # visible + reasoning
    finish_reason: str
    usage: wire.Usage


def validate(req: wire.ChatCompletionRequest) -> tuple[str, str | None] | None:
    """(message, param) of the 400 the real API would answer, or None."""
    declared = [t.function.name for t in req.tools or ()]
    choice = req.tool_choice
    if isinstance(choice, wire.NamedToolChoice) and choice.function.name not in declared:
        return f"Invalid value for 'tool_choice': no function named '{choice.function.name}' was specified in the 'tools' parameter.", "tool_choice"
    if isinstance(choice, str) and choice not in ("auto", "none", "required"):
        return f"Invalid value for 'tool_choice': '{choice}'.", "tool_choice"
    if choice == "required" and not declared:
        return "Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are specified.", "tool_choice"
    if req.parallel_tool_calls is not None and not declared:
        return "Invalid value for 'parallel_tool_calls': only allowed when 'tools' are specified.", "parallel_tool_calls"
    fmt = req.response_format
    if fmt is not None:
        if fmt.type not in ("text", "json_object", "json_schema"):
            return f"Invalid value for 'response_format.type': '{fmt.type}'.", "response_format"
        if fmt.type == "json_schema" and (fmt.json_schema is None or not fmt.json_schema.name):
            return "Missing required parameter: 'response_format.json_schema'.", "response_format"
    stops = [req.stop] if isinstance(req.stop, str) else (req.stop or [])
    if len(stops) > 4:
        return "Invalid 'stop': at most 4 sequences.", "stop"
    pending: set[str] = set()
    for i, m in enumerate(req.messages):
        for url in m.images():
            if not _IMAGE.match(url):
                return f"Invalid 'messages[{i}]': image_url must be an http(s) URL or a base64 data: URL.", f"messages[{i}]"
        if m.role == "tool":
            if m.tool_call_id not in pending:
                return (
                    f"Invalid parameter: messages with role 'tool' must be a response to a preceding message with "
                    f"'tool_calls' (messages[{i}].tool_call_id={m.tool_call_id!r}).",
                    f"messages[{i}]",
                )
            pending.discard(m.tool_call_id)
            continue
        if pending:
            return (
                "An assistant message with 'tool_calls' must be followed by tool messages responding to each "
                f"'tool_call_id'. Missing: {', '.join(sorted(pending))}.",
                f"messages[{i}]",
            )
        if m.role == "assistant" and m.tool_calls:
            pending = {c.id for c in m.tool_calls}
    return None


def reasoning_words(req: wire.ChatCompletionRequest, knobs: Knobs) -> int:
    if knobs.reasoning:
        return knobs.reasoning
    return REASONER_DEFAULT_WORDS if "reasoner" in req.model else 0


def _tool_names(req: wire.ChatCompletionRequest, knobs: Knobs) -> list[str]:
    declared = [t.function.name for t in req.tools or ()]
    choice = req.tool_choice
    if choice == "none":
        return []
    asked = [n.strip() for n in (knobs.tool_call or "").split(",") if n.strip()]
    if declared:
        asked = [n for n in asked if n in declared]
    if isinstance(choice, wire.NamedToolChoice):
        names = [choice.function.name]
    elif choice == "required":
        names = asked or declared[:1]
    elif asked and req.messages[-1].role != "tool":  # answered tools: the model now writes text
        names = asked
    else:
        names = []
    return names[:1] if req.parallel_tool_calls is False else names


def build_answer(
    req: wire.ChatCompletionRequest, texts: list[str], knobs: Knobs, cap: int | None, p_tokens: int, call_prefix: str
) -> Answer:
    seed = digest((m.role, t) for m, t in zip(req.messages, texts, strict=True))
    n = knobs.tokens if cap is None else min(knobs.tokens, cap)
    words = answer_words(seed, n)
    finish = "length" if cap is not None and knobs.tokens > cap else "stop"
    content: list[str] = []
    calls: list[CallPlan] = []
    names = _tool_names(req, knobs)
    if names:
        schemas = {t.function.name: t.function.parameters for t in req.tools or ()}
        for i, name in enumerate(names):
            schema = schemas.get(name)
            value: object = json_for_schema(schema, seed + name.encode()) if schema else {"query": " ".join(words)}
            args = wire.encode(value).decode()
            calls.append(CallPlan(id=f"call_{call_prefix}_{i}", name=name, pieces=split_text(args, knobs.chunks)))
        finish = "tool_calls" if finish == "stop" else finish
    elif req.response_format is not None and req.response_format.type in ("json_object", "json_schema"):
        spec = req.response_format.json_schema
        value = (
            json_for_schema(spec.schema, seed)
            if spec is not None and spec.schema
            else {"answer": " ".join(words)}
        )
        content = split_text(wire.encode(value).decode(), knobs.chunks)
        finish = "stop"
    else:
        groups = split_even(words, knobs.chunks)
        content = [(" " if i else "") + " ".join(g) for i, g in enumerate(groups)]
    n_reason = reasoning_words(req, knobs)
    reasoning: list[str] = []
    if n_reason:
        thought = answer_words(seed + b"reasoning", n_reason)
        reasoning = [(" " if i else "") + " ".join(g) for i, g in enumerate(split_even(thought, knobs.chunks))]
    hidden = knobs.reasoning_tokens + n_reason
    completion = n + hidden
    usage = wire.Usage(
        prompt_tokens=p_tokens,
        completion_tokens=completion,
        total_tokens=p_tokens + completion,
        prompt_tokens_details=wire.PromptDetails(cached_tokens=min(knobs.cached_tokens, p_tokens)),
        completion_tokens_details=wire.CompletionDetails(reasoning_tokens=hidden),
    )
    return Answer(
        reasoning=reasoning, content=content, calls=calls, completion_tokens=completion, finish_reason=finish, usage=usage
    )


def stream_deltas(answer: Answer) -> list[wire.Delta]:
    """The deltas after the first (role) one: reasoning, then content, then each call (its id
    and name first, then its argument fragments), calls one after the other like the API."""
    out = [wire.Delta(reasoning_content=p) for p in answer.reasoning]
    out += [wire.Delta(content=p) for p in answer.content]
    for i, call in enumerate(answer.calls):
        head = wire.ToolCall(index=i, id=call.id, type="function", function=wire.FunctionCall(name=call.name, arguments=""))
        out.append(wire.Delta(tool_calls=[head]))
        out += [wire.Delta(tool_calls=[wire.ToolCall(index=i, function=wire.FunctionCall(arguments=p))]) for p in call.pieces]
    return out


def completion_message(answer: Answer) -> wire.OutMessage:
    message = wire.OutMessage(role="assistant", content="".join(answer.content) if not answer.calls else None)
    if answer.calls:
        message.tool_calls = [
            wire.ToolCall(id=c.id, type="function", function=wire.FunctionCall(name=c.name, arguments=c.arguments))
            for c in answer.calls
        ]
    if answer.reasoning:
        message.reasoning_content = "".join(answer.reasoning)
    return message
