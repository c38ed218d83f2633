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
from jinja2 import Environment, FileSystemLoader, StrictUndefined
from litestar import Litestar, Request, get, post
from litestar.datastructures import State
from litestar.params import FromPath
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.response import Redirect, Response, ServerSentEvent, Template
from litestar.static_files import create_static_files_router
from litestar.template.config import TemplateConfig

from lumina_client.lumina.v1 import ChatServiceStub
from web.pending import PendingPrompt, PendingPrompts
from web.streaming import answer_events, expired_events

__all__ = ["MAX_MODEL_CHARS", "MAX_PROMPT_CHARS", "create_app", "parse_target"]

HERE = Path(__file__).resolve().parent
STATIC = HERE / "static"
VENDOR_ASSETS = ("htmx.min.js", "sse.min.js")
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
    return Redirect(path="/chat")


@get("/healthz", sync_to_thread=False)
def healthz() -> Response[str]:
    return Response(content="ok", media_type="text/plain")


@get("/chat", sync_to_thread=False)
def chat_page(state: State) -> Template:
    return Template(
        template_name="chat.html",
        context={"backend_target": state.backend_target, "conversation_id": secrets.token_hex(8)},
    )


@post("/chat", status_code=200)
async def send_prompt(request: Request, state: State) -> Response[str]:
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
def stream_answer(turn_id: FromPath[str], state: State) -> ServerSentEvent:
    pending: PendingPrompts = state.pending
    env: Environment = state.env
    prompt = pending.take(turn_id)
    if prompt is None:
        return ServerSentEvent(expired_events(env))
    events = answer_events(
        ChatServiceStub(state.channel),
        prompt,
        env,
        backend_target=state.backend_target,
        timeout=state.call_timeout,
        metadata=state.grpc_metadata,
    )
    return ServerSentEvent(events)


def create_app(
    backend_target: str,
    *,
    grpc_metadata: Mapping[str, str] | None = None,
    call_timeout: float | None = 300.0,
    pending_capacity: int = 256,
    debug: bool = False,
) -> Litestar:
    """Build the console for the backend's gRPC endpoint ``backend_target`` ("host:port").

    ``grpc_metadata`` is sent with every call (e.g. credentials); ``call_timeout`` bounds one answer.
    """
    host, port = parse_target(backend_target)
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
            create_static_files_router(path="/static", directories=[STATIC]),
        ],
        lifespan=[grpc_channel],
        state=State(
            {
                "backend_target": backend_target,
                "env": env,
                "pending": PendingPrompts(pending_capacity),
                "call_timeout": call_timeout,
                "grpc_metadata": dict(grpc_metadata or {}),
            }
        ),
        template_config=TemplateConfig(instance=JinjaTemplateEngine.from_environment(env)),
        debug=debug,
    )
