"""Single sign-on with the organisation's identity provider (OIDC): the console's two routes around
the backend's BeginOidcLogin and FinishOidcLogin.

``GET /oidc/start?tenant=…&next=…`` asks the backend for the IdP's authorization URL (the backend
keeps the nonce and PKCE verifier) and sends the browser there, binding the flow's ``state`` to
this browser in the ``lumina_oidc`` cookie (HttpOnly, SameSite=Lax, Path=/oidc, ten minutes).
``GET /oidc/callback`` is where the IdP sends the browser back: the ``state`` in the URL must be the
cookie's (a callback URL made for another browser — a login CSRF — is refused before the backend
sees its code); then FinishOidcLogin, and the browser is signed in, or sent to the second-factor
page when the account has one (an OIDC sign-in is one factor).

A sign-in starts only from the user's own action: a start request that a browser marks as coming
from another site (``Sec-Fetch-Site: cross-site`` or ``same-site``) lands on the sign-in page
instead, where the user clicks "Sign in with SSO" (ASVS V7.6.2).
"""

from __future__ import annotations

import base64
import binascii
import hmac
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from litestar import Request, Response, get
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from lumina_client.lumina.v1 import BeginOidcLoginRequest, FinishOidcLoginRequest
from web.auth import TENANT_COOKIE, _remember_tenant, login_options
from web.backend import AUTH_TIMEOUT, auth_stub, call_metadata
from web.render import backend_problem, page
from web.session import safe_next, set_pending, set_session

__all__ = ["OIDC_COOKIE", "ROUTES", "SSO_FAILED", "SSO_OFF", "redirect_uri"]

OIDC_COOKIE = "lumina_oidc"
OIDC_PATH = "/oidc"
OIDC_SECONDS = 600  # the backend keeps a started sign-in as long
SSO_FAILED = "Single sign-on did not sign you in. Try again, or sign in with your password."
SSO_OFF = "Your organisation has no single sign-on here. Sign in with your password or a passkey."
MAX_STATE = 256


def redirect_uri(request: Request) -> str:
    """Where the IdP sends the browser back: the console's public URL + /oidc/callback (the
    operator registers exactly this at the IdP and in `lumina oidc set --redirect-uri`)."""
    base = request.app.state.public_url or str(request.base_url).rstrip("/")
    return f"{base}/oidc/callback"


def _pack(state: str, tenant: str, target: str) -> str:
    encoded = base64.urlsafe_b64encode(target.encode()).decode().rstrip("=")
    return f"{state}.{tenant}.{encoded}"


def _unpack(value: str) -> tuple[str, str, str] | None:
    parts = value.split(".")
    if len(parts) != 3 or not parts[0] or len(parts[0]) > MAX_STATE:
        return None
    try:
        target = base64.urlsafe_b64decode(parts[2] + "=" * (-len(parts[2]) % 4)).decode()
    except (binascii.Error, ValueError):
        return None
    return parts[0], parts[1], safe_next(target)


async def _to_login(request: Request, *, tenant: str = "", error: str = "", status: int = 400) -> Template:
    tenant = tenant or request.cookies.get(TENANT_COOKIE, "")[:64]
    oidc_enabled, signup_allowed = await login_options(request, tenant)
    return page(request, "login.html", status=status, next="/chat", tenant=tenant, email="", error=error,
                oidc_enabled=oidc_enabled, signup_allowed=signup_allowed)


def _forget_flow(response: Response[Any], request: Request) -> None:
    if request.cookies.get(OIDC_COOKIE):
        response.delete_cookie(OIDC_COOKIE, path=OIDC_PATH)


