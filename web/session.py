"""The browser's session with the console, and how it becomes the backend's credential.

``lumina_session`` holds the backend's opaque session token (HttpOnly, SameSite=Lax, Path=/,
Secure when the console is served over TLS). The console keeps nothing else about a signed-in
user: every gRPC call carries ``authorization: Bearer <token>`` and the backend decides.
A login that still needs its second factor holds its pending token in ``lumina_pending``
(Path=/login, ten minutes), so console pages never see a half-signed-in session.
"""

from __future__ import annotations

from datetime import UTC, datetime

import google.rpc.error_details_pb2  # noqa: F401 - registers ErrorInfo/BadRequest for grpclib's details codec
from grpclib.const import Status
from grpclib.exceptions import GRPCError
from litestar import Request, Response
from litestar.datastructures import Cookie

from lumina_client.lumina.v1 import SessionToken
from web.security import csrf_cookie, new_nonce

__all__ = [
    "PENDING_COOKIE",
    "PENDING_PATH",
    "SESSION_COOKIE",
    "EnrolmentRequired",
    "SignInRequired",
    "bearer",
    "clear_auth_cookies",
    "error_reason",
    "field_errors",
    "is_signed_out",
    "retry_after",
    "safe_next",
    "set_pending",
    "set_session",
]

SESSION_COOKIE = "lumina_session"
PENDING_COOKIE = "lumina_pending"
PENDING_PATH = "/login"
PENDING_SECONDS = 600
MAX_TOKEN_CHARS = 512


class SignInRequired(Exception):
    """The page needs a signed-in session and the browser has none (or the backend ended it)."""


class EnrolmentRequired(Exception):
    """The session has one factor and the organisation requires two: only the account page (to
    enrol a factor) is open to it."""


def bearer(request: Request, cookie: str = SESSION_COOKIE) -> str:
    """The session token of ``cookie`` ('' when absent or implausible)."""
    token = request.cookies.get(cookie, "")
    return token if 0 < len(token) <= MAX_TOKEN_CHARS and token.isprintable() else ""


def _tls(request: Request) -> bool:
    return bool(request.app.state.secure_cookies)


def set_session(response: Response, request: Request, session: SessionToken, *, rotate_csrf: bool = True) -> None:
    """Store (or rotate) the signed-in session; drops any pending login and, by default, rotates the
    CSRF nonce because the signed-in state changed."""
    max_age = None
    if session.expires_at is not None:
        max_age = max(int((session.expires_at - datetime.now(UTC)).total_seconds()), 1)
    response.set_cookie(
        SESSION_COOKIE, session.token, path="/", httponly=True, samesite="lax", secure=_tls(request), max_age=max_age
    )
    if request.cookies.get(PENDING_COOKIE):
        response.delete_cookie(PENDING_COOKIE, path=PENDING_PATH)
    if rotate_csrf:
        _rotate_csrf(response, request)


def set_pending(response: Response, request: Request, session: SessionToken) -> None:
    """Hold a login that waits for its second factor."""
    response.set_cookie(
        PENDING_COOKIE, session.token, path=PENDING_PATH, httponly=True, samesite="lax",
        secure=_tls(request), max_age=PENDING_SECONDS,
    )
    if request.cookies.get(SESSION_COOKIE):
        response.delete_cookie(SESSION_COOKIE, path="/")
    _rotate_csrf(response, request)


def clear_auth_cookies(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(PENDING_COOKIE, path=PENDING_PATH)
    _rotate_csrf(response, request)


def _rotate_csrf(response: Response, request: Request) -> None:
    cookie: Cookie = csrf_cookie(new_nonce(), secure=_tls(request))
    response.cookies.append(cookie)


def safe_next(value: object, default: str = "/chat") -> str:
    """A local path to go to after signing in; anything else (other hosts, schemes) is the default."""
    if not isinstance(value, str) or not value.startswith("/") or value.startswith("//"):
        return default
    if "\\" in value or any(ord(c) < 33 for c in value) or len(value) > 512:
        return default
    return value


def error_reason(exc: GRPCError) -> str:
    """The ``google.rpc.ErrorInfo`` reason the backend attached ('' if none), e.g. STEP_UP_REQUIRED."""
    for detail in exc.details or ():
        reason = getattr(detail, "reason", "")
        if reason and type(detail).__name__ == "ErrorInfo":
            return str(reason)
    return ""


def retry_after(exc: GRPCError) -> int | None:
    """Whole seconds from a ``google.rpc.RetryInfo`` detail (rounded up), None without one."""
    for detail in exc.details or ():
        delay = getattr(detail, "retry_delay", None)
        if delay is not None and type(detail).__name__ == "RetryInfo":
            return max(1, -(-(delay.seconds * 1_000_000_000 + delay.nanos) // 1_000_000_000))
    return None


def field_errors(exc: GRPCError) -> dict[str, str]:
    """Field -> description from a ``google.rpc.BadRequest`` detail."""
    errors: dict[str, str] = {}
    for detail in exc.details or ():
        for violation in getattr(detail, "field_violations", ()):
            errors.setdefault(violation.field, violation.description)
    return errors


def is_signed_out(exc: GRPCError, *, input_checked: bool = True) -> bool:
    """The backend no longer accepts the session (expired, ended, unknown). With ``input_checked``
    (a call that checks a password or code the user typed, with a valid session), the uniform
    INVALID_CREDENTIALS means the input was wrong; a step-up request never means signed out."""
    if exc.status is not Status.UNAUTHENTICATED:
        return False
    reason = error_reason(exc)
    if reason == "STEP_UP_REQUIRED":
        return False
    return not (input_checked and reason == "INVALID_CREDENTIALS")
