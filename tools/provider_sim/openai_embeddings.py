"""``POST /v1/embeddings`` in the OpenAI wire format: deterministic unit vectors (equal inputs give
equal vectors), ``dimensions`` honoured, ``encoding_format`` float or base64 (little-endian
float32), usage in prompt tokens. Models: ``config.EMBEDDING_MODELS``. Faults as for chat:
status faults, refuse, stall, disconnect(-after-N) (the connection drops), malformed (a body that
is not JSON). Counted in the stats like chat requests."""

from __future__ import annotations

import base64
import struct
import time

import msgspec

from tools.provider_sim import faults, wire
from tools.provider_sim.app import (
    _FAULT_ERRORS,
    _JSON,
    Receive,
    Scope,
    Send,
    SimulatorApp,
    _bearer,
    _DisconnectWatch,
    _num,
    _read_body,
    _Record,
)
from tools.provider_sim.config import EMBEDDING_MODELS, HEADER_FIELDS, VENDOR_FAULTS, knobs_from_headers
from tools.provider_sim.text import embedding, prompt_tokens

__all__ = ["MAX_INPUTS", "serve"]

MAX_INPUTS = 2048


def _vector(values: list[float], encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
    return values


async def serve(app: SimulatorApp, scope: Scope, receive: Receive, send: Send) -> None:
    if scope["method"] != "POST":
        return await app._fail(send, _Record("", time.perf_counter()), 405, "invalid_request_error", None, "Method not allowed.")
    started = time.perf_counter()
    body = await _read_body(receive)
    app.stats.requests += 1
    app._seq += 1
    state = _Record(f"req_sim{app._seq:08d}", started)
    fail = app._fail
    ok, token = _bearer(scope, app.config.api_key)
    if not ok:
        message = f"Incorrect API key provided: {token}." if token else "You didn't provide an API key."
        return await fail(send, state, 401, "invalid_request_error", "invalid_api_key", message)
    overrides = {
        field: value.decode("latin-1")
        for name, value in scope["headers"]
        if (field := HEADER_FIELDS.get(name)) is not None
    }
    try:
        knobs = knobs_from_headers(app.config.knobs, overrides)
    except ValueError as exc:
        return await fail(send, state, 400, "invalid_request_error", "invalid_sim_header", str(exc))
    if body is None:
        return await fail(send, state, 413, "invalid_request_error", None, "Request body too large.")
    try:
        req = wire.decode_embedding_request(body)
    except msgspec.DecodeError as exc:
        return await fail(send, state, 400, "invalid_request_error", None, f"Invalid body: {exc}")
    state.model, state.fault = req.model, knobs.fault
    dims = EMBEDDING_MODELS.get(req.model)
    if dims is None:
        message = f"The model `{req.model}` does not exist or you do not have access to it."
        return await fail(send, state, 404, "invalid_request_error", "model_not_found", message)
    texts = req.texts()
    if not texts or len(texts) > MAX_INPUTS or any(not t for t in texts):
        message = f"'input' must hold 1 to {MAX_INPUTS} non-empty inputs."
        return await fail(send, state, 400, "invalid_request_error", "invalid_value", message, param="input")
    if req.dimensions is not None and not (1 <= req.dimensions <= dims):
        message = f"'dimensions' must be between 1 and {dims} for {req.model}."
        return await fail(send, state, 400, "invalid_request_error", "invalid_value", message, param="dimensions")
    if req.encoding_format not in ("float", "base64"):
        return await fail(send, state, 400, "invalid_request_error", "invalid_value", "Invalid 'encoding_format'.")

    watch = _DisconnectWatch(receive)
    try:
        if knobs.latency_ms and await watch.pause(knobs.latency_ms / 1000):
            return app._finish(state, 0, disconnected=True)
        fault = faults.parse(knobs.fault, vendor=VENDOR_FAULTS)
        if fault is not None:
            if fault.kind == "refuse" or fault.kind == "disconnect":
                await faults.drop_connection(send)
                return app._finish(state, 0)
            if fault.kind == "stall":
                return app._finish(state, 200, disconnected=await faults.stall(send, watch, [_JSON]))
            if fault.kind == "status" or fault.raw == "midstream":
                status, etype, code, message = _FAULT_ERRORS[fault.raw]
                extra = [(b"retry-after", _num(knobs.retry_after))] if status == 429 else []
                return await fail(send, state, status, etype, code, message, extra)
        tokens = sum(prompt_tokens([t]) for t in texts)
        state.prompt_tokens = tokens
        size = req.dimensions or dims
        payload = wire.encode(
            wire.EmbeddingList(
                data=[
                    wire.EmbeddingData(index=i, embedding=_vector(embedding(t, size), req.encoding_format))
                    for i, t in enumerate(texts)
                ],
                model=req.model,
                usage=wire.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens),
            )
        )
        if fault is not None and fault.kind == "malformed":
            payload = faults.MALFORMED
        headers = [_JSON, (b"content-length", str(len(payload)).encode()), (b"x-request-id", state.request_id.encode())]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": payload})
        return app._finish(state, 200)
    finally:
        watch.close()