@get("/oidc/start")
async def oidc_start(
    request: Request, tenant: FromQuery[str | None] = None, next: FromQuery[str | None] = None
) -> Response[Any] | Template:
    tenant, target = (tenant or "").strip()[:64], safe_next(next)
    if request.headers.get("sec-fetch-site") in ("cross-site", "same-site"):
        # another site sent the browser here: let the user decide on the sign-in page
        return Redirect(path="/login", query_params={"tenant": tenant, "next": target}, status_code=303)
    callback = redirect_uri(request)
    try:
        reply = await auth_stub(request).begin_oidc_login(
            BeginOidcLoginRequest(tenant_id=tenant, redirect_uri=callback),
            timeout=AUTH_TIMEOUT, metadata=call_metadata(request, ""),
        )
    except GRPCError as exc:
        if exc.status in (Status.NOT_FOUND, Status.UNIMPLEMENTED):
            return await _to_login(request, tenant=tenant, error=SSO_OFF, status=404)
        if exc.status is Status.INVALID_ARGUMENT:
            message = (f"Single sign-on is not set up for this console's address: the administrator registers "
                       f"{callback} with the identity provider and in `lumina oidc set`.")
            return await _to_login(request, tenant=tenant, error=message, status=400)
        message, status = backend_problem(request, exc)
        return await _to_login(request, tenant=tenant, error=message, status=status)
    except OSError as exc:
        message, status = backend_problem(request, exc)
        return await _to_login(request, tenant=tenant, error=message, status=status)
    if not reply.authorization_url.startswith(("https://", "http://")) or not reply.state:
        return await _to_login(request, tenant=tenant, error=SSO_FAILED, status=502)
    response: Response[Any] = Redirect(path=reply.authorization_url, status_code=303)
    response.set_cookie(
        OIDC_COOKIE, _pack(reply.state, tenant, target), path=OIDC_PATH, httponly=True, samesite="lax",
        secure=bool(request.app.state.secure_cookies), max_age=OIDC_SECONDS,
    )
    return response


@get("/oidc/callback")
async def oidc_callback(request: Request) -> Response[Any] | Template:
    query = request.query_params  # "state" is a name Litestar keeps for itself
    state, code, error = query.get("state"), query.get("code"), query.get("error")
    flow = _unpack(request.cookies.get(OIDC_COOKIE, ""))
    tenant = flow[1] if flow else ""

    async def refused(message: str = SSO_FAILED, status: int = 401) -> Template:
        answer = await _to_login(request, tenant=tenant, error=message, status=status)
        if request.cookies.get(OIDC_COOKIE):
            answer.delete_cookie(OIDC_COOKIE, path=OIDC_PATH)
        return answer

    if error:  # the user cancelled at the IdP, or it refused (its error text is not shown: it is the IdP's)
        return await refused()
    if flow is None or not state or not code or len(state) > MAX_STATE or len(code) > 2048:
        return await refused()
    if not hmac.compare_digest(flow[0].encode(), state.encode()):
        return await refused()  # this browser did not start this sign-in
    try:
        reply = await auth_stub(request).finish_oidc_login(
            FinishOidcLoginRequest(state=state, code=code, redirect_uri=redirect_uri(request)),
            timeout=AUTH_TIMEOUT, metadata=call_metadata(request, ""),
        )
    except GRPCError as exc:
        if exc.status in (Status.UNAUTHENTICATED, Status.INVALID_ARGUMENT, Status.NOT_FOUND, Status.UNIMPLEMENTED):
            return await refused()
        return await refused(*backend_problem(request, exc))
    except OSError as exc:
        return await refused(*backend_problem(request, exc))
    session = reply.session
    if session is None or not session.token:
        return await refused()
    target = flow[2]
    response: Response[Any]
    if session.pending_second_factor:
        response = Redirect(path="/login/verify", query_params={"next": target}, status_code=303)
        set_pending(response, request, session)
    else:
        response = Redirect(path=target, status_code=303)
        set_session(response, request, session)
    _forget_flow(response, request)
    if tenant:
        _remember_tenant(response, request, tenant)
    return response


ROUTES = [oidc_start, oidc_callback]
