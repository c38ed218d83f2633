"""The Anthropic Messages API of the simulator: ``POST /v1/messages`` (JSON, or named SSE events
when ``stream`` is true) and ``GET /v1/models[/{id}]`` (when the request carries an
``anthropic-version`` header). Routed here by ``SimulatorApp``; shares its config, stats and
``x-sim-*`` knobs.

Auth: ``x-api-key: KEY`` or ``Authorization: Bearer KEY`` (any non-empty key, or exactly
``SimConfig.api_key`` when set). A rejected key is echoed in the message on purpose, so adapters'
redaction is tested.

Answers are deterministic like the OpenAI path: the same (role, text) pairs (``system`` first)
give the same words. Behaviour:

- text: ``x-sim-tokens`` words in ``x-sim-chunks`` ``text_delta`` events; ``stop_reason``
  ``end_turn``, ``max_tokens`` when ``max_tokens`` cuts the answer, ``stop_sequence`` when a word
  of the answer equals one of ``stop_sequences`` (the text ends before it).
- tool use: ``tool_choice {"type":"tool","name":X}``, or ``x-sim-tool-call: X`` (unless
  ``tool_choice`` is ``none``), or ``tool_choice {"type":"any"}`` (the first tool) answers with a
  ``tool_use`` block whose input follows X's ``input_schema`` (``{"query": words}`` for a tool
  without properties), streamed as ``input_json_delta`` fragments; ``stop_reason`` ``tool_use``.
  ``x-sim-tool-call: a,b`` answers one ``tool_use`` block per name, in that order (parallel calls).
- thinking: ``thinking {"type":"enabled"|"adaptive"}`` adds a ``thinking`` block first
  (``x-sim-reasoning-tokens`` words, 8 when unset) with a ``signature_delta``; its words count
  as output tokens.
- usage: ``cache_read_input_tokens`` = ``x-sim-cached-tokens`` (capped at the prompt);
  ``input_tokens`` is the rest of the prompt, as Anthropic counts it.
- faults (``x-sim-fault``): Anthropic error bodies ``{"type":"error","error":{"type","message"}}``:
  400 invalid_request_error, 401 authentication_error, 403 permission_error, 404
  not_found_error, 429 rate_limit_error (``retry-after``), 500 api_error, 503/529
  overloaded_error, ``context_length`` a 400 "prompt is too long", ``midstream`` an ``error``
  event after half of the main block's deltas (a 500 for non-stream requests). The transport
  faults are the shared ones (``faults``): ``refuse``, ``stall``, ``disconnect-after-N`` (the
  connection drops after N SSE events; a non-stream request loses it before any answer) and
  ``malformed[-after-N]`` (event N is not JSON; a non-stream answer is not JSON), slow drip by
  ``x-sim-chunk-delay-ms``.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec

from tools.provider_sim import faults as _faults
from tools.provider_sim.app import (
    Receive,
    Scope,
    Send,
    SimulatorApp,
    _DisconnectWatch,
    _read_body,
    _Record,
)
from tools.provider_sim.config import (
    HEADER_FIELDS,
    VENDOR_FAULTS,
    Knobs,
    knobs_from_headers,
)
from tools.provider_sim.stats import Stats
from tools.provider_sim.text import answer_words, digest, prompt_tokens, split_even

__all__ = ["handle", "is_anthropic_models", "sample_from_schema"]

_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_DEFAULT_THINKING_WORDS = 8
ANTHROPIC_MODELS: dict[str, int] = {
    "claude-sonnet-4-5": 200_000,
    "claude-opus-4-1": 200_000,
    "claude-haiku-4-5": 200_000,
    "claude-3-5-haiku-latest": 200_000,
}
"""Served on this path besides ``SimConfig.models``, so adapters are tested with real names."""
_encode = msgspec.json.Encoder().encode

# fault -> (status, error type, message)
_FAULTS: dict[str, tuple[int, str, str]] = {
    "400": (400, "invalid_request_error", "Simulated invalid request."),
    "401": (401, "authentication_error", "Simulated authentication failure."),
    "403": (403, "permission_error", "Simulated permission denial."),
    "404": (404, "not_found_error", "Simulated missing model."),
    "429": (429, "rate_limit_error", "Number of request tokens has exceeded your rate limit (simulated)."),
    "500": (500, "api_error", "Internal server error (simulated)."),
    "503": (503, "overloaded_error", "Overloaded (simulated)."),
    "529": (529, "overloaded_error", "Overloaded (simulated)."),
    "midstream": (500, "api_error", "Internal server error (simulated)."),
}


# --- request ----------------------------------------------------------------------------------


class Block(msgspec.Struct, forbid_unknown_fields=False):
    """Any content block; only the fields the simulator reads."""

    type: str
    text: str | None = None
    thinking: str | None = None
    name: str | None = None
    input: Any = None
    tool_use_id: str | None = None
    content: str | list[Block] | None = None


class Message(msgspec.Struct, forbid_unknown_fields=False):
    role: str
    content: str | list[Block]


class ToolDef(msgspec.Struct, forbid_unknown_fields=False):
    name: str
    input_schema: dict[str, Any] = msgspec.field(default_factory=dict)
    description: str | None = None


class ToolChoice(msgspec.Struct, forbid_unknown_fields=False):
    type: str
    name: str | None = None


class Thinking(msgspec.Struct, forbid_unknown_fields=False):
    type: str
    budget_tokens: int | None = None


class MessagesRequest(msgspec.Struct, forbid_unknown_fields=False):
    model: str
    messages: list[Message]
    max_tokens: int | None = None  # required by the API: checked to answer its own message
    system: str | list[Block] | None = None
    stream: bool = False
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoice | None = None
    thinking: Thinking | None = None
    stop_sequences: list[str] | None = None
    temperature: float | None = None
    top_p: float | None = None


_decoder = msgspec.json.Decoder(MessagesRequest)


def _block_text(block: Block) -> str:
    if block.type == "text":
        return block.text or ""
    if block.type == "thinking":
        return ""
    if block.type == "tool_use":
        return _encode(block.input).decode() if block.input is not None else ""
    if block.type == "tool_result":
        c = block.content
        if c is None:
            return ""
        return c if isinstance(c, str) else " ".join(_block_text(b) for b in c if b.type == "text")
    return ""


def _text(content: str | list[Block] | None) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return " ".join(t for t in (_block_text(b) for b in content) if t)


# --- the answer -------------------------------------------------------------------------------


class _ToolUse(msgspec.Struct):
    id: str
    name: str
    pieces: list[str]  # partial_json fragments


class _Answer(msgspec.Struct):
    thinking: list[str]  # thinking_delta pieces (empty: no thinking block)
    tools: list[_ToolUse]  # tool_use blocks (empty: a text answer)
    pieces: list[str]  # text pieces (unused when there are tool_use blocks)
    stop_reason: str
    stop_sequence: str | None
    input_tokens: int
    cache_read: int
    output_tokens: int


def sample_from_schema(schema: Any, words: tuple[str, ...], depth: int = 0) -> Any:
    """A deterministic value that follows a (simple) JSON Schema, built from ``words``."""
    if not isinstance(schema, dict) or depth > 8:
        return " ".join(words)
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf", "allOf"):
        if isinstance(schema.get(key), list) and schema[key]:
            return sample_from_schema(schema[key][0], words, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object" or (kind is None and "properties" in schema):
        props = schema.get("properties") or {}
        return {name: sample_from_schema(sub, words, depth + 1) for name, sub in props.items()}
    if kind == "array":
        return [sample_from_schema(schema.get("items", {"type": "string"}), words, depth + 1)]
    if kind == "integer":
        return len(words)
    if kind == "number":
        return len(words) / 2
    if kind == "boolean":
        return len(words) % 2 == 0
    if kind == "null":
        return None
    return " ".join(words)


def _chosen_tools(req: MessagesRequest, knobs: Knobs) -> list[tuple[str, dict[str, Any]]]:
    tools = {t.name: t.input_schema for t in req.tools or ()}
    choice = req.tool_choice
    if choice is not None and choice.type == "none":
        return []
    if choice is not None and choice.type == "tool" and choice.name:
        return [(choice.name, tools.get(choice.name, {}))]
    if knobs.tool_call is not None:
        names = [n.strip() for n in knobs.tool_call.split(",") if n.strip()]
        return [(name, tools.get(name, {})) for name in names]  # one tool_use block per name
    if choice is not None and choice.type == "any" and req.tools:
        return [(req.tools[0].name, req.tools[0].input_schema)]
    return []


def _answer(req: MessagesRequest, knobs: Knobs, p_tokens: int, request_id: str) -> _Answer:
    pairs: list[tuple[str, str]] = []
    if req.system:
        pairs.append(("system", _text(req.system)))
    pairs.extend((m.role, _text(m.content)) for m in req.messages)
    seed = digest(pairs)
    cap = req.max_tokens or 1
    n = min(knobs.tokens, cap)
    words = answer_words(seed, n)
    stop_reason = "max_tokens" if knobs.tokens > cap else "end_turn"
    stop_sequence: str | None = None
    thinking: list[str] = []
    extra = 0
    if req.thinking is not None and req.thinking.type in ("enabled", "adaptive"):
        count = getattr(knobs, "reasoning", 0) or knobs.reasoning_tokens or _DEFAULT_THINKING_WORDS
        thought = answer_words(digest([*pairs, ("thinking", "")]), count)
        thinking = [(" " if i else "") + " ".join(g) for i, g in enumerate(split_even(thought, knobs.chunks))]
        extra = count
    chosen = _chosen_tools(req, knobs)
    tools: list[_ToolUse] = []
    pieces = []
    for i, (name, schema) in enumerate(chosen):
        value = sample_from_schema(schema, words) if schema.get("properties") else {"query": " ".join(words)}
        args = _encode(value).decode()
        size = max(1, -(-len(args) // knobs.chunks))
        tid = f"toolu_{request_id.removeprefix('req_')}" + (f"_{i}" if i else "")
        tools.append(_ToolUse(tid, name, [args[j : j + size] for j in range(0, len(args), size)]))
    if tools:
        stop_reason = "tool_use" if stop_reason == "end_turn" else stop_reason
    else:
        stops = set(req.stop_sequences or ())
        cut = next((i for i, w in enumerate(words) if w in stops), None)
        if cut is not None:
            stop_sequence, stop_reason, words = words[cut], "stop_sequence", words[:cut]
        pieces = [(" " if i else "") + " ".join(g) for i, g in enumerate(split_even(words, knobs.chunks))]
        pieces = [p for p in pieces if p] or [""]
    cache_read = min(knobs.cached_tokens, p_tokens)
    return _Answer(
        thinking=thinking,
        tools=tools,
        pieces=pieces,
        stop_reason=stop_reason,
        stop_sequence=stop_sequence,
        input_tokens=p_tokens - cache_read,
        cache_read=cache_read,
        output_tokens=n + extra,
    )


# --- routing ----------------------------------------------------------------------------------


def is_anthropic_models(scope: Scope) -> bool:
    """A ``/v1/models`` request from an Anthropic client (it sends ``anthropic-version``)."""
    return scope["path"].startswith("/v1/models") and any(k == b"anthropic-version" for k, _ in scope["headers"])


async def handle(app: SimulatorApp, scope: Scope, receive: Receive, send: Send) -> None:
    path: str = scope["path"]
    method: str = scope["method"]
    if path == "/v1/messages":
        if method != "POST":
            return await _error(send, 405, "invalid_request_error", f"Method {method} not allowed.")
        return await _messages(app, scope, receive, send)
    ok, token = _auth(scope, app.config.api_key)
    if not ok:
        return await _error(send, 401, "authentication_error", _auth_message(token))
    models = {**ANTHROPIC_MODELS, **app.config.models}
    if path == "/v1/models":
        data = [_model(m) for m in models]
        body = {"data": data, "has_more": False, "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None}
        return await _send_json(send, 200, _encode(body))
    name = path.removeprefix("/v1/models/")
    if name not in models:
        return await _error(send, 404, "not_found_error", f"model: {name}")
    return await _send_json(send, 200, _encode(_model(name)))


def _model(name: str) -> dict[str, Any]:
    return {"type": "model", "id": name, "display_name": name, "created_at": "2025-01-01T00:00:00Z"}


def _auth(scope: Scope, expected: str | None) -> tuple[bool, str]:
    """(accepted, token) from ``x-api-key`` or ``Authorization: Bearer``."""
    token = ""
    for name, value in scope["headers"]:
        if name == b"x-api-key":
            token = value.decode("latin-1").strip()
            break
        if name == b"authorization":
            scheme, _, rest = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer":
                token = rest.strip()
    if not token:
        return False, ""
    return (expected is None or token == expected), token


def _auth_message(token: str) -> str:
    return f"invalid x-api-key: {token}" if token else "x-api-key header is required"


# --- POST /v1/messages ------------------------------------------------------------------------


async def _messages(app: SimulatorApp, scope: Scope, receive: Receive, send: Send) -> None:
    started = time.perf_counter()
    body = await _read_body(receive)
    app.stats.requests += 1
    app._seq += 1
    request_id = f"req_sim{app._seq:08d}"
    state = _Record(request_id, started)

    async def fail(status: int, etype: str, message: str, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        await _error(send, status, etype, message, extra, request_id)
        app._finish(state, status)

    overrides: dict[str, str] = {}
    for name, value in scope["headers"]:
        field = HEADER_FIELDS.get(name)
        if field is not None:
            overrides[field] = value.decode("latin-1")
    ok, token = _auth(scope, app.config.api_key)
    if not ok:
        return await fail(401, "authentication_error", _auth_message(token))
    if not any(k == b"anthropic-version" for k, _ in scope["headers"]):
        return await fail(400, "invalid_request_error", "anthropic-version: header is required")
    try:
        knobs = knobs_from_headers(app.config.knobs, overrides)
    except ValueError as exc:
        return await fail(400, "invalid_request_error", f"invalid x-sim header: {exc}")
    if body is None:
        return await fail(413, "request_too_large", "Request exceeds the maximum allowed number of bytes.")
    try:
        req = _decoder.decode(body)
    except msgspec.DecodeError as exc:
        return await fail(400, "invalid_request_error", f"Invalid body: {exc}")
    state.model, state.stream, state.fault = req.model, req.stream, knobs.fault
    if req.stream:
        app.stats.streams += 1
    if req.max_tokens is None:
        return await fail(400, "invalid_request_error", "max_tokens: Field required")
    if req.max_tokens < 1:
        return await fail(400, "invalid_request_error", "max_tokens: Input should be greater than or equal to 1")
    if not req.messages:
        return await fail(400, "invalid_request_error", "messages: at least one message is required")
    window = app.config.models.get(req.model) or ANTHROPIC_MODELS.get(req.model)
    if window is None:
        if app.config.strict_models:
            return await fail(404, "not_found_error", f"model: {req.model}")
        window = max(app.config.models.values(), default=131_072)

    watch = _DisconnectWatch(receive)
    try:
        if knobs.latency_ms and await watch.pause(knobs.latency_ms / 1000):
            return app._finish(state, 0, disconnected=True)
        parsed = _faults.parse(knobs.fault, vendor=VENDOR_FAULTS)
        done = await _faults.before_response(parsed, send, watch, stream=req.stream, stall_headers=_SSE_HEADERS)
        if done is not None:
            return app._finish(state, done[0], disconnected=done[1])
        fault = knobs.fault
        if parsed is not None and parsed.kind in ("status", "vendor") and fault != "context_length" and (
            fault != "midstream" or not req.stream
        ):
            status, etype, message = _FAULTS.get(fault, (parsed.status if parsed else 500, "api_error", "Simulated."))
            etype = _FAULTS.get(str(status), (0, etype, ""))[1]
            extra = [(b"retry-after", _num(knobs.retry_after))] if status == 429 else None
            return await fail(status, etype, message, extra)
        texts = ([_text(req.system)] if req.system else []) + [_text(m.content) for m in req.messages]
        p_tokens = prompt_tokens(texts)
        state.prompt_tokens = p_tokens
        if fault == "context_length" or p_tokens > window:
            message = f"prompt is too long: {max(p_tokens, window + 1)} tokens > {window} maximum"
            return await fail(400, "invalid_request_error", message)
        answer = _answer(req, knobs, p_tokens, request_id)
        state.completion_tokens = answer.output_tokens
        mid = f"msg_{request_id.removeprefix('req_')}"
        if req.stream:
            gone = await _stream(app.stats, send, watch, knobs, parsed, req.model, mid, request_id, answer)
            return app._finish(state, 200, disconnected=gone)
        malformed = parsed is not None and parsed.kind == "malformed"
        body = _faults.MALFORMED if malformed else _encode(_message(req.model, mid, answer))
        await _send_json(send, 200, body, request_id)
        return app._finish(state, 200)
    finally:
        watch.close()


def _usage(answer: _Answer, output_tokens: int) -> dict[str, Any]:
    return {
        "input_tokens": answer.input_tokens,
        "output_tokens": output_tokens,
        "cache_read_input_tokens": answer.cache_read,
        "cache_creation_input_tokens": 0,
    }


def _message(model: str, mid: str, answer: _Answer) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    if answer.thinking:
        content.append({"type": "thinking", "thinking": "".join(answer.thinking), "signature": "sim-signature"})
    for tool in answer.tools:
        content.append({"type": "tool_use", "id": tool.id, "name": tool.name,
                        "input": msgspec.json.decode("".join(tool.pieces))})
    if not answer.tools:
        content.append({"type": "text", "text": "".join(answer.pieces)})
    return {
        "id": mid, "type": "message", "role": "assistant", "model": model, "content": content,
        "stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence,
        "usage": _usage(answer, answer.output_tokens),
    }


async def _stream(
    stats: Stats,
    send: Send,
    watch: _DisconnectWatch,
    knobs: Knobs,
    fault: _faults.Fault | None,
    model: str,
    mid: str,
    request_id: str,
    answer: _Answer,
) -> bool:
    """Send the named SSE events through the shared ``SseWriter`` (slow drip, disconnect-after-N,
    malformed); True when the client went away before the end."""
    writer = _faults.SseWriter(send, watch, fault=fault, delay_ms=knobs.chunk_delay_ms)

    async def emit(name: str, payload: dict[str, Any]) -> bool:
        return await writer.event(_encode(payload), name=name)

    async def delta(index: int, body: dict[str, Any]) -> bool:
        sent = await emit("content_block_delta", {"type": "content_block_delta", "index": index, "delta": body})
        stats.chunks_sent += int(sent)
        return sent

    await writer.start([*_SSE_HEADERS, (b"request-id", request_id.encode()), (b"x-request-id", request_id.encode())])
    start = {"id": mid, "type": "message", "role": "assistant", "model": model, "content": [],
             "stop_reason": None, "stop_sequence": None, "usage": _usage(answer, 1)}
    if not await emit("message_start", {"type": "message_start", "message": start}):
        return writer.gone
    # (opening block, its deltas) for each content block, in order
    blocks: list[tuple[dict[str, Any], list[dict[str, Any]]]] = []
    if answer.thinking:
        blocks.append((
            {"type": "thinking", "thinking": "", "signature": ""},
            [{"type": "thinking_delta", "thinking": p} for p in answer.thinking]
            + [{"type": "signature_delta", "signature": "sim-signature"}],
        ))
    for tool in answer.tools:
        blocks.append((
            {"type": "tool_use", "id": tool.id, "name": tool.name, "input": {}},
            [{"type": "input_json_delta", "partial_json": p} for p in tool.pieces],
        ))
    if not answer.tools:
        blocks.append(({"type": "text", "text": ""}, [{"type": "text_delta", "text": p} for p in answer.pieces]))
    main = len(blocks) - 1  # the midstream fault strikes in the last block
    for index, (block, deltas) in enumerate(blocks):
        if not await emit("content_block_start", {"type": "content_block_start", "index": index, "content_block": block}):
            return writer.gone
        if index == 0 and not await emit("ping", {"type": "ping"}):  # where the real API sends it
            return writer.gone
        break_at = len(deltas) // 2 if knobs.fault == "midstream" and index == main else -1
        for i, body in enumerate(deltas):
            if i == break_at:
                _, etype, message = _FAULTS["midstream"]
                await emit("error", {"type": "error", "error": {"type": etype, "message": message}})
                return await writer.end()
            if not await delta(index, body):
                return writer.gone
        if not await emit("content_block_stop", {"type": "content_block_stop", "index": index}):
            return writer.gone
    tail = {"type": "message_delta", "delta": {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence},
            "usage": {"output_tokens": answer.output_tokens}}
    if not (await emit("message_delta", tail) and await emit("message_stop", {"type": "message_stop"})):
        return writer.gone
    return await writer.end()


# --- responses --------------------------------------------------------------------------------


def _num(value: float) -> bytes:
    return (str(int(value)) if float(value).is_integer() else str(value)).encode()


async def _send_json(send: Send, status: int, body: bytes, request_id: str | None = None) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if request_id is not None:
        headers += [(b"request-id", request_id.encode()), (b"x-request-id", request_id.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: Send,
    status: int,
    etype: str,
    message: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    request_id: str | None = None,
) -> None:
    body = _encode({"type": "error", "error": {"type": etype, "message": message}})
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if request_id is not None:
        headers += [(b"request-id", request_id.encode()), (b"x-request-id", request_id.encode())]
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
