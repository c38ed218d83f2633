"""Signing in and out: sign-up, login (password, then TOTP or recovery code when the session is
pending), passwordless passkey login, logout, and password recovery. The sign-in page offers
"Sign in with SSO" when the organisation has an identity provider (``GetLoginOptions``; the
routes are in web/oidc.py).

Every credential failure shows the same message, whatever the backend's reason, so the pages say
nothing about whether an organisation or account exists. Too many attempts from one browser (the
backend counts per browser address, web/proxies.py) answer 429 with the backend's Retry-After.
"""

from __future__ import annotations

import json
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from litestar import Request, Response, get, post
from litestar.params import FromQuery
from litestar.response import Redirect, Template

from lumina_client.lumina.v1 import (
    BeginPasskeyLoginRequest,
    FinishPasskeyLoginRequest,
    GetLoginOptionsRequest,
    LoginRequest,
    LogoutRequest,
    RequestPasswordResetRequest,
    ResetPasswordRequest,
    SignUpRequest,
    VerifySecondFactorRequest,
)
from web.backend import AUTH_TIMEOUT, auth_stub, call_metadata
from web.render import backend_problem, json_error, page
from web.session import (
    PENDING_COOKIE,
    PENDING_PATH,
    SESSION_COOKIE,
    bearer,
    clear_auth_cookies,
    error_reason,
    field_errors,
    retry_after,
    safe_next,
    set_pending,
    set_session,
)

__all__ = [
    "BAD_CODE",
    "BAD_LOGIN",
    "BAD_PASSKEY",
    "RESET_SENT",
    "ROUTES",
    "TOO_MANY",
    "login_options",
]

BAD_LOGIN = "The organisation, email or password is not right."
BAD_CODE = "That code is not valid. Use a new code from your authenticator app, or a recovery code."
BAD_PASSKEY = "The passkey could not sign you in."
BAD_RESET = "This recovery link is not valid any more: it was used, it expired, or it is incomplete."
RESET_SENT = (
    "If that organisation has an account with this email, we sent it a link to choose a new password. "
    "The link works once and expires soon."
)
TOO_MANY = "Too many requests from your network. Wait a while, then try again."
TENANT_COOKIE = "lumina_tenant"
MAX_FIELD = 320
MAX_PASSWORD = 1024
MAX_CREDENTIAL_JSON = 64 * 1024


async def _form(request: Request) -> dict[str, str]:
    form = await request.form()
    return {k: v.strip() if k not in ("password", "new_password", "confirm") else v
            for k, v in ((k, form.get(k)) for k in form) if isinstance(v, str)}


def _too_long(values: dict[str, str]) -> bool:
    return any(len(v) > (MAX_PASSWORD if "password" in k or k == "confirm" else MAX_FIELD) for k, v in values.items())


def _remember_tenant(response: Response, request: Request, tenant: str) -> None:
    response.set_cookie(TENANT_COOKIE, tenant, path="/", httponly=True, samesite="lax",
                        secure=bool(request.app.state.secure_cookies), max_age=365 * 86400)


def _throttled(response: Template, exc: GRPCError) -> Template:
    """A 429 page carries the backend's Retry-After."""
    seconds = retry_after(exc) if exc.status is Status.RESOURCE_EXHAUSTED else None
    if seconds is not None:
        response.headers["Retry-After"] = str(seconds)
    return response


async def login_options(request: Request, tenant: str) -> tuple[bool, bool]:
    """(oidc_enabled, signup_allowed) for the sign-in page (GetLoginOptions); (False, True) when
    the backend cannot say."""
    try:
        reply = await auth_stub(request).get_login_options(
            GetLoginOptionsRequest(tenant_id=tenant[:64]), timeout=2.0, metadata=call_metadata(request, "")
        )
    except (GRPCError, OSError):
        return False, True
    return reply.oidc_enabled, reply.signup_allowed


# --- login -----------------------------------------------------------------------------------


@get("/login")
async def login_page(
    request: Request, next: FromQuery[str | None] = None, notice: FromQuery[str | None] = None,
    tenant: FromQuery[str | None] = None,
) -> Template:
    notices = {
        "signed_out": "You are signed out.",
        "password": "Your password is changed. Sign in with it.",
        "expired": "Your session ended. Sign in again.",
        "passkey": "Your passkey is registered. Sign in with it.",
    }
    tenant = (tenant or request.cookies.get(TENANT_COOKIE, "")).strip()[:64]
    oidc_enabled, signup_allowed = await login_options(request, tenant)
    return page(
        request, "login.html", next=safe_next(next), tenant=tenant, email="", notice=notices.get(notice or "", ""),
        oidc_enabled=oidc_enabled, signup_allowed=signup_allowed,
    )


