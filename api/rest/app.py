"""The backend's Litestar application: /healthz, /readyz, /metrics, the OpenAI- and
Anthropic-compatible edges and the AuthService mirror (/v1/auth/*), every other path behind the
authentication middleware (api/rest/principal.py)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from litestar import Litestar, Response, get
from litestar.datastructures import State
from litestar.di import Provide
from litestar.types import ASGIApp, Receive, Scope, Send
from opentelemetry import trace
from opentelemetry.trace import SpanKind

from adapters.telemetry.metrics import CONTENT_TYPE_LATEST, Metrics
from adapters.telemetry.tracing import extract_context, server_span
from api.auth import Authenticator, TrustedProxies
from api.rest.anthropic_compat import AnthropicController
from api.rest.openai_compat import (
    ChatEdge,
    ModelHealthView,
    ModelListing,
    OpenAIController,
)
from api.rest.principal import authentication_middleware
from api.rest.problems import EXCEPTION_HANDLERS, problem
from application.chat import CompleteChat, StreamChat
from application.embeddings import EmbedTexts

__all__ = ["create_rest_app"]

Readiness = Callable[[], Awaitable[dict[str, str]]]

_TRACE_HEADERS = frozenset({b"traceparent", b"tracestate", b"baggage"})


def _telemetry_middleware(metrics: Metrics) -> Callable[[ASGIApp], ASGIApp]:
    tracer = trace.get_tracer("lumina.rest")

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] != "http":
                await app(scope, receive, send)
                return
            started = time.perf_counter()
            status = {"code": 500}
            route = scope.get("path", "")
            # only the W3C trace headers matter to the propagator; skip decoding the others
            headers = {
                k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", ()) if k in _TRACE_HEADERS
            }

            async def send_wrapper(message: Any) -> None:
                if message["type"] == "http.response.start":
                    status["code"] = message["status"]
                await send(message)

            with server_span(tracer, f"{scope.get('method', 'GET')} {route}", extract_context(headers), SpanKind.SERVER):
                try:
                    await app(scope, receive, send_wrapper)
                finally:
                    if route != "/metrics":
                        # the route's template (``/v1/memory/{memory_id}``), not the path: one label
                        # value per route, however many ids are asked for; unrouted paths share one
                        template = scope.get("path_template") or "unmatched"
                        metrics.observe_request("rest", template, str(status["code"]), time.perf_counter() - started)

        return middleware

    return factory


def create_rest_app(
    *, stream_chat: StreamChat, complete_chat: CompleteChat, metrics: Metrics, readiness: Readiness,
    authenticator: Authenticator, catalog: ModelListing | None = None, embed_texts: EmbedTexts | None = None,
    model_health: ModelHealthView | None = None, auth: Any = None, proxies: TrustedProxies | None = None,
) -> Litestar:
    """``authenticator`` resolves every caller (api/auth.py); ``auth`` (api/grpc/auth.py's
    ``AuthOperations``) serves /v1/auth/* when the backend has an identity module. ``proxies``:
    who may forward a client's address (default: the identity module's setting, else loopback)."""
    proxies = proxies or getattr(auth, "proxies", None)
    @get("/healthz", sync_to_thread=False)
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @get("/readyz")
    async def readyz() -> Any:
        checks = await readiness()
        if all(v == "ok" for v in checks.values()):
            return {"status": "ready", "checks": checks}
        return problem(503, "Not ready", "some dependencies are not ready", checks=checks)

    @get("/metrics", sync_to_thread=False, include_in_schema=False)
    def prometheus() -> Response[bytes]:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    chat_edge = ChatEdge(stream=stream_chat, complete=complete_chat)
    handlers: list[Any] = [healthz, readyz, prometheus, OpenAIController, AnthropicController]
    if auth is not None:
        from api.rest.auth import create_auth_router

        handlers.append(create_auth_router(auth))
    return Litestar(
        route_handlers=handlers,
        dependencies={
            "stream_chat": Provide(lambda: stream_chat, sync_to_thread=False),
            "complete_chat": Provide(lambda: complete_chat, sync_to_thread=False),
            "catalog": Provide(lambda: catalog, sync_to_thread=False),  # GET /v1/models
            "embed_texts": Provide(lambda: embed_texts, sync_to_thread=False),  # POST /v1/embeddings
            "model_health": Provide(lambda: model_health, sync_to_thread=False),  # health in GET /v1/models
        },
        # POST /v1/chat/completions is a raw ASGI handler: it takes the chat edge from the state
        state=State({"chat_edge": chat_edge}),
        exception_handlers=EXCEPTION_HANDLERS,
        # telemetry outermost, so rejected requests are traced and counted too
        middleware=[_telemetry_middleware(metrics), authentication_middleware(authenticator, proxies)],
        openapi_config=None,
        # Logging is configured once by the process (adapters.telemetry.logging). Litestar's default
        # would re-point the root logger at its own queue handler at INFO, so every upstream
        # request's httpx log line would cost a record, a queue hand-off and a thread wake-up.
        logging_config=None,
        debug=False,
    )



