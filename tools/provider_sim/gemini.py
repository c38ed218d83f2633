"""The Google Gemini (Generative Language API) wire format, as the ``google-genai`` SDK speaks it.

Routes (``{v}`` is ``v1beta``, or ``v1``, the SDK's default version; see ``is_gemini``):

    POST /{v}/models/{model}:generateContent          one GenerateContentResponse
    POST /{v}/models/{model}:streamGenerateContent    ``?alt=sse``: ``data:`` events, one
                                                      GenerateContentResponse each (a JSON array
                                                      without ``alt=sse``)
    POST /{v}/models/{model}:countTokens              ``{"totalTokens": n}``
    POST /{v}/models/{model}:embedContent             ``{"embedding": {"values": [...]}}``
    POST /{v}/models/{model}:batchEmbedContents       ``{"embeddings": [{"values": [...]}, ...]}``
    GET  /{v}/models, /{v}/models/{model}             the model list / one model

Auth is the ``x-goog-api-key`` header (or ``?key=``): none gives a 403 PERMISSION_DENIED, a wrong
one (when ``SimConfig.api_key`` is set) a 400 INVALID_ARGUMENT with reason ``API_KEY_INVALID``,
like the real API; the message echoes the key on purpose, so adapters' redaction is tested.

Behaviour comes from the shared ``x-sim-*`` knobs (``config.Knobs``): ``tokens``/``chunks`` shape
the answer, ``reasoning-tokens`` adds ``thought: true`` parts (when the request's
``thinkingConfig.includeThoughts`` is true; always counted in ``thoughtsTokenCount``),
``cached-tokens`` sets ``cachedContentTokenCount``, ``tool-call: NAME[,NAME2]`` answers with
``functionCall`` parts when the request declares tools (not when its last turn carries function
responses, nor with ``functionCallingConfig.mode`` NONE), ``fault`` returns a Google error body.
Gemini's own header ``x-sim-gemini-finish: SAFETY`` (or RECITATION, PROHIBITED_CONTENT, ...) ends
the answer with that finish reason. ``generationConfig.responseMimeType: application/json`` gives a
JSON answer valid for ``responseJsonSchema`` / ``responseSchema`` (required properties filled with
typed placeholders); ``maxOutputTokens`` caps the answer (finish ``MAX_TOKENS``).
"""

from __future__ import annotations

import hashlib
import math
import random
import time
import urllib.parse
from typing import Any

import msgspec

from tools.provider_sim import faults
from tools.provider_sim.app import Receive, Scope, Send, SimulatorApp, _read_body, _Record
from tools.provider_sim.config import EMBEDDING_MODELS, HEADER_FIELDS, Knobs, knobs_from_headers
from tools.provider_sim.text import answer_words, digest, prompt_tokens, split_even

__all__ = [
    "EMBEDDING_DIMENSIONS",
    "GEMINI_MODELS",
    "embedding_vector",
    "is_gemini",
    "placeholder",
    "serve",
]

GEMINI_MODELS: dict[str, int] = {
    "gemini-2.5-flash": 1_048_576,
    "gemini-2.5-pro": 1_048_576,
    "gemini-2.5-flash-lite": 1_048_576,
    "gemini-2.0-flash": 1_048_576,
}
"""Gemini's own model names (context windows), served besides ``SimConfig.models``."""
EMBEDDING_DIMENSIONS = 8
"""Vector size of embedding models not in ``config.EMBEDDING_MODELS`` (``outputDimensionality``
in a request sets it)."""
FINISH_HEADER = b"x-sim-gemini-finish"
_JSON = (b"content-type", b"application/json; charset=UTF-8")
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_OUTPUT_LIMIT = 8_192

