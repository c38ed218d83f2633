"""The console's browser-facing protections, as one ASGI middleware: CSRF checks on every
state-changing request and security headers on every response.

CSRF: a signed double-submit token. The ``lumina_csrf`` cookie (HttpOnly, SameSite=Lax) holds a
random nonce; pages carry ``HMAC(secret, nonce)`` in a hidden ``csrf_token`` field, in
``<meta name="csrf-token">`` and (for htmx) in the ``X-CSRF-Token`` header. A POST, PUT, PATCH or
DELETE without the cookie, without the token, with a token that does not match the cookie, or from
a foreign ``Origin`` is answered 403 before any handler runs. The nonce is rotated whenever the
signed-in state changes (login, sign-up, logout), so a token seen before login is useless after it.
A restarted console (a new secret) recomputes tokens from the same nonce: open pages need a reload,
nothing more.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Mapping
from urllib.parse import urlsplit

from litestar import Request
from litestar.datastructures import Cookie, MutableScopeHeaders
from litestar.enums import RequestEncodingType
from litestar.types import ASGIApp, Message, Receive, Scope, Send
from litestar.utils.scope.state import ScopeState

__all__ = [
    "CSP",
    "CSRF_COOKIE",
    "CSRF_FIELD",
    "CSRF_HEADER",
    "SecurityMiddleware",
    "csrf_cookie",
    "csrf_token_for",
    "new_nonce",
    "security_headers",
]

CSRF_COOKIE = "lumina_csrf"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

# No inline scripts or styles, nothing from other origins; the QR code is a data: image.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)


def security_headers(*, tls: bool) -> list[tuple[bytes, bytes]]:
    headers = {
        "content-security-policy": CSP,
        "x-frame-options": "DENY",
        "x-content-type-options": "nosniff",
        # reset links carry their token in the URL: it never leaves the console (and with
        # "no-referrer" Chromium would send "Origin: null" on the console's own forms)
        "referrer-policy": "same-origin",
        "cross-origin-opener-policy": "same-origin",
        "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()",
    }
    if tls:
        headers["strict-transport-security"] = "max-age=31536000"
    return [(k.encode(), v.encode()) for k, v in headers.items()]


def new_nonce() -> str:
    return secrets.token_urlsafe(32)


def csrf_token_for(secret: bytes, nonce: str) -> str:
    return hmac.new(secret, b"lumina-csrf|" + nonce.encode(), hashlib.sha256).hexdigest()


def csrf_cookie(nonce: str, *, secure: bool) -> Cookie:
    return Cookie(key=CSRF_COOKIE, value=nonce, path="/", httponly=True, samesite="lax", secure=secure)


class SecurityMiddleware:
    """CSRF verification and security headers; ``secret`` signs tokens, ``tls`` marks cookies
    Secure and adds HSTS."""

    def __init__(self, app: ASGIApp, *, secret: bytes, tls: bool) -> None:
        self.app = app
        self.secret = secret
        self.tls = tls
        self.headers = security_headers(tls=tls)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request: Request = Request(scope=scope, receive=receive)
        nonce = request.cookies.get(CSRF_COOKIE) or ""
        set_nonce = ""
        if request.method in SAFE_METHODS:
            if not _valid_nonce(nonce):
                nonce = set_nonce = new_nonce()
        elif not await self._verified(request, nonce):
            await self._reject(scope, receive, send)
            return
        # Templates read it with Litestar's ``csrf_token()``.
        ScopeState.from_scope(scope).csrf_token = csrf_token_for(self.secret, nonce)
        is_static = scope["path"].startswith("/static/")

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableScopeHeaders.from_message(message)
                for name, value in self.headers:
                    if name.decode() not in headers:
                        headers.add(name.decode(), value.decode())
                if not is_static and "cache-control" not in headers:
                    headers.add("cache-control", "no-store")
                if set_nonce and not _sets_cookie(headers, CSRF_COOKIE):
                    headers.add("set-cookie", csrf_cookie(set_nonce, secure=self.tls).to_header(header=""))
            await send(message)

        await self.app(scope, receive, send_wrapper)

    async def _verified(self, request: Request, nonce: str) -> bool:
        if not _same_origin(request.headers):
            return False
        if not _valid_nonce(nonce):
            return False
        given = request.headers.get(CSRF_HEADER)
        if not given:
            content_type, _ = request.content_type
            if content_type in (RequestEncodingType.URL_ENCODED, RequestEncodingType.MULTI_PART):
                form = await request.form()  # cached in the scope: the handler reads it again
                value = form.get(CSRF_FIELD)
                given = value if isinstance(value, str) else None
        return bool(given) and hmac.compare_digest(str(given), csrf_token_for(self.secret, nonce))

    async def _reject(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = (
            b"<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Form expired</title></head>"
            b"<body><p role=\"alert\">This form has expired or did not come from this console. "
            b"Reload the page and try again.</p></body></html>"
        )
        headers = [
            (b"content-type", b"text/html; charset=utf-8"),
            (b"content-length", str(len(body)).encode()),
            (b"cache-control", b"no-store"),
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": 403, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def _valid_nonce(nonce: str) -> bool:
    return 32 <= len(nonce) <= 128 and nonce.replace("-", "").replace("_", "").isalnum()


def _same_origin(headers: Mapping[str, str]) -> bool:
    """A request whose ``Origin`` or ``Sec-Fetch-Site`` names another site fails. (An opaque
    ``Origin: null`` says nothing either way; the token decides.)"""
    origin = headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc.lower() != headers.get("host", "").lower():
        return False
    return headers.get("sec-fetch-site", "same-origin") in ("same-origin", "none")


def _sets_cookie(headers: MutableScopeHeaders, name: str) -> bool:
    prefix = f"{name}="
    return any(v.startswith(prefix) for v in headers.getall("set-cookie", []))