@post("/login", status_code=200)
async def login(request: Request) -> Response[Any] | Template:
    values = await _form(request)
    tenant, email, password = values.get("tenant", ""), values.get("email", ""), values.get("password", "")
    target = safe_next(values.get("next"))

    async def again(message: str, status: int) -> Template:
        oidc_enabled, signup_allowed = await login_options(request, tenant)
        return page(request, "login.html", status=status, next=target, tenant=tenant, email=email, error=message,
                    oidc_enabled=oidc_enabled, signup_allowed=signup_allowed)

    if not tenant or not email or not password:
        return await again("Enter your organisation, email and password.", 400)
    if _too_long(values):
        return await again(BAD_LOGIN, 401)
    try:
        reply = await auth_stub(request).login(
            LoginRequest(tenant_id=tenant, email=email, password=password),
            timeout=AUTH_TIMEOUT, metadata=call_metadata(request, ""),
        )
    except GRPCError as exc:
        if exc.status in (Status.UNAUTHENTICATED, Status.INVALID_ARGUMENT, Status.NOT_FOUND):
            return await again(BAD_LOGIN, 401)
        return _throttled(await again(*backend_problem(request, exc)), exc)
    except OSError as exc:
        return await again(*backend_problem(request, exc))
    session = reply.session
    if session is None or not session.token:
        return await again("The backend answered without a session. Try again.", 502)
    if session.pending_second_factor:
        response: Response[Any] = Redirect(path="/login/verify", query_params={"next": target}, status_code=303)
        set_pending(response, request, session)
    else:
        response = Redirect(path=target, status_code=303)
        set_session(response, request, session)
    _remember_tenant(response, request, tenant)
    return response


@get("/login/verify")
async def verify_page(request: Request, next: FromQuery[str | None] = None) -> Response[Any] | Template:
    if not bearer(request, PENDING_COOKIE):
        return Redirect(path="/login", query_params={"notice": "expired"}, status_code=303)
    return page(request, "verify.html", next=safe_next(next))


@post("/login/verify", status_code=200)
async def verify(request: Request) -> Response[Any] | Template:
    values = await _form(request)
    target = safe_next(values.get("next"))
    pending = bearer(request, PENDING_COOKIE)
    if not pending:
        return Redirect(path="/login", query_params={"notice": "expired"}, status_code=303)
    code = values.get("code", "").replace(" ", "")
    if not code or len(code) > 64:
        return page(request, "verify.html", status=400, next=target, error=BAD_CODE)
    try:
        reply = await auth_stub(request).verify_second_factor(
            VerifySecondFactorRequest(code=code), timeout=AUTH_TIMEOUT, metadata=call_metadata(request, pending)
        )
    except GRPCError as exc:
        if exc.status is Status.UNAUTHENTICATED and error_reason(exc) == "UNAUTHENTICATED":
            # the pending login itself expired: start again
            expired: Response[Any] = Redirect(path="/login", query_params={"notice": "expired"}, status_code=303)
            expired.delete_cookie(PENDING_COOKIE, path=PENDING_PATH)
            return expired
        if exc.status in (Status.UNAUTHENTICATED, Status.INVALID_ARGUMENT):
            return page(request, "verify.html", status=401, next=target, error=BAD_CODE)
        message, status = backend_problem(request, exc)
        return page(request, "verify.html", status=status, next=target, error=message)
    except OSError as exc:
        message, status = backend_problem(request, exc)
        return page(request, "verify.html", status=status, next=target, error=message)
    if reply.session is None or not reply.session.token:
        return page(request, "verify.html", status=502, next=target, error="The backend answered without a session.")
    response: Response[Any] = Redirect(path=target, status_code=303)
    set_session(response, request, reply.session)
    return response


# --- passkey assertions (passwordless login, second factor of a pending login, step-up) -------


async def _json_body(request: Request) -> dict[str, Any] | None:
    try:
        body = await request.json()
    except Exception:  # noqa: BLE001 - any undecodable body is the same bad request
        return None
    return body if isinstance(body, dict) else None


async def begin_assertion(request: Request, token: str, tenant: str = "") -> Response[Any]:
    try:
        reply = await auth_stub(request).begin_passkey_login(
            BeginPasskeyLoginRequest(tenant_id=tenant[:64]), timeout=AUTH_TIMEOUT, metadata=call_metadata(request, token)
        )
        options = json.loads(reply.options_json)
    except GRPCError as exc:
        if exc.status is Status.UNAUTHENTICATED:
            return json_error(BAD_PASSKEY, 401)
        return json_error(*backend_problem(request, exc))
    except OSError as exc:
        return json_error(*backend_problem(request, exc))
    except ValueError:
        return json_error("The backend sent unreadable passkey options.", 502)
    return Response(content={"ceremony_id": reply.ceremony_id, "options": options})


