"""One chat turn as Server-Sent Events: calls the backend's ``StreamComplete`` over gRPC and turns
each unified chunk into an HTML fragment for htmx to swap in.

Events, in order: ``reasoning`` (escaped text of the model's visible thinking, appended to the
turn's collapsible "thinking" block; only for models that expose it), ``delta`` (escaped answer
text, appended), then ``meta`` (provider, model, usage, cost)
or ``failure`` (a readable error), and always ``done`` last, which tells the browser to close the
stream instead of reconnecting. Errors of the gRPC call are translated here, never raised to the
browser as a stack trace.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing

import betterproto2
import structlog
from grpclib.const import Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError
from jinja2 import Environment
from litestar.response import ServerSentEventMessage
from markupsafe import escape
from opentelemetry.trace import SpanKind

from lumina_client.lumina.v1 import (
    ChatMessage,
    ChatParameters,
    ChatServiceStub,
    Finish,
    Role,
    StreamCompleteRequest,
    StreamError,
    Usage,
)
from web.pending import PendingPrompt
from web.telemetry import traced_metadata, tracer

__all__ = [
    "DELTA",
    "DONE",
    "FAILURE",
    "META",
    "REASONING",
    "answer_events",
    "describe_grpc_error",
    "expired_events",
    "signed_out_events",
]

REASONING = "reasoning"
DELTA = "delta"
META = "meta"
FAILURE = "failure"
DONE = "done"

_log = structlog.get_logger(__name__)

# What a person should read for each gRPC status; the backend's own message follows.
_STATUS_TEXT: dict[Status, str] = {
    Status.INVALID_ARGUMENT: "The backend rejected the request",
    Status.NOT_FOUND: "Not found",
    Status.FAILED_PRECONDITION: "The request cannot be served",
    Status.UNAUTHENTICATED: "Your session has ended: sign in again",
    Status.PERMISSION_DENIED: "Not allowed",
    Status.RESOURCE_EXHAUSTED: "A limit was reached",
    Status.UNAVAILABLE: "The backend is unavailable",
    Status.DEADLINE_EXCEEDED: "The backend did not answer in time",
    Status.CANCELLED: "The request was cancelled",
}


def describe_grpc_error(exc: GRPCError) -> str:
    lead = _STATUS_TEXT.get(exc.status, f"The backend failed ({exc.status.name})")
    return f"{lead}: {exc.message}" if exc.message else f"{lead}."


def _render(env: Environment, name: str, **context: object) -> str:
    return env.get_template(name).render(**context)


def _failure(env: Environment, message: str) -> ServerSentEventMessage:
    return ServerSentEventMessage(event=FAILURE, data=_render(env, "_error.html", message=message))


def _done() -> ServerSentEventMessage:
    return ServerSentEventMessage(event=DONE, data="")


async def expired_events(env: Environment) -> AsyncIterator[ServerSentEventMessage]:
    """The stream for an unknown or already used id (a reload, a reconnect, an evicted prompt)."""
    yield _failure(env, "This answer is no longer available: send the prompt again.")
    yield _done()


async def signed_out_events(env: Environment) -> AsyncIterator[ServerSentEventMessage]:
    """The stream for a browser without a session (signed out in another tab, cookie expired)."""
    yield _failure(env, "Your session has ended: sign in again.")
    yield _done()


async def answer_events(
    stub: ChatServiceStub,
    pending: PendingPrompt,
    env: Environment,
    *,
    backend_target: str,
    timeout: float | None = None,
    metadata: Mapping[str, str] | None = None,
) -> AsyncIterator[ServerSentEventMessage]:
    request = StreamCompleteRequest(
        parameters=ChatParameters(
            model=pending.model,
            messages=[ChatMessage(role=Role.USER, content=pending.prompt)],
            conversation_id=pending.conversation_id,
        )
    )
    usage: Usage | None = None
    finished = False
    try:
        # aclosing: when the browser goes away, the gRPC stream is cancelled at once.
        with tracer().start_as_current_span("console chat", kind=SpanKind.CLIENT):
            call_metadata = traced_metadata(metadata)
        async with aclosing(stub.stream_complete(request, timeout=timeout, metadata=call_metadata or None)) as chunks:
            async for chunk in chunks:
                kind, value = betterproto2.which_one_of(chunk, "chunk")
                match kind, value:
                    case "text_delta", delta if delta.text:
                        yield ServerSentEventMessage(event=DELTA, data=f"<span>{escape(delta.text)}</span>")
                    case "reasoning_delta", thought if thought.text:
                        yield ServerSentEventMessage(event=REASONING, data=f"<span>{escape(thought.text)}</span>")
                    case "usage", Usage() as new_usage:
                        usage = new_usage
                    case "finish", Finish() as finish:
                        finished = True
                        yield ServerSentEventMessage(
                            event=META, data=_render(env, "_meta.html", **_meta(finish, usage))
                        )
                    case "error", StreamError() as error:
                        text = f"{error.message or 'The provider failed'} ({error.code or 'error'})"
                        if error.retryable:
                            text += ". Retrying may help."
                        yield _failure(env, text)
                        finished = True
                    case _:
                        pass  # tool-call fragments: the console does not offer tools
        if not finished:
            yield _failure(env, "The backend ended the answer without finishing it.")
    except GRPCError as exc:
        _log.info("web.chat.grpc_error", status=exc.status.name, message=exc.message)
        yield _failure(env, describe_grpc_error(exc))
    except (StreamTerminatedError, ProtocolError) as exc:
        _log.warning("web.chat.stream_lost", error=str(exc))
        yield _failure(env, "The connection to the backend was lost during the answer.")
    except TimeoutError:
        yield _failure(env, "The backend did not answer in time.")
    except OSError as exc:
        _log.warning("web.chat.backend_unreachable", target=backend_target, error=str(exc))
        yield _failure(env, f"Cannot reach the backend at {backend_target}: is `lumina serve` running?")
    yield _done()


def _meta(finish: Finish, usage: Usage | None) -> dict[str, object]:
    meta = finish.metadata
    cost_micros = usage.cost_micros if usage and usage.cost_micros else (meta.cost_micros if meta else 0)
    return {
        "provider": meta.provider if meta else "",
        "provider_label": meta.provider_label if meta else "",
        "model": meta.model if meta else "",
        "latency_ms": meta.latency_ms if meta else 0,
        "request_id": meta.request_id if meta else "",
        "usage": usage,
        "cost": f"${cost_micros / 1_000_000:.6f}",
        "reason": finish.reason.name.lower().replace("_", " ") if finish.reason else "",
    }
