"""The backend's authentication middleware (plain ASGI, ahead of routing): resolves
``authorization: Bearer <credential>`` (or ``x-api-key``) through the ``Authenticator`` and sets the
principal for the request (``api.auth.current_principal()``), except on the public paths
(``api.auth.is_public_path``: health, metrics, the sign-in routes of /v1/auth). Every request,
public or not, gets its caller's address (``api.auth.current_client()``): the connecting peer, or
the client a trusted proxy forwards in ``x-forwarded-for`` (``api.auth.TrustedProxies``).

A missing or invalid credential is answered here, before any handler runs: 401 with
``WWW-Authenticate: Bearer`` and one uniform message. The body is problem+json, except under
``/v1/messages``, whose clients (Anthropic SDKs) read Anthropic's error shape.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
from litestar.types import ASGIApp, Receive, Scope, Send

from api.auth import (
    ENROLMENT_HTTP_PATHS,
    Authenticator,
    TrustedProxies,
    client_var,
    enrolment_options,
    is_public_path,
    principal_var,
)
from api.errors import map_error
from domain.errors import DomainError
from domain.identity import InvalidCredentials, SessionExpired

__all__ = ["authentication_middleware"]

_encode = msgspec.json.Encoder().encode
_ANTHROPIC_PATH = "/v1/messages"


def _credential(headers: Any) -> str:
    bearer = key = b""
    for name, value in headers:
        if name == b"authorization":
            if value[:7].lower() == b"bearer ":
                bearer = value[7:].strip()
        elif name == b"x-api-key":
            key = value.strip()
    return (bearer or key).decode("latin-1")


async def _reject(scope: Scope, send: Send, exc: DomainError) -> None:
    mapped = map_error(exc)
    status, message = mapped.http_status, exc.message
    if scope["type"] == "websocket":
        await send({"type": "websocket.close", "code": 4000 + status, "reason": mapped.title})
        return
    if scope["path"].startswith(_ANTHROPIC_PATH):
        etype = {401: "authentication_error", 403: "permission_error"}.get(status, "api_error")
        body = {"type": "error", "error": {"type": etype, "message": message}}
        media = b"application/json"
    else:
        body = {"type": "about:blank", "title": mapped.title, "status": status, "detail": message, "message": message,
                "code": exc.code}
        media = b"application/problem+json"
    headers = [(b"content-type", media)]
    if status == 401:
        headers.append((b"www-authenticate", b'Bearer realm="lumina"'))
    payload = _encode(body)
    headers.append((b"content-length", str(len(payload)).encode()))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _forwarded(headers: Any) -> list[str]:
    return [value.decode("latin-1") for name, value in headers if name == b"x-forwarded-for"]


def authentication_middleware(
    authenticator: Authenticator, proxies: TrustedProxies | None = None
) -> Callable[[ASGIApp], ASGIApp]:
    trusted = proxies or TrustedProxies()

    def factory(app: ASGIApp) -> ASGIApp:
        async def middleware(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] not in ("http", "websocket"):
                await app(scope, receive, send)
                return
            peer = scope.get("client")
            client_token = client_var.set(trusted.client(peer[0] if peer else "", _forwarded(scope.get("headers", ()))))
            try:
                await _authenticated(app, scope, receive, send)
            finally:
                client_var.reset(client_token)

        async def _authenticated(app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
            if is_public_path(scope["path"]):
                await app(scope, receive, send)
                return
            try:
                principal = await authenticator.authenticate(
                    _credential(scope.get("headers", ())), client=client_var.get(),
                    **enrolment_options(scope["path"].rstrip("/") in ENROLMENT_HTTP_PATHS),
                )
            except SessionExpired as exc:
                await _reject(scope, send, InvalidCredentials(exc.reason))
                return
            except DomainError as exc:  # invalid credentials, a second factor needed, identity store down
                await _reject(scope, send, exc)
                return
            token = principal_var.set(principal)
            try:
                await app(scope, receive, send)
            finally:
                principal_var.reset(token)

        return middleware

    return factory
