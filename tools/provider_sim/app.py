"""The simulator as a raw ASGI 3 application (no framework: it is the benchmarks' baseline).

Routes: ``POST /v1/chat/completions``, ``POST /v1/embeddings`` (``openai_embeddings``), ``GET
/v1/models``, ``GET /v1/models/{id}`` (bearer auth like the real API), ``GET /_sim/stats`` and
``POST /_sim/reset`` (no auth). What a chat request is answered with: ``openai_answer``; transport
faults (refuse, stall, disconnect-after-N, malformed, slow drip): ``faults``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgspec

from tools.provider_sim import faults as _faults
from tools.provider_sim import openai_answer as _oa
from tools.provider_sim import wire
from tools.provider_sim.config import EMBEDDING_MODELS, HEADER_FIELDS, VENDOR_FAULTS, Knobs, SimConfig, knobs_from_headers
from tools.provider_sim.stats import RequestRecord, Stats
from tools.provider_sim.text import prompt_tokens

__all__ = ["Receive", "Scope", "Send", "SimulatorApp"]

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MAX_BODY = 32 * 1024 * 1024
_JSON = (b"content-type", b"application/json")
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]
_DONE = b"data: [DONE]\n\n"

# fault -> (status, type, code, message)
_FAULT_ERRORS: dict[str, tuple[int, str, str | None, str]] = {
    "400": (400, "invalid_request_error", "invalid_value", "Simulated invalid request."),
    "401": (401, "invalid_request_error", "invalid_api_key", "Simulated authentication failure."),
    "403": (403, "invalid_request_error", "unsupported_country_region_territory", "Simulated permission denial."),
    "404": (404, "invalid_request_error", "model_not_found", "Simulated missing model."),
    "429": (429, "requests", "rate_limit_exceeded", "Rate limit reached for requests (simulated)."),
    "500": (500, "server_error", "internal_error", "The server had an error while processing your request."),
    "503": (503, "server_error", "overloaded", "The engine is currently overloaded, please try again later."),
    "529": (529, "server_error", "overloaded", "The engine is currently overloaded, please try again later."),
    "midstream": (500, "server_error", "internal_error", "The server had an error while processing your request."),
}


class SimulatorApp:
    """``SimulatorApp(config, stats)``: an ASGI app. ``stats`` is shared with the server so that
    accepted connections are counted too."""

    def __init__(self, config: SimConfig | None = None, stats: Stats | None = None) -> None:
        self.config = config or SimConfig()
        self.stats = stats or Stats()
        self._seq = 0
        self._models_body = wire.encode(
            wire.ModelList(
                data=[wire.Model(id=m, context_window=w) for m, w in self.config.models.items()]
                + [wire.Model(id=m) for m in EMBEDDING_MODELS]
            )
        )
        self._max_context = max(self.config.models.values(), default=131_072)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            while True:
                msg = await receive()
                if msg["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif msg["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return

    # --- routing ----------------------------------------------------------------------------

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        method: str = scope["method"]
        if path == "/v1/messages" or (path.startswith("/v1/models") and _anthropic.is_anthropic_models(scope)):
            return await _anthropic.handle(self, scope, receive, send)
        if _gemini.is_gemini(scope):
            return await _gemini.serve(self, scope, receive, send)
        if path == "/v1/embeddings":
            return await _openai_embeddings.serve(self, scope, receive, send)
        if path == "/v1/chat/completions":
            if method != "POST":
                return await _error(send, 405, "invalid_request_error", None, f"Method {method} not allowed.")
            return await self._chat(scope, receive, send)
        if path == "/v1/models" or path.startswith("/v1/models/"):
            if not _bearer(scope, self.config.api_key)[0]:
                return await _error(send, 401, "invalid_request_error", "invalid_api_key", "Invalid API key.")
            if path == "/v1/models":
                return await _send_json(send, 200, self._models_body)
            name = path.removeprefix("/v1/models/")
            if name not in self.config.models:
                return await _error(
                    send, 404, "invalid_request_error", "model_not_found", f"The model `{name}` does not exist."
                )
            return await _send_json(
                send, 200, wire.encode(wire.Model(id=name, context_window=self.config.models[name]))
            )
        if path == "/_sim/stats" and method == "GET":
            return await _send_json(send, 200, wire.encode(self.stats.snapshot()))
        if path == "/_sim/reset" and method == "POST":
            self.stats.reset()
            return await _send_json(send, 200, b"{}")
        return await _error(send, 404, "invalid_request_error", None, f"Invalid URL ({method} {path})")

    # --- chat completions --------------------------------------------------------------------

    async def _chat(self, scope: Scope, receive: Receive, send: Send) -> None:
        started = time.perf_counter()
        body = await _read_body(receive)
        stats = self.stats
        stats.requests += 1
        self._seq += 1
        request_id = f"req_sim{self._seq:08d}"
        state = _Record(request_id, started)

        overrides: dict[str, str] = {}
        for name, value in scope["headers"]:
            field = HEADER_FIELDS.get(name)
            if field is not None:
                overrides[field] = value.decode("latin-1")
        ok, token = _bearer(scope, self.config.api_key)
        if not ok:
            message = (
                f"Incorrect API key provided: {token}." if token else "You didn't provide an API key."
            )  # echoes the key on purpose (worse than the real API) so adapters' redaction is tested
            return await self._fail(send, state, 401, "invalid_request_error", "invalid_api_key", message)
        try:
            knobs = knobs_from_headers(self.config.knobs, overrides)
        except ValueError as exc:
            return await self._fail(send, state, 400, "invalid_request_error", "invalid_sim_header", str(exc))
        if body is None:
            return await self._fail(send, state, 413, "invalid_request_error", None, "Request body too large.")
        try:
            req = wire.decode_request(body)
        except msgspec.DecodeError as exc:
            return await self._fail(send, state, 400, "invalid_request_error", None, f"Invalid body: {exc}")
        state.model, state.stream, state.fault = req.model, req.stream, knobs.fault
        if req.stream:
            stats.streams += 1
        if not req.messages:
            return await self._fail(
                send, state, 400, "invalid_request_error", "invalid_value", "messages must not be empty"
            )
        window = self.config.models.get(req.model)
        if window is None:
            if self.config.strict_models:
                msg = f"The model `{req.model}` does not exist or you do not have access to it."
                return await self._fail(send, state, 404, "invalid_request_error", "model_not_found", msg)
            window = self._max_context
        cap = req.max_completion_tokens if req.max_completion_tokens is not None else req.max_tokens
        if cap is not None and cap < 1:
            return await self._fail(
                send, state, 400, "invalid_request_error", "invalid_value", "max_tokens must be >= 1"
            )
        invalid = _oa.validate(req)
        if invalid is not None:
            message, param = invalid
            return await self._fail(send, state, 400, "invalid_request_error", "invalid_value", message, param=param)

        watch = _DisconnectWatch(receive)
        try:
            if knobs.latency_ms and await watch.pause(knobs.latency_ms / 1000):
                return self._finish(state, 0, disconnected=True)
            parsed = _faults.parse(knobs.fault, vendor=VENDOR_FAULTS)
            done = await _faults.before_response(parsed, send, watch, stream=req.stream, stall_headers=_SSE_HEADERS)
            if done is not None:
                return self._finish(state, done[0], disconnected=done[1])
            fault = knobs.fault
            if parsed is not None and parsed.kind in ("status", "vendor") and fault != "context_length" and (
                fault != "midstream" or not req.stream
            ):
                status, etype, code, message = _FAULT_ERRORS[fault]
                extra = [(b"retry-after", _num(knobs.retry_after))] if status == 429 else []
                return await self._fail(send, state, status, etype, code, message, extra)
            texts = [m.text() for m in req.messages]
            state.messages = [(m.role, t) for m, t in zip(req.messages, texts, strict=True)]
            p_tokens = prompt_tokens(texts)
            state.prompt_tokens = p_tokens
            if fault == "context_length" or p_tokens > window:
                message = (
                    f"This model's maximum context length is {window} tokens. However, your messages "
                    f"resulted in {max(p_tokens, window + 1)} tokens. Please reduce the length of the messages."
                )
                return await self._fail(
                    send, state, 400, "invalid_request_error", "context_length_exceeded", message, param="messages"
                )
            answer = _oa.build_answer(req, texts, knobs, cap, p_tokens, request_id.removeprefix("req_"))
            state.completion_tokens = answer.completion_tokens
            created = int(time.time())
            cid = f"chatcmpl-{request_id}"
            if req.stream:
                include_usage = req.stream_options is not None and req.stream_options.include_usage
                gone = await self._stream(send, watch, knobs, req.model, cid, created, answer, include_usage)
                return self._finish(state, 200, disconnected=gone)
            body = _completion(req.model, cid, created, answer)
            await _send_json(send, 200, _faults.MALFORMED if parsed is not None and parsed.kind == "malformed" else body, request_id)
            return self._finish(state, 200)
        finally:
            watch.close()

    async def _stream(
        self,
        send: Send,
        watch: _DisconnectWatch,
        knobs: Knobs,
        model: str,
        cid: str,
        created: int,
        answer: _oa.Answer,
        include_usage: bool,
    ) -> bool:
        """Send the SSE stream; True when the client went away before its end."""
        usage_field: wire.Usage | None | msgspec.UnsetType = None if include_usage else msgspec.UNSET
        stats = self.stats

        def chunk(delta: wire.Delta, finish: str | None = None) -> bytes:
            stats.chunks_sent += 1
            return wire.encode(
                wire.ChatCompletionChunk(
                    id=cid,
                    created=created,
                    model=model,
                    choices=[wire.ChunkChoice(index=0, delta=delta, finish_reason=finish)],
                    usage=usage_field,
                )
            )

        fault = _faults.parse(knobs.fault, vendor=VENDOR_FAULTS)
        writer = _faults.SseWriter(send, watch, fault=fault, delay_ms=knobs.chunk_delay_ms)
        await writer.start([*_SSE_HEADERS, (b"x-request-id", cid.removeprefix("chatcmpl-").encode())])
        if not await writer.event(chunk(wire.Delta(role="assistant", content=None if answer.calls else ""))):
            return writer.gone
        body = _oa.stream_deltas(answer)
        break_at = len(body) // 2 if knobs.fault == "midstream" else -1
        for i, delta in enumerate(body):
            if i == break_at:
                _, etype, code, message = _FAULT_ERRORS["midstream"]
                await writer.event(wire.encode(wire.ErrorEnvelope(wire.ErrorBody(message=message, type=etype, code=code))))
                return await writer.end()
            if not await writer.event(chunk(delta)):
                return writer.gone
        if not await writer.event(chunk(wire.Delta(), answer.finish_reason)):
            return writer.gone
        if include_usage:
            last = wire.ChatCompletionChunk(id=cid, created=created, model=model, choices=[], usage=answer.usage)
            if not await writer.event(wire.encode(last)):
                return writer.gone
        return await writer.end(_DONE)

    # --- bookkeeping ---------------------------------------------------------------------------

    async def _fail(
        self,
        send: Send,
        state: _Record,
        status: int,
        etype: str,
        code: str | None,
        message: str,
        extra_headers: list[tuple[bytes, bytes]] | None = None,
        param: str | None = None,
    ) -> None:
        await _error(send, status, etype, code, message, extra_headers, param, state.request_id)
        self._finish(state, status)

    def _finish(self, state: _Record, status: int, *, disconnected: bool = False) -> None:
        self.stats.record(
            RequestRecord(
                request_id=state.request_id,
                model=state.model,
                stream=state.stream,
                status=status,
                prompt_tokens=state.prompt_tokens,
                completion_tokens=state.completion_tokens,
                disconnected=disconnected,
                duration_ms=round((time.perf_counter() - state.started) * 1000, 3),
                fault=state.fault,
                ended_at=time.time(),
                messages=state.messages,
            )
        )


class _Record:
    __slots__ = ("completion_tokens", "fault", "messages", "model", "prompt_tokens", "request_id", "started", "stream")

    def __init__(self, request_id: str, started: float) -> None:
        self.request_id = request_id
        self.started = started
        self.model = ""
        self.stream = False
        self.fault: str | None = None
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.messages: list[tuple[str, str]] = []


_DisconnectWatch = _faults.DisconnectWatch  # the name other wire formats import


def _completion(model: str, cid: str, created: int, answer: _oa.Answer) -> bytes:
    message = _oa.completion_message(answer)
    choice = wire.Choice(index=0, message=message, finish_reason=answer.finish_reason)
    return wire.encode(wire.ChatCompletion(id=cid, created=created, model=model, choices=[choice], usage=answer.usage))


def _bearer(scope: Scope, expected: str | None) -> tuple[bool, str]:
    """(accepted, token): any non-empty bearer token, or exactly ``expected`` when set."""
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            token = token.strip()
            if scheme.lower() != "bearer" or not token:
                return False, token
            return (expected is None or token == expected), token
    return False, ""


async def _read_body(receive: Receive) -> bytes | None:
    """The request body, or None when it exceeds ``MAX_BODY``."""
    msg = await receive()
    body: bytes = msg.get("body", b"")
    if not msg.get("more_body"):
        return body
    parts = [body]
    size = len(body)
    while msg.get("more_body"):
        msg = await receive()
        chunk = msg.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        parts.append(chunk)
    return b"".join(parts)


def _num(value: float) -> bytes:
    return (str(int(value)) if float(value).is_integer() else str(value)).encode()


async def _send_json(send: Send, status: int, body: bytes, request_id: str | None = None) -> None:
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _error(
    send: Send,
    status: int,
    etype: str,
    code: str | None,
    message: str,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    param: str | None = None,
    request_id: str | None = None,
) -> None:
    body = wire.encode(wire.ErrorEnvelope(wire.ErrorBody(message=message, type=etype, code=code, param=param)))
    headers = [_JSON, (b"content-length", str(len(body)).encode())]
    if request_id is not None:
        headers.append((b"x-request-id", request_id.encode()))
    if extra_headers:
        headers.extend(extra_headers)
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# last: the other wire formats build on this module's helpers (a cycle that is safe at this point)
from tools.provider_sim import anthropic as _anthropic
from tools.provider_sim import openai_embeddings as _openai_embeddings
from tools.provider_sim import gemini as _gemini
