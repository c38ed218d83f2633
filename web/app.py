"""The console's Litestar app: pages and fragments for htmx, answers streamed over SSE.

The console is a gRPC client of the backend (``lumina_client``), nothing more: one grpclib
``Channel`` is opened when the app starts and closed when it stops.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

from grpclib.client import Channel
from grpclib.exceptions import GRPCError
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Litestar, Request, get, post
from litestar.datastructures import State
from litestar.middleware import DefineMiddleware
from litestar.params import FromPath
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Response, ServerSentEvent, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from lumina_client.lumina.v1 import ChatServiceStub
from web import account, auth, oidc
from web.backend import call_metadata, signed_in
from web.pending import PendingPrompt, PendingPrompts
from web.proxies import DEFAULT_TRUSTED_PROXIES, TrustedProxies
from web.render import backend_problem, is_htmx, page
from web.security import SecurityMiddleware
from web.session import (
    SESSION_COOKIE,
    EnrolmentRequired,
    SignInRequired,
    bearer,
    safe_next,
)
from web.streaming import answer_events, expired_events, signed_out_events

__all__ = ["MAX_MODEL_CHARS", "MAX_PROMPT_CHARS", "create_app", "parse_target"]

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR_ASSETS = ("htmx.min.js", "sse.min.js", "simplewebauthn-browser.umd.min.js")
MAX_PROMPT_CHARS = 32_000
MAX_MODEL_CHARS = 200


def parse_target(target: str) -> tuple[str, int]:
    """Split ``host:port`` (``[::1]:50051`` for IPv6) or raise ``ValueError`` saying what is wrong."""
    host, sep, port = target.strip().rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"backend target {target!r}: expected host:port, e.g. 127.0.0.1:50051")
    return host, int(port)


def _environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _fragment(html: str) -> Response[str]:
    return Response(content=html, media_type="text/html")


@get("/", sync_to_thread=False)
def index() -> Redirect:
    return Redirect(path="/chat", status_code=303)


@get("/healthz", sync_to_thread=False)
def healthz() -> Response[str]:
    return Response(content="ok", media_type="text/plain")


@get("/chat")
async def chat_page(request: Request) -> Template:
    principal = await signed_in(request)
    return page(request, "chat.html", principal=principal, active="chat", conversation_id=secrets.token_hex(8))


@post("/chat", status_code=200)
async def send_prompt(request: Request, state: State) -> Response[str]:
    if not bearer(request):
        raise SignInRequired()
    form = await request.form()
    prompt = str(form.get("prompt", "")).strip()
    model = str(form.get("model", "")).strip()
    conversation_id = str(form.get("conversation_id", "")).strip()[:64]
    env: Environment = state.env
    problem = None
    if not prompt:
        problem = "Type a prompt first."
    elif len(prompt) > MAX_PROMPT_CHARS:
        problem = f"The prompt is too long ({len(prompt)} characters; at most {MAX_PROMPT_CHARS})."
    elif len(model) > MAX_MODEL_CHARS:
        problem = f"The model name is too long (at most {MAX_MODEL_CHARS} characters)."
    if problem:
        return _fragment(env.get_template("_notice.html").render(message=problem))
    pending: PendingPrompts = state.pending
    turn_id = pending.put(PendingPrompt(prompt=prompt, model=model, conversation_id=conversation_id))
    return _fragment(env.get_template("_turn.html").render(turn_id=turn_id, prompt=prompt, model=model))


@get("/chat/stream/{turn_id:str}", sync_to_thread=False)
def stream_answer(request: Request, turn_id: FromPath[str], state: State) -> ServerSentEvent:
    pending: PendingPrompts = state.pending
    env: Environment = state.env
    if not bearer(request):
        return ServerSentEvent(signed_out_events(env))
    prompt = pending.take(turn_id)
    if prompt is None:
        return ServerSentEvent(expired_events(env))
    events = answer_events(
        ChatServiceStub(state.channel),
        prompt,
        env,
        backend_target=state.backend_target,
        timeout=state.call_timeout,
        metadata=call_metadata(request, traced=False),
    )
    return ServerSentEvent(events)


def _sign_in_required(request: Request, _: SignInRequired) -> Response[object]:
    """Back to /login (then here again); a stale session cookie is dropped on the way."""
    target = safe_next(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    response: Response[object]
    if is_htmx(request):
        response = Response(content="", status_code=401, headers={"HX-Redirect": "/login"})
    elif request.method != "GET" and "json" in (request.headers.get("content-type") or ""):
        response = Response(content={"error": "Sign in again.", "redirect": "/login"}, status_code=401)
    elif request.method != "GET":
        response = Redirect(path="/login", query_params={"notice": "expired"}, status_code=303)
    else:
        response = Redirect(path="/login", query_params={"next": target}, status_code=303)
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def _enrolment_required(request: Request, _: EnrolmentRequired) -> Response[object]:
    """A one-factor session of an organisation that requires MFA: to the account page to enrol."""
    if is_htmx(request):
        return Response(content="", status_code=403, headers={"HX-Redirect": "/account?notice=mfa_required"})
    if request.method != "GET" and "json" in (request.headers.get("content-type") or ""):
        return Response(content={"error": "Add a second factor first.", "redirect": "/account?notice=mfa_required"},
                        status_code=403)
    return Redirect(path="/account", query_params={"notice": "mfa_required"}, status_code=303)


def _backend_failed(request: Request, exc: Exception) -> Response[object]:
    """A page whose backend call failed for a reason other than the session: one readable line."""
    message, status = backend_problem(request, exc)  # type: ignore[arg-type]
    if is_htmx(request):
        html = request.app.state.env.get_template("_notice.html").render(message=message)
        return Response(content=html, media_type="text/html", status_code=status)
    return page(request, "error.html", status=status, message=message)


def create_app(
    backend_target: str,
    *,
    grpc_metadata: Mapping[str, str] | None = None,
    call_timeout: float | None = 300.0,
    pending_capacity: int = 256,
    secret: bytes | None = None,
    secure_cookies: bool = False,
    public_url: str | None = None,
    trusted_proxies: str = DEFAULT_TRUSTED_PROXIES,
    debug: bool = False,
) -> Litestar:
    """Build the console for the backend's gRPC endpoint ``backend_target`` ("host:port").

    ``grpc_metadata`` is sent with every call (the signed-in user's session goes along as
    ``authorization``); ``call_timeout`` bounds one answer. ``secret`` signs CSRF tokens (random
    per process unless given: give the same one to every replica); ``secure_cookies`` marks
    cookies Secure and adds HSTS, for a console served over TLS. ``public_url`` is where browsers
    reach the console (OIDC's redirect URI is ``<public_url>/oidc/callback``; None: the address
    each request came to). ``trusted_proxies`` (comma-separated addresses or networks) may name
    the browser in ``x-forwarded-for`` (web/proxies.py).
    """
    host, port = parse_target(backend_target)
    proxies = TrustedProxies(trusted_proxies)
    missing = [name for name in VENDOR_ASSETS if not (STATIC / "vendor" / name).is_file()]
    if missing:
        raise RuntimeError(
            f"web/static/vendor/{missing[0]} is missing: run `make install` (npm ci + tools.vendor_assets)"
        )
    env = _environment()

    @asynccontextmanager
    async def grpc_channel(app: Litestar) -> AsyncIterator[None]:
        channel = Channel(host, port)
        app.state.channel = channel
        try:
            yield
        finally:
            channel.close()

    return Litestar(
        route_handlers=[
            index,
            healthz,
            chat_page,
            send_prompt,
            stream_answer,
            *auth.ROUTES,
            *account.ROUTES,
            *oidc.ROUTES,
            create_static_files_router(path="/static", directories=[STATIC]),
        ],
        lifespan=[grpc_channel],
        middleware=[DefineMiddleware(SecurityMiddleware, secret=secret or secrets.token_bytes(32), tls=secure_cookies)],
        exception_handlers={
            SignInRequired: _sign_in_required, EnrolmentRequired: _enrolment_required,
            GRPCError: _backend_failed, OSError: _backend_failed,
        },
        state=State(
            {
                "backend_target": backend_target,
                "env": env,
                "pending": PendingPrompts(pending_capacity),
                "call_timeout": call_timeout,
                "grpc_metadata": dict(grpc_metadata or {}),
                "secure_cookies": secure_cookies,
                "public_url": public_url.rstrip("/") if public_url else None,
                "proxies": proxies,
            }
        ),
        template_config=TemplateConfig(instance=JinjaTemplateEngine.from_environment(env)),
        openapi_config=None,  # a console, not an API: no schema pages (they would load scripts from a CDN)
        debug=debug,
    )
