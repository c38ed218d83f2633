"""Every REST error is ``application/problem+json`` (RFC 9457); never a stack trace."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

import structlog
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException

from api.errors import map_error
from domain.errors import (
    BudgetExceeded,
    DomainError,
    InvalidRequest,
    RateLimited,
    RateLimitExceeded,
)
from domain.identity import TooManyAttempts

__all__ = ["EXCEPTION_HANDLERS", "problem", "retry_after_header"]

log = structlog.get_logger("lumina.rest")
PROBLEM = "application/problem+json"


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds, rounded up (never tell a client to come back too early)."""
    return str(math.ceil(seconds))


def problem(status: int, title: str, detail: str, **extra: Any) -> Response[dict[str, Any]]:
    # ``message`` repeats ``detail``: OpenAI-style SDKs put a body's ``message`` (and only that) into
    # their exception's text, so every client library shows the reason
    body = {"type": "about:blank", "title": title, "status": status, "detail": detail, "message": detail, **extra}
    headers = {}
    if "retry_after" in extra and extra["retry_after"] is not None:
        headers["retry-after"] = retry_after_header(extra["retry_after"])
    if status == 401:  # RFC 9110 §11.6.1: a 401 names the scheme to authenticate with
        headers["www-authenticate"] = 'Bearer realm="lumina"'
    return Response(body, status_code=status, media_type=PROBLEM, headers=headers)


def _domain(_: Request[Any, Any, Any], exc: DomainError) -> Response[dict[str, Any]]:
    mapped = map_error(exc)
    extra: dict[str, Any] = {"code": exc.code}
    if isinstance(exc, InvalidRequest):
        extra["errors"] = [{"field": v.field, "message": v.description} for v in exc.violations]
    if isinstance(exc, RateLimited | TooManyAttempts | RateLimitExceeded):
        extra["retry_after"] = exc.retry_after
    if isinstance(exc, RateLimitExceeded):
        extra["rate_limit_id"] = exc.limit_id
    if isinstance(exc, BudgetExceeded):
        extra["budget"] = {"id": exc.budget_id, "name": exc.budget_name, "limit_micros": exc.limit_micros,
                           "resets_at": exc.resets_at}
        if exc.resets_at is not None:  # the period's end frees the budget
            extra["retry_after"] = max(0.0, (exc.resets_at - datetime.now(UTC)).total_seconds())
    response = problem(mapped.http_status, mapped.title, exc.message, **extra)
    if isinstance(exc, RateLimitExceeded):
        response.headers.update(exc.headers)  # x-ratelimit-* of the meters that refused
    return response


def _validation(_: Request[Any, Any, Any], exc: ValidationException) -> Response[dict[str, Any]]:
    errors = [{"field": str(e.get("key") or "body"), "message": str(e.get("message"))} for e in (exc.extra or []) if isinstance(e, dict)]
    return problem(400, "Malformed request body", str(exc.detail), code="invalid_request", errors=errors)


def _http(_: Request[Any, Any, Any], exc: HTTPException) -> Response[dict[str, Any]]:
    response = problem(exc.status_code, type(exc).__name__, str(exc.detail))
    if exc.headers:  # e.g. a 405's Allow
        response.headers.update(exc.headers)
    return response


def _unexpected(_: Request[Any, Any, Any], exc: Exception) -> Response[dict[str, Any]]:
    log.error("request failed", exc_info=exc)
    return problem(500, "Internal error", "internal error; the server log has the details", code="internal")


EXCEPTION_HANDLERS: dict[Any, Any] = {
    DomainError: _domain,
    ValidationException: _validation,
    HTTPException: _http,
    Exception: _unexpected,
}