# fault -> (HTTP status, google.rpc status, message)
_FAULTS: dict[str, tuple[int, str, str]] = {
    "400": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
    "401": (
        401,
        "UNAUTHENTICATED",
        (
            "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie or "
            "other valid authentication credential."
        ),
    ),
    "403": (403, "PERMISSION_DENIED", "The caller does not have permission"),
    "404": (404, "NOT_FOUND", "Requested entity was not found."),
    "429": (
        429,
        "RESOURCE_EXHAUSTED",
        "You exceeded your current quota, please check your plan and billing details. (simulated)",
    ),
    "500": (500, "INTERNAL", "An internal error has occurred. Please retry or report in the troubleshooting guide."),
    "503": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "529": (503, "UNAVAILABLE", "The model is overloaded. Please try again later."),
    "midstream": (
        500,
        "INTERNAL",
        "An internal error has occurred. Please retry or report in the troubleshooting guide.",
    ),
}

_encode = msgspec.json.Encoder().encode
_decode = msgspec.json.Decoder().decode


def is_gemini(scope: Scope) -> bool:
    """True for the requests this module serves: ``/v1beta/models...``, ``/v1/models/{m}:{method}``,
    and ``GET /v1/models[/{m}]`` carrying ``x-goog-api-key`` without ``authorization`` (the
    google-genai SDK's default API version; OpenAI's listing uses a bearer token)."""
    path: str = scope["path"]
    if path.startswith("/v1beta/models"):
        return True
    if not path.startswith("/v1/models"):
        return False
    if ":" in path:
        return True
    names = {name for name, _ in scope["headers"]}
    return b"x-goog-api-key" in names and b"authorization" not in names


class _Fail(Exception):
    def __init__(self, status: int, rpc_status: str, message: str, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.rpc_status = rpc_status
        self.message = message
        self.details = details


def _error_body(status: int, rpc_status: str, message: str, details: list[Any] | None = None) -> bytes:
    error: dict[str, Any] = {"code": status, "message": message, "status": rpc_status}
    if details:
        error["details"] = details
    return _encode({"error": error})


async def _send_json(send: Send, status: int, body: bytes, extra: list[tuple[bytes, bytes]] | None = None) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode()), *(extra or ())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# --- entry point -------------------------------------------------------------------------------


async def serve(app: SimulatorApp, scope: Scope, receive: Receive, send: Send) -> None:
    """Serve one Gemini request (``is_gemini(scope)`` is true)."""
    path: str = scope["path"]
    method: str = scope["method"]
    rest = path.removeprefix("/v1beta/").removeprefix("/v1/")
    query = urllib.parse.parse_qs(scope.get("query_string", b"").decode("latin-1"))
    key = _api_key(scope, query)
    auth = _check_key(app, key)
    if ":" not in rest:  # model metadata
        if method != "GET":
            return await _send_json(send, 405, _error_body(405, "INVALID_ARGUMENT", f"Method {method} not allowed."))
        if auth is not None:
            return await _send_json(
                send, auth.status, _error_body(auth.status, auth.rpc_status, auth.message, auth.details)
            )
        return await _models(app, send, rest)
    model_path, _, action = rest.partition(":")
    model = model_path.removeprefix("models/")
    if method != "POST":
        return await _send_json(send, 405, _error_body(405, "INVALID_ARGUMENT", f"Method {method} not allowed."))
    if action in ("generateContent", "streamGenerateContent", "countTokens"):
        stream = action == "streamGenerateContent"
        sse = query.get("alt", [""])[0] == "sse"
        return await _Generate(app, scope, receive, send, model, stream, sse, auth).run(
            count_only=action == "countTokens"
        )
    if action in ("embedContent", "batchEmbedContents"):
        return await _embed(app, scope, receive, send, model, batch=action == "batchEmbedContents", auth=auth)
    return await _send_json(send, 404, _error_body(404, "NOT_FOUND", f"Unknown method {action!r}."))


def _api_key(scope: Scope, query: dict[str, list[str]]) -> str:
    for name, value in scope["headers"]:
        if name == b"x-goog-api-key":
            return value.decode("latin-1").strip()
    return query.get("key", [""])[0]