async def finish_assertion(request: Request, token: str, body: dict[str, Any]) -> tuple[Response[Any] | None, Any]:
    """Verify the browser's assertion; (error response, None) or (None, the new session)."""
    ceremony_id, credential = body.get("ceremony_id"), body.get("credential")
    if not isinstance(ceremony_id, str) or not isinstance(credential, dict) or len(ceremony_id) > 128:
        return json_error(BAD_PASSKEY, 400), None
    credential_json = json.dumps(credential)
    if len(credential_json) > MAX_CREDENTIAL_JSON:
        return json_error(BAD_PASSKEY, 400), None
    try:
        reply = await auth_stub(request).finish_passkey_login(
            FinishPasskeyLoginRequest(ceremony_id=ceremony_id, credential_json=credential_json),
            timeout=AUTH_TIMEOUT, metadata=call_metadata(request, token),
        )
    except GRPCError as exc:
        if exc.status in (Status.UNAUTHENTICATED, Status.INVALID_ARGUMENT, Status.NOT_FOUND):
            return json_error(BAD_PASSKEY, 401), None
        return json_error(*backend_problem(request, exc)), None
    except OSError as exc:
        return json_error(*backend_problem(request, exc)), None
    if reply.session is None or not reply.session.token:
        return json_error(BAD_PASSKEY, 401), None
    return None, reply.session


@post("/login/passkey/begin", status_code=200)
async def passkey_login_begin(request: Request) -> Response[Any]:
    body = await _json_body(request)
    if body is None:
        return json_error(BAD_PASSKEY, 400)
    # second_factor: the pending login's user must be the passkey's user.
    token = bearer(request, PENDING_COOKIE) if body.get("second_factor") else ""
    if body.get("second_factor") and not token:
        return json_error("Your sign-in expired. Start again.", 401, redirect="/login?notice=expired")
    tenant = body.get("tenant")
    return await begin_assertion(request, token, tenant if isinstance(tenant, str) else "")


@post("/login/passkey/finish", status_code=200)
async def passkey_login_finish(request: Request) -> Response[Any]:
    body = await _json_body(request)
    if body is None:
        return json_error(BAD_PASSKEY, 400)
    token = bearer(request, PENDING_COOKIE) if body.get("second_factor") else ""
    error, session = await finish_assertion(request, token, body)
    if error is not None:
        return error
    response: Response[Any] = Response(content={"redirect": safe_next(body.get("next"))})
    set_session(response, request, session)
    return response


# --- sign-up and logout ----------------------------------------------------------------------


@get("/signup")
async def signup_page(request: Request) -> Template:
    return page(request, "signup.html", values={}, errors={})


@post("/signup", status_code=200)
async def signup(request: Request) -> Response[Any] | Template:
    values = await _form(request)
    shown = {k: values.get(k, "") for k in ("organisation", "email", "display_name")}

    def again(status: int, error: str = "", errors: dict[str, str] | None = None) -> Template:
        return page(request, "signup.html", status=status, values=shown, errors=errors or {}, error=error)

    missing = {k: "Required." for k in ("organisation", "email", "password") if not values.get(k)}
    if missing:
        return again(400, "Fill in the marked fields.", missing)
    if _too_long(values):
        return again(400, "A field is too long.")
    if values.get("password") != values.get("confirm"):
        return again(400, "", {"confirm": "The two passwords differ."})
    try:
        reply = await auth_stub(request).sign_up(
            SignUpRequest(
                email=values["email"], password=values["password"], display_name=values.get("display_name", ""),
                organisation=values["organisation"],
            ),
            timeout=AUTH_TIMEOUT, metadata=call_metadata(request, ""),
        )
    except GRPCError as exc:
        if exc.status is Status.INVALID_ARGUMENT:
            errors = {_form_field(k): v for k, v in field_errors(exc).items()}
            return again(422, "" if errors else (exc.message or "Check the fields."), errors)
        if exc.status is Status.ALREADY_EXISTS:
            return again(409, "", {"organisation": "That organisation exists already: choose another name, or sign in."})
        if exc.status is Status.RESOURCE_EXHAUSTED:
            return _throttled(again(429, TOO_MANY), exc)
        message, status = backend_problem(request, exc)
        return again(status, message)
    except OSError as exc:
        message, status = backend_problem(request, exc)
        return again(status, message)
    if reply.session is None or not reply.session.token:
        return again(502, "The backend answered without a session. Sign in.")
    response: Response[Any] = Redirect(path="/account", query_params={"notice": "welcome"}, status_code=303)
    set_session(response, request, reply.session)
    _remember_tenant(response, request, reply.tenant_id)
    return response


