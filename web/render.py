"""Rendering pages and htmx fragments, and what every page shows (the backend, the signed-in user)."""

from __future__ import annotations

from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from litestar import Request, Response
from litestar.response import Template

__all__ = ["BACKEND_DOWN", "backend_problem", "fragment", "is_htmx", "json_error", "page"]

BACKEND_DOWN = "Cannot reach the backend at {target}: is `lumina serve` running?"


def page(request: Request, name: str, *, status: int = 200, **context: Any) -> Template:
    context.setdefault("principal", None)
    context.setdefault("notice", "")
    context.setdefault("error", "")
    context.setdefault("active", "")
    context.setdefault("backend_target", request.app.state.backend_target)
    return Template(template_name=name, context=context, status_code=status)


def fragment(request: Request, name: str, *, status: int = 200, **context: Any) -> Response[str]:
    html = request.app.state.env.get_template(name).render(request=request, **context)
    return Response(content=html, media_type="text/html", status_code=status)


def is_htmx(request: Request) -> bool:
    return request.headers.get("hx-request") == "true"


def json_error(message: str, status: int, **extra: Any) -> Response[dict[str, Any]]:
    return Response(content={"error": message, **extra}, status_code=status)


def backend_problem(request: Request, exc: GRPCError | OSError) -> tuple[str, int]:
    """A readable message and HTTP status for a failure that is not about the user's input."""
    target = request.app.state.backend_target
    if isinstance(exc, OSError):
        return BACKEND_DOWN.format(target=target), 503
    match exc.status:
        case Status.UNAVAILABLE:
            return BACKEND_DOWN.format(target=target), 503
        case Status.DEADLINE_EXCEEDED:
            return "The backend did not answer in time. Try again.", 504
        case Status.RESOURCE_EXHAUSTED:
            return "Too many attempts. Wait a few minutes, then try again.", 429
        case Status.PERMISSION_DENIED:
            return "Your role does not allow this.", 403
        case Status.INVALID_ARGUMENT:
            return f"The backend rejected the request: {exc.message}" if exc.message else "The request is not valid.", 400
        case Status.NOT_FOUND:
            return "Not found.", 404
        case _:
            return "The backend failed. Try again; if it keeps failing, check the backend's log.", 502