def _check_key(app: SimulatorApp, key: str) -> _Fail | None:
    if not key:
        return _Fail(
            403,
            "PERMISSION_DENIED",
            "Method doesn't allow unregistered callers (callers without established identity). "
            "Please use API Key or other form of API consumer identity to call this API.",
        )
    expected = app.config.api_key
    if expected is not None and key != expected:
        return _Fail(
            400,
            "INVALID_ARGUMENT",
            f"API key not valid: {key}. Please pass a valid API key.",
            [{"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "API_KEY_INVALID"}],
        )
    return None


def _knobs(app: SimulatorApp, scope: Scope) -> tuple[Knobs, str | None]:
    overrides: dict[str, str] = {}
    finish: str | None = None
    for name, value in scope["headers"]:
        field = HEADER_FIELDS.get(name)
        if field is not None:
            overrides[field] = value.decode("latin-1")
        elif name == FINISH_HEADER:
            finish = value.decode("latin-1").strip().upper() or None
    try:
        return knobs_from_headers(app.config.knobs, overrides), finish
    except ValueError as exc:
        raise _Fail(400, "INVALID_ARGUMENT", f"invalid x-sim header: {exc}") from exc


def _fault_fail(knobs: Knobs) -> _Fail:
    status, rpc, message = _FAULTS[knobs.fault or "500"]
    details = None
    if status == 429:
        details = [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": f"{knobs.retry_after:g}s"}]
    return _Fail(status, rpc, message, details)


def _fault_headers(status: int, knobs: Knobs) -> list[tuple[bytes, bytes]]:
    return faults.retry_after_headers(knobs.retry_after) if status == 429 else []


# --- models --------------------------------------------------------------------------------------


def _model_entry(name: str, window: int, methods: list[str]) -> dict[str, Any]:
    return {
        "name": f"models/{name}",
        "version": "001",
        "displayName": name,
        "description": "A simulated model.",
        "inputTokenLimit": window,
        "outputTokenLimit": _OUTPUT_LIMIT,
        "supportedGenerationMethods": methods,
        "thinking": True,
    }


async def _models(app: SimulatorApp, send: Send, rest: str) -> None:
    entries = [
        _model_entry(m, w, ["generateContent", "countTokens"])
        for m, w in {**GEMINI_MODELS, **app.config.models}.items()
    ]
    entries.extend(_model_entry(m, 2_048, ["embedContent"]) for m in EMBEDDING_MODELS)
    if rest.rstrip("/") == "models":
        return await _send_json(send, 200, _encode({"models": entries}))
    wanted = "models/" + rest.removeprefix("models/")
    for entry in entries:
        if entry["name"] == wanted:
            return await _send_json(send, 200, _encode(entry))
    return await _send_json(send, 404, _error_body(404, "NOT_FOUND", f"{wanted} is not found for API version v1beta."))


# --- generateContent -------------------------------------------------------------------------------


def _part_text(part: dict[str, Any]) -> str:
    if "text" in part:
        return str(part["text"])
    call = part.get("functionCall") or part.get("function_call")
    if call:
        return f"{call.get('name', '')} {_encode(call.get('args') or {}).decode()}"
    response = part.get("functionResponse") or part.get("function_response")
    if response:
        return f"{response.get('name', '')} {_encode(response.get('response') or {}).decode()}"
    return ""


def _texts(body: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of the system instruction and every content, in order."""
    out: list[tuple[str, str]] = []
    system = body.get("systemInstruction") or body.get("system_instruction")
    if isinstance(system, dict):
        out.append(("system", " ".join(_part_text(p) for p in system.get("parts") or ())))
    for content in body.get("contents") or ():
        role = content.get("role") or "user"
        out.append((role, " ".join(t for t in (_part_text(p) for p in content.get("parts") or ()) if t)))
    return out


def _answers_function(body: dict[str, Any]) -> bool:
    contents = body.get("contents") or ()
    if not contents:
        return False
    return any("functionResponse" in p or "function_response" in p for p in contents[-1].get("parts") or ())


def _declared(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for tool in body.get("tools") or ():
        for decl in tool.get("functionDeclarations") or tool.get("function_declarations") or ():
            out[decl.get("name", "")] = decl
    return out


def _calling_mode(body: dict[str, Any]) -> str:
    config = body.get("toolConfig") or body.get("tool_config") or {}
    fcc = config.get("functionCallingConfig") or config.get("function_calling_config") or {}
    return str(fcc.get("mode") or "AUTO").upper()


class _Generate:
    """One generateContent / streamGenerateContent / countTokens request."""

    def __init__(
        self,
        app: SimulatorApp,
        scope: Scope,
        receive: Receive,
        send: Send,
        model: str,
        stream: bool,
        sse: bool,
        auth: _Fail | None,
    ) -> None:
        self.app, self.scope, self.receive, self.send = app, scope, receive, send
        self.model, self.stream, self.sse, self.auth = model, stream, sse, auth
        app._seq += 1
        self.state = _Record(f"req_sim{app._seq:08d}", time.perf_counter())
        self.state.model, self.state.stream = model, stream
        self.response_id = f"gemsim{app._seq:08d}"

    async def run(self, *, count_only: bool = False) -> None:
        app = self.app
        app.stats.requests += 1
        if self.stream:
            app.stats.streams += 1
        watch = faults.DisconnectWatch(self.receive)
        try:
            raw = await _read_body(self.receive)
            if self.auth is not None:
                raise self.auth
            knobs, finish_override = _knobs(app, self.scope)
            self.state.fault = knobs.fault
            if raw is None:
                raise _Fail(413, "INVALID_ARGUMENT", "Request payload size exceeds the limit.")
            try:
                body = _decode(raw)
            except msgspec.DecodeError as exc:
                raise _Fail(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}") from exc
            if not isinstance(body, dict):
                raise _Fail(400, "INVALID_ARGUMENT", "Invalid JSON payload received: expected an object.")
            window = app.config.models.get(self.model) or GEMINI_MODELS.get(self.model)
            if window is None:
                if app.config.strict_models:
                    raise _Fail(
                        404,
                        "NOT_FOUND",
                        f"models/{self.model} is not found for API version v1beta, or is not supported for "
                        "generateContent. Call ListModels to see the list of available models and their "
                        "supported methods.",
                    )
                window = max(app.config.models.values(), default=131_072)
            texts = _texts(body)
            if not body.get("contents"):
                raise _Fail(400, "INVALID_ARGUMENT", "* GenerateContentRequest.contents: contents is not specified")
            p_tokens = prompt_tokens(t for _, t in texts)
            self.state.prompt_tokens = p_tokens
            if count_only:
                await _send_json(self.send, 200, _encode({"totalTokens": p_tokens}))
                return self._done(200)
            config = body.get("generationConfig") or body.get("generation_config") or {}
            cap = config.get("maxOutputTokens", config.get("max_output_tokens"))
            if cap is not None and int(cap) < 1:
                raise _Fail(400, "INVALID_ARGUMENT", "max_output_tokens must be positive.")
            if knobs.latency_ms and await watch.pause(knobs.latency_ms / 1000):
                return self._done(0, disconnected=True)
            fault = faults.parse(knobs.fault)
            if fault is not None and fault.kind == "refuse":
                await faults.refuse(self.send)
                return self._done(0, disconnected=True)
            if fault is not None and fault.kind == "stall":
                headers = list(_SSE_HEADERS) if self.stream else [_JSON]
                gone = await faults.stall(self.send, watch, headers)
                return self._done(200, disconnected=gone)
            if fault is not None and (fault.kind == "status" or (fault.raw == "midstream" and not self.stream)):
                fail = _fault_fail(knobs)
                return await self._fail(fail, _fault_headers(fail.status, knobs))
            if (fault is not None and fault.raw == "context_length") or p_tokens > window:
                raise _Fail(
                    400,
                    "INVALID_ARGUMENT",
                    f"The input token count ({max(p_tokens, window + 1)}) exceeds the maximum number of tokens "
                    f"allowed ({window}).",
                )
            plan = _plan(body, config, texts, knobs, cap, p_tokens, finish_override)
            self.state.completion_tokens = plan.visible + plan.thoughts
            if self.stream:
                gone = await self._stream(watch, knobs, plan)
                return self._done(200, disconnected=gone)
            await _send_json(self.send, 200, _encode(self._response(plan.all_parts(), plan.finish, plan.usage())))
            return self._done(200)
        except _Fail as fail:
            return await self._fail(fail)
        finally:
            watch.close()

    def _response(self, parts: list[dict[str, Any]], finish: str | None, usage: dict[str, int]) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts, "role": "model"}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
            if finish == "SAFETY":
                candidate["safetyRatings"] = [
                    {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "HIGH", "blocked": True}
                ]
        return {
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": self.model,
            "responseId": self.response_id,
        }

    async def _stream(self, watch: faults.DisconnectWatch, knobs: Knobs, plan: _Plan) -> bool:
        """Send the events; True when the client went away before the end."""
        events = plan.events()
        if not self.sse:  # the JSON-array form of streamGenerateContent
            items = [self._response(parts, finish, usage) for parts, finish, usage in events]
            await _send_json(self.send, 200, _encode(items))
            return False
        fault = faults.parse(knobs.fault)
        writer = faults.SseWriter(self.send, watch, fault=fault, delay_ms=knobs.chunk_delay_ms)
        await writer.start(list(_SSE_HEADERS))
        break_at = len(events) // 2 if fault is not None and fault.raw == "midstream" else -1
        for i, (parts, finish, usage) in enumerate(events):
            if i == break_at:
                status, rpc, message = _FAULTS["midstream"]
                await writer.event(_error_body(status, rpc, message))
                break
            if not await writer.event(_encode(self._response(parts, finish, usage))):
                return writer.gone
        return await writer.end()

    async def _fail(self, fail: _Fail, extra: list[tuple[bytes, bytes]] | None = None) -> None:
        body = _error_body(fail.status, fail.rpc_status, fail.message, fail.details)
        await _send_json(self.send, fail.status, body, extra)
        self._done(fail.status)

    def _done(self, status: int, *, disconnected: bool = False) -> None:
        self.app._finish(self.state, status, disconnected=disconnected)


class _Plan:
    """What to answer: thought pieces, then text pieces or function calls, a finish reason, usage."""

    def __init__(
        self,
        thoughts_shown: list[str],
        pieces: list[str],
        calls: list[dict[str, Any]],
        finish: str,
        prompt: int,
        visible: int,
        thoughts: int,
        cached: int,
    ) -> None:
        self.thoughts_shown, self.pieces, self.calls, self.finish = thoughts_shown, pieces, calls, finish
        self.prompt, self.visible, self.thoughts, self.cached = prompt, visible, thoughts, cached

    def usage(self, visible: int | None = None) -> dict[str, int]:
        shown = self.visible if visible is None else visible
        usage = {"promptTokenCount": self.prompt, "candidatesTokenCount": shown}
        if self.cached:
            usage["cachedContentTokenCount"] = self.cached
        if self.thoughts:
            usage["thoughtsTokenCount"] = self.thoughts
        usage["totalTokenCount"] = self.prompt + shown + self.thoughts
        return usage

    def all_parts(self) -> list[dict[str, Any]]:
        parts: list[dict[str, Any]] = []
        if self.thoughts_shown:
            parts.append({"text": "".join(self.thoughts_shown), "thought": True})
        if self.pieces:
            parts.append({"text": "".join(self.pieces)})
        parts.extend({"functionCall": call} for call in self.calls)
        return parts

    def events(self) -> list[tuple[list[dict[str, Any]], str | None, dict[str, int]]]:
        """(parts, finish reason or None, usage so far) of each stream event; the last one carries
        the finish reason and the full usage."""
        out: list[tuple[list[dict[str, Any]], str | None, dict[str, int]]] = [
            ([{"text": t, "thought": True}], None, self.usage(0)) for t in self.thoughts_shown
        ]
        if self.calls:
            out.append(([{"functionCall": call} for call in self.calls], self.finish, self.usage()))
            return out
        n = len(self.pieces)
        for i, piece in enumerate(self.pieces):
            last = i == n - 1
            shown = self.visible if last else self.visible * (i + 1) // n
            out.append(([{"text": piece}], self.finish if last else None, self.usage(shown)))
        if not self.pieces:
            out.append(([{"text": ""}], self.finish, self.usage()))
        return out


def _plan(
    body: dict[str, Any],
    config: dict[str, Any],
    texts: list[tuple[str, str]],
    knobs: Knobs,
    cap: Any,
    p_tokens: int,
    finish_override: str | None,
) -> _Plan:
    seed = digest(texts)
    n = knobs.tokens if cap is None else min(knobs.tokens, int(cap))
    words = answer_words(seed, n)
    finish = "MAX_TOKENS" if cap is not None and knobs.tokens > int(cap) else "STOP"
    thinking = config.get("thinkingConfig") or config.get("thinking_config") or {}
    include_thoughts = bool(thinking.get("includeThoughts", thinking.get("include_thoughts", False)))
    thought_words = answer_words(seed + b"thought", knobs.reasoning_tokens) if knobs.reasoning_tokens else ()
    shown = (
        [(" " if i else "") + " ".join(g) for i, g in enumerate(split_even(thought_words, 2))]
        if include_thoughts and thought_words
        else []
    )
    cached = min(knobs.cached_tokens, p_tokens)
    declared = _declared(body)
    calls: list[dict[str, Any]] = []
    if knobs.tool_call and declared and not _answers_function(body) and _calling_mode(body) != "NONE":
        args = {"query": " ".join(words)}
        calls = [{"name": name.strip(), "args": args} for name in knobs.tool_call.split(",") if name.strip()]
    if calls:
        return _Plan(shown, [], calls, finish, p_tokens, n, knobs.reasoning_tokens, cached)
    mime = str(config.get("responseMimeType") or config.get("response_mime_type") or "")
    if mime == "application/json":
        schema = config.get("responseJsonSchema") or config.get("response_json_schema")
        if schema is None:
            schema = config.get("responseSchema") or config.get("response_schema")
        if isinstance(schema, dict):
            value = placeholder(schema, words)
        else:
            value = {"answer": " ".join(words)}
        text = _encode(value).decode()
        size = max(1, -(-len(text) // knobs.chunks))
        pieces = [text[i : i + size] for i in range(0, len(text), size)]
    else:
        groups = split_even(words, knobs.chunks)
        pieces = [(" " if i else "") + " ".join(g) for i, g in enumerate(groups)]
    if finish_override is not None:
        finish = finish_override
    return _Plan(shown, pieces, [], finish, p_tokens, n, knobs.reasoning_tokens, cached)


def placeholder(
    schema: dict[str, Any], words: tuple[str, ...], root: dict[str, Any] | None = None, depth: int = 0
) -> Any:
    """A deterministic value valid for the JSON Schema (or Gemini ``Schema``) ``schema``: every
    listed property filled, strings from ``words``, the first of an enum."""
    root = root if root is not None else schema
    text = " ".join(words[:4]) or "lumina"
    if depth > 16:
        return None
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/"):
        target: Any = root
        for key in ref[2:].split("/"):
            target = target.get(key, {}) if isinstance(target, dict) else {}
        return placeholder(target if isinstance(target, dict) else {}, words, root, depth + 1)
    if "const" in schema:
        return schema["const"]
    enum = schema.get("enum")
    if isinstance(enum, list) and enum:
        return enum[0]
    for key in ("anyOf", "any_of", "oneOf", "allOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            usable = [o for o in options if isinstance(o, dict) and str(o.get("type", "")).lower() != "null"]
            return placeholder((usable or options)[0], words, root, depth + 1)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if str(k).lower() != "null"), "null")
    kind = str(kind).lower() if kind is not None else ("object" if "properties" in schema else "string")
    if kind == "object":
        props = schema.get("properties") or {}
        return {name: placeholder(sub, words, root, depth + 1) for name, sub in props.items() if isinstance(sub, dict)}
    if kind == "array":
        items = schema.get("items")
        count = max(1, int(schema.get("minItems", schema.get("min_items", 1)) or 1))
        return [placeholder(items if isinstance(items, dict) else {}, words, root, depth + 1) for _ in range(count)]
    if kind == "integer":
        return max(len(words), int(schema.get("minimum", 0) or 0))
    if kind == "number":
        return float(max(len(words), float(schema.get("minimum", 0) or 0))) + 0.5
    if kind == "boolean":
        return True
    if kind == "null":
        return None
    return text


# --- embeddings --------------------------------------------------------------------------------------


def embedding_vector(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A unit vector seeded by the text's hash: the same text always gives the same vector."""
    rng = random.Random(int.from_bytes(hashlib.blake2b(text.encode(), digest_size=16).digest(), "big"))
    values = [rng.gauss(0.0, 1.0) for _ in range(dimensions)]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    return [round(v / norm, 7) for v in values]


def _content_text(content: Any) -> str:
    if isinstance(content, dict):
        return " ".join(_part_text(p) for p in content.get("parts") or ())
    return ""


async def _embed(
    app: SimulatorApp, scope: Scope, receive: Receive, send: Send, model: str, *, batch: bool, auth: _Fail | None
) -> None:
    app._seq += 1
    state = _Record(f"req_sim{app._seq:08d}", time.perf_counter())
    state.model = model
    app.stats.requests += 1
    raw = await _read_body(receive)
    status = 200
    try:
        if auth is not None:
            raise auth
        knobs, _ = _knobs(app, scope)
        state.fault = knobs.fault
        fault = faults.parse(knobs.fault)
        if fault is not None and fault.kind == "refuse":
            status = 0
            return await faults.refuse(send)
        if fault is not None and fault.kind in ("status", "vendor") and fault.raw != "midstream":
            if fault.raw == "context_length":
                raise _Fail(
                    400,
                    "INVALID_ARGUMENT",
                    "The input token count exceeds the maximum number of tokens allowed (2048).",
                )
            fail = _fault_fail(knobs)
            status = fail.status
            await _send_json(
                send,
                fail.status,
                _error_body(fail.status, fail.rpc_status, fail.message, fail.details),
                _fault_headers(fail.status, knobs),
            )
            return
        if raw is None:
            raise _Fail(413, "INVALID_ARGUMENT", "Request payload size exceeds the limit.")
        try:
            body = _decode(raw)
        except msgspec.DecodeError as exc:
            raise _Fail(400, "INVALID_ARGUMENT", f"Invalid JSON payload received. {exc}") from exc
        requests = body.get("requests") if batch else [body]
        if not isinstance(requests, list) or not requests:
            raise _Fail(400, "INVALID_ARGUMENT", "* BatchEmbedContentsRequest.requests: requests is required")
        vectors: list[dict[str, list[float]]] = []
        tokens = 0
        for i, item in enumerate(requests):
            text = _content_text(item.get("content"))
            if not text:
                raise _Fail(400, "INVALID_ARGUMENT", f"* requests[{i}].content: text content is empty.")
            dims = item.get("outputDimensionality", item.get("output_dimensionality")) or EMBEDDING_MODELS.get(
                model, EMBEDDING_DIMENSIONS
            )
            if int(dims) < 1:
                raise _Fail(400, "INVALID_ARGUMENT", "output_dimensionality must be positive.")
            tokens += prompt_tokens([text])
            vectors.append({"values": embedding_vector(text, int(dims))})
        state.prompt_tokens = tokens
        usage = {"promptTokenCount": tokens, "totalTokenCount": tokens}
        payload = (
            {"embeddings": vectors, "usageMetadata": usage}
            if batch
            else {"embedding": vectors[0], "usageMetadata": usage}
        )
        await _send_json(send, 200, _encode(payload))
    except _Fail as fail:
        status = fail.status
        await _send_json(send, fail.status, _error_body(fail.status, fail.rpc_status, fail.message, fail.details))
    finally:
        app._finish(state, status)