def _form_field(field: str) -> str:
    """The sign-up form's name for a backend field ("password", "email", "tenant_id"...)."""
    name = field.rsplit(".", 1)[-1]
    return {"tenant_id": "organisation", "new_password": "password"}.get(name, name)


@post("/logout", status_code=200)
async def logout(request: Request) -> Response[Any]:
    token = bearer(request, SESSION_COOKIE)
    if token:
        try:
            await auth_stub(request).logout(LogoutRequest(), timeout=AUTH_TIMEOUT, metadata=call_metadata(request, token))
        except (GRPCError, OSError):
            pass  # the cookie goes either way; an unreachable backend ends the session by its timeouts
    response: Response[Any] = Redirect(path="/login", query_params={"notice": "signed_out"}, status_code=303)
    clear_auth_cookies(response, request)
    return response


# --- recovery --------------------------------------------------------------------------------


@get("/forgot")
async def forgot_page(request: Request) -> Template:
    return page(request, "forgot.html", tenant=request.cookies.get(TENANT_COOKIE, "")[:64], email="", sent=False)


@post("/forgot", status_code=200)
async def forgot(request: Request) -> Template:
    values = await _form(request)
    tenant, email = values.get("tenant", ""), values.get("email", "")
    if not tenant or not email:
        return page(request, "forgot.html", status=400, tenant=tenant, email=email, sent=False,
                    error="Enter your organisation and email.")
    if not _too_long(values):
        try:
            await auth_stub(request).request_password_reset(
                RequestPasswordResetRequest(tenant_id=tenant, email=email),
                timeout=AUTH_TIMEOUT, metadata=call_metadata(request, ""),
            )
        except GRPCError as exc:
            # Whatever the backend thinks of the address, the answer is the same; only an
            # unreachable backend, or too many requests (counted alike for every address), is
            # worth saying.
            if exc.status is Status.RESOURCE_EXHAUSTED:
                return _throttled(page(request, "forgot.html", status=429, tenant=tenant, email=email, sent=False,
                                       error=TOO_MANY), exc)
            if exc.status in (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED):
                message, status = backend_problem(request, exc)
                return page(request, "forgot.html", status=status, tenant=tenant, email=email, sent=False, error=message)
        except OSError as exc:
            message, status = backend_problem(request, exc)
            return page(request, "forgot.html", status=status, tenant=tenant, email=email, sent=False, error=message)
    return page(request, "forgot.html", tenant=tenant, email=email, sent=True, notice=RESET_SENT)


@get("/recover")
async def recover_page(request: Request, token: FromQuery[str | None] = None) -> Template:
    if not token or len(token) > 512:
        return page(request, "recover.html", status=400, token="", done=False, error=BAD_RESET, errors={})
    return page(request, "recover.html", token=token, done=False, errors={})


@post("/recover", status_code=200)
async def recover(request: Request) -> Template:
    values = await _form(request)
    token, password = values.get("token", ""), values.get("password", "")

    def again(status: int, error: str = "", errors: dict[str, str] | None = None, token_: str = token) -> Template:
        return page(request, "recover.html", status=status, token=token_, done=False, error=error, errors=errors or {})

    if not token or len(token) > 512:
        return again(400, BAD_RESET, token_="")
    if not password:
        return again(400, "", {"password": "Required."})
    if len(password) > MAX_PASSWORD:
        return again(400, "", {"password": "Too long."})
    if password != values.get("confirm"):
        return again(400, "", {"confirm": "The two passwords differ."})
    try:
        await auth_stub(request).reset_password(
            ResetPasswordRequest(token=token, new_password=password), timeout=AUTH_TIMEOUT,
            metadata=call_metadata(request, ""),
        )
    except GRPCError as exc:
        if exc.status is Status.INVALID_ARGUMENT and field_errors(exc):
            return again(422, "", {"password": next(iter(field_errors(exc).values()))})
        if exc.status in (Status.UNAUTHENTICATED, Status.INVALID_ARGUMENT, Status.NOT_FOUND):
            return again(400, BAD_RESET, token_="")
        message, status = backend_problem(request, exc)
        return again(status, message)
    except OSError as exc:
        message, status = backend_problem(request, exc)
        return again(status, message)
    return page(request, "recover.html", token="", done=True, errors={},
                notice="Your password is changed. Sign in with it, and with your second factor if you set one up.")


ROUTES = [
    login_page, login, verify_page, verify, passkey_login_begin, passkey_login_finish,
    signup_page, signup, logout, forgot_page, forgot, recover_page, recover,
]
