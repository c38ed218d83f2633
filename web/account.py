"""The signed-in user's own pages: account (password, TOTP enrolment with recovery codes, passkeys:
registration, list with names and dates, removal; step-up with a second factor) and API keys
(create, shown once; list; revoke).

Actions that rotate the session (password change, new factor, step-up) store the rotated token in
the cookie at once; the backend has ended the old one.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from grpclib.const import Status
from grpclib.exceptions import GRPCError
from litestar import Request, Response, get, post
from litestar.params import FromPath, FromQuery
from litestar.response import Redirect, Template

from lumina_client.lumina.v1 import (
    ApiKey,
    BeginPasskeyRegistrationRequest,
    BeginTotpEnrolmentRequest,
    ChangePasswordRequest,
    ConfirmTotpEnrolmentRequest,
    CreateApiKeyRequest,
    DeletePasskeyRequest,
    EndSessionRequest,
    FinishPasskeyRegistrationRequest,
    ListApiKeysRequest,
    ListPasskeysRequest,
    ListSessionsRequest,
    Passkey,
    Principal,
    RevokeApiKeyRequest,
    Session,
    VerifySecondFactorRequest,
)
from web.auth import (
    BAD_CODE,
    MAX_CREDENTIAL_JSON,
    _form,
    _json_body,
    begin_assertion,
    finish_assertion,
)
from web.backend import AUTH_TIMEOUT, auth_stub, call_metadata, signed_in
from web.render import backend_problem, fragment, is_htmx, json_error, page
from web.session import (
    SignInRequired,
    bearer,
    clear_auth_cookies,
    error_reason,
    field_errors,
    is_signed_out,
    set_session,
)

__all__ = ["ROUTES", "STEP_UP"]

STEP_UP = "This needs a recent second factor: confirm it is you with a code or a passkey first."
EXPIRIES = {"": None, "30": 30, "90": 90, "365": 365}
NOTICES = {
    "welcome": "Welcome to Lumina. Protect your account with a passkey or an authenticator app.",
    "password": "Your password is changed. Your other sessions have ended.",
    "passkey": "Your passkey is registered. Your other sessions have ended.",
    "verified": "Confirmed: you can change your security settings for the next few minutes.",
    "passkey_removed": "The passkey is removed. Your other sessions have ended.",
    "mfa_required": "Your organisation requires a second factor: add a passkey or an authenticator app to go on.",
    "session_ended": "The session is ended: it is signed out.",
}
LAST_FACTOR = "This is your last second factor and your organisation requires one: add another before removing it."


async def _passkeys(request: Request) -> list[Passkey] | None:
    """The user's passkeys for the account page; None when the backend cannot list them now (the
    page then shows their count only)."""
    try:
        reply = await auth_stub(request).list_passkeys(
            ListPasskeysRequest(), timeout=AUTH_TIMEOUT, metadata=call_metadata(request)
        )
    except (GRPCError, OSError):
        return None
    return list(reply.passkeys)


async def _sessions(request: Request) -> list[Session] | None:
    """The user's live sessions for the account page (ASVS V7.5.2); None when the backend cannot
    list them now."""
    try:
        reply = await auth_stub(request).list_sessions(
            ListSessionsRequest(), timeout=AUTH_TIMEOUT, metadata=call_metadata(request)
        )
    except (GRPCError, OSError):
        return None
    return list(reply.sessions)


async def _account(request: Request, principal: Principal, *, status: int = 200, **context: Any) -> Template:
    context.setdefault("errors", {})
    if "sessions" not in context:  # a session that must enrol a factor first may not list them
        context["sessions"] = None if principal.mfa_enrolment_required else await _sessions(request)
    context.setdefault("step_up", False)
    context.setdefault("totp", None)
    context.setdefault("recovery_codes", None)
    if "passkeys" not in context:
        context["passkeys"] = await _passkeys(request) if principal.passkey_count else []
    return page(request, "account.html", status=status, principal=principal, active="account", **context)


def _raise_if_signed_out(exc: GRPCError, *, input_checked: bool = True) -> None:
    """``input_checked``: the call checked a password or code the user typed (else any uniform
    rejection means the session is gone)."""
    if is_signed_out(exc, input_checked=input_checked):
        raise SignInRequired() from None


@get("/account")
async def account_page(request: Request, notice: FromQuery[str | None] = None) -> Template:
    principal = await signed_in(request, enrolling=True)
    if principal.mfa_enrolment_required:
        notice = "mfa_required"
    return await _account(request, principal, notice=NOTICES.get(notice or "", ""))


@post("/account/sessions/{session_id:str}/end", status_code=200)
async def end_session(request: Request, session_id: FromPath[str]) -> Response[Any] | Template:
    """End one of the user's sessions; ending this one signs the browser out."""
    principal = await signed_in(request)
    try:
        await auth_stub(request).end_session(
            EndSessionRequest(id=session_id[:128]), timeout=AUTH_TIMEOUT, metadata=call_metadata(request)
        )
    except GRPCError as exc:
        _raise_if_signed_out(exc, input_checked=False)
        if exc.status is Status.NOT_FOUND:
            return await _account(request, principal, status=404, errors={"sessions": "That session has ended already."})
        message, status = backend_problem(request, exc)
        return await _account(request, principal, status=status, errors={"sessions": message})
    if session_id == principal.credential_id:
        response: Response[Any] = Redirect(path="/login", query_params={"notice": "signed_out"}, status_code=303)
        clear_auth_cookies(response, request)
        return response
    return Redirect(path="/account", query_params={"notice": "session_ended"}, status_code=303)


@post("/account/password", status_code=200)
async def change_password(request: Request) -> Response[Any] | Template:
    principal = await signed_in(request)
    values = await _form(request)
    current, new = values.get("current_password", ""), values.get("new_password", "")
    if not current or not new:
        return await _account(request, principal, status=400, errors={"password": "Enter your current and your new password."})
    if new != values.get("confirm"):
        return await _account(request, principal, status=400, errors={"password": "The two new passwords differ."})
    try:
        reply = await auth_stub(request).change_password(
            ChangePasswordRequest(current_password=current, new_password=new),
            timeout=AUTH_TIMEOUT, metadata=call_metadata(request),
        )
    except GRPCError as exc:
        _raise_if_signed_out(exc)
        if error_reason(exc) == "STEP_UP_REQUIRED":
            return await _account(request, principal, status=403, step_up=True, errors={"password": STEP_UP})
        if exc.status is Status.UNAUTHENTICATED:
            return await _account(request, principal, status=401, errors={"password": "The current password is not right."})
        if exc.status is Status.INVALID_ARGUMENT and field_errors(exc):
            return await _account(request, principal, status=422, errors={"password": next(iter(field_errors(exc).values()))})
        message, status = backend_problem(request, exc)
        return await _account(request, principal, status=status, errors={"password": message})
    response: Response[Any] = Redirect(path="/account", query_params={"notice": "password"}, status_code=303)
    if reply.session is not None and reply.session.token:
        set_session(response, request, reply.session, rotate_csrf=False)
    else:
        response = Redirect(path="/login", query_params={"notice": "password"}, status_code=303)
        clear_auth_cookies(response, request)
    return response


# --- step-up ---------------------------------------------------------------------------------


@post("/account/verify", status_code=200)
async def step_up(request: Request) -> Response[Any] | Template:
    principal = await signed_in(request)
    code = (await _form(request)).get("code", "").replace(" ", "")
    if not code or len(code) > 64:
        return await _account(request, principal, status=400, step_up=True, errors={"step_up": BAD_CODE})
    try:
        reply = await auth_stub(request).verify_second_factor(
            VerifySecondFactorRequest(code=code), timeout=AUTH_TIMEOUT, metadata=call_metadata(request)
        )
    except GRPCError as exc:
        if exc.status is Status.UNAUTHENTICATED and error_reason(exc) in ("INVALID_CREDENTIALS", ""):
            return await _account(request, principal, status=401, step_up=True, errors={"step_up": BAD_CODE})
        _raise_if_signed_out(exc)
        message, status = backend_problem(request, exc)
        return await _account(request, principal, status=status, step_up=True, errors={"step_up": message})
    response: Response[Any] = Redirect(path="/account", query_params={"notice": "verified"}, status_code=303)
    if reply.session is not None and reply.session.token:
        set_session(response, request, reply.session, rotate_csrf=False)
    return response


@post("/account/verify/passkey/begin", status_code=200)
async def step_up_passkey_begin(request: Request) -> Response[Any]:
    token = bearer(request)
    if not token:
        return json_error("Sign in again.", 401, redirect="/login?notice=expired")
    return await begin_assertion(request, token)


@post("/account/verify/passkey/finish", status_code=200)
async def step_up_passkey_finish(request: Request) -> Response[Any]:
    token = bearer(request)
    body = await _json_body(request)
    if not token:
        return json_error("Sign in again.", 401, redirect="/login?notice=expired")
    if body is None:
        return json_error("The passkey could not confirm it is you.", 400)
    error, session = await finish_assertion(request, token, body)
    if error is not None:
        return error
    response: Response[Any] = Response(content={"redirect": "/account?notice=verified"})
    set_session(response, request, session, rotate_csrf=False)
    return response


# --- TOTP ------------------------------------------------------------------------------------


@post("/account/totp", status_code=200)
async def totp_begin(request: Request) -> Response[Any] | Template:
    principal = await signed_in(request, enrolling=True)
    try:
        reply = await auth_stub(request).begin_totp_enrolment(
            BeginTotpEnrolmentRequest(), timeout=AUTH_TIMEOUT, metadata=call_metadata(request)
        )
    except GRPCError as exc:
        _raise_if_signed_out(exc, input_checked=False)
        message = STEP_UP if error_reason(exc) == "STEP_UP_REQUIRED" else backend_problem(request, exc)[0]
        return await _totp_result(request, principal, error=message, status=403 if message == STEP_UP else 400)
    qr = "data:image/svg+xml;base64," + base64.b64encode(reply.qr_svg.encode()).decode()
    context = {"enrolment_id": reply.enrolment_id, "qr": qr, "secret": reply.secret, "error": ""}
    if is_htmx(request):
        return fragment(request, "_totp_enrol.html", **context)
    return await _account(request, principal, totp=context)


@post("/account/totp/confirm", status_code=200)
async def totp_confirm(request: Request) -> Response[Any] | Template:
    principal = await signed_in(request, enrolling=True)
    values = await _form(request)
    enrolment_id, code = values.get("enrolment_id", ""), values.get("code", "").replace(" ", "")
    retry = {"enrolment_id": enrolment_id, "qr": "", "secret": ""}  # the QR code is not shown twice
    if not enrolment_id or not code or len(code) > 16 or len(enrolment_id) > 128:
        return await _totp_result(request, principal, totp={**retry, "error": "Enter the six-digit code."}, status=400)
    try:
        reply = await auth_stub(request).confirm_totp_enrolment(
            ConfirmTotpEnrolmentRequest(enrolment_id=enrolment_id, code=code),
            timeout=AUTH_TIMEOUT, metadata=call_metadata(request),
        )
    except GRPCError as exc:
        if exc.status in (Status.UNAUTHENTICATED, Status.INVALID_ARGUMENT) and error_reason(exc) in ("INVALID_CREDENTIALS", ""):
            error = "That code is not right. Check the time on your device and enter the current code."
            return await _totp_result(request, principal, totp={**retry, "error": error}, status=401)
        _raise_if_signed_out(exc)
        message, status = backend_problem(request, exc)
        return await _totp_result(request, principal, totp={**retry, "error": message}, status=status)
    codes = list(reply.recovery_codes)
    if is_htmx(request):
        response: Response[Any] = fragment(request, "_recovery_codes.html", codes=codes)
    else:
        response = await _account(request, principal, recovery_codes=codes)
    if reply.session is not None and reply.session.token:
        set_session(response, request, reply.session, rotate_csrf=False)
    return response


async def _totp_result(request: Request, principal: Principal, *, status: int, totp: dict[str, str] | None = None,
                 error: str = "") -> Response[Any] | Template:
    if totp is None:
        if is_htmx(request):
            return fragment(request, "_notice.html", status=status, message=error)
        return await _account(request, principal, status=status, errors={"totp": error}, step_up=error == STEP_UP)
    if is_htmx(request):
        return fragment(request, "_totp_enrol.html", status=status, **totp)
    return await _account(request, principal, status=status, totp=totp)


# --- passkey registration --------------------------------------------------------------------


@post("/account/passkeys/begin", status_code=200)
async def passkey_register_begin(request: Request) -> Response[Any]:
    token = bearer(request)
    body = await _json_body(request)
    if not token:
        return json_error("Sign in again.", 401, redirect="/login?notice=expired")
    name = body.get("name") if body else None
    name = name.strip()[:64] if isinstance(name, str) and name.strip() else "passkey"
    try:
        reply = await auth_stub(request).begin_passkey_registration(
            BeginPasskeyRegistrationRequest(name=name), timeout=AUTH_TIMEOUT, metadata=call_metadata(request, token)
        )
        options = json.loads(reply.options_json)
    except GRPCError as exc:
        if error_reason(exc) == "STEP_UP_REQUIRED":
            return json_error(STEP_UP, 403, step_up=True)
        if is_signed_out(exc, input_checked=False):
            return json_error("Sign in again.", 401, redirect="/login?notice=expired")
        return json_error(*backend_problem(request, exc))
    except OSError as exc:
        return json_error(*backend_problem(request, exc))
    except ValueError:
        return json_error("The backend sent unreadable passkey options.", 502)
    return Response(content={"ceremony_id": reply.ceremony_id, "options": options})


@post("/account/passkeys/finish", status_code=200)
async def passkey_register_finish(request: Request) -> Response[Any]:
    token = bearer(request)
    body = await _json_body(request)
    if not token:
        return json_error("Sign in again.", 401, redirect="/login?notice=expired")
    failed = "The passkey could not be registered. Try again."
    if body is None or not isinstance(body.get("ceremony_id"), str) or not isinstance(body.get("credential"), dict):
        return json_error(failed, 400)
    credential_json = json.dumps(body["credential"])
    name = body.get("name")
    name = name.strip()[:64] if isinstance(name, str) and name.strip() else "passkey"
    if len(credential_json) > MAX_CREDENTIAL_JSON:
        return json_error(failed, 400)
    try:
        reply = await auth_stub(request).finish_passkey_registration(
            FinishPasskeyRegistrationRequest(ceremony_id=body["ceremony_id"][:128], credential_json=credential_json, name=name),
            timeout=AUTH_TIMEOUT, metadata=call_metadata(request, token),
        )
    except GRPCError as exc:
        if error_reason(exc) == "STEP_UP_REQUIRED":
            return json_error(STEP_UP, 403, step_up=True)
        if exc.status in (Status.UNAUTHENTICATED, Status.INVALID_ARGUMENT) and error_reason(exc) in ("INVALID_CREDENTIALS", ""):
            return json_error(failed, 400)
        if is_signed_out(exc):
            return json_error("Sign in again.", 401, redirect="/login?notice=expired")
        return json_error(*backend_problem(request, exc))
    except OSError as exc:
        return json_error(*backend_problem(request, exc))
    session = reply.session
    if session is not None and session.token:
        response: Response[Any] = Response(content={"redirect": "/account?notice=passkey"})
        set_session(response, request, session, rotate_csrf=False)
    else:  # a backend that ends every session on a new factor without handing back a new one
        response = Response(content={"redirect": "/login?notice=passkey"})
        clear_auth_cookies(response, request)
    return response


@post("/account/passkeys/{passkey_id:str}/delete", status_code=200)
async def passkey_delete(request: Request, passkey_id: FromPath[str]) -> Response[Any] | Template:
    principal = await signed_in(request)
    try:
        await auth_stub(request).delete_passkey(
            DeletePasskeyRequest(id=passkey_id[:1400]), timeout=AUTH_TIMEOUT, metadata=call_metadata(request)
        )
    except GRPCError as exc:
        if error_reason(exc) == "STEP_UP_REQUIRED":
            return await _account(request, principal, status=403, step_up=True, errors={"passkeys": STEP_UP})
        _raise_if_signed_out(exc, input_checked=False)
        if exc.status is Status.PERMISSION_DENIED:
            return await _account(request, principal, status=403, errors={"passkeys": LAST_FACTOR})
        if exc.status is Status.NOT_FOUND:
            return await _account(request, principal, status=404, errors={"passkeys": "That passkey is gone already."})
        message, status = backend_problem(request, exc)
        return await _account(request, principal, status=status, errors={"passkeys": message})
    return Redirect(path="/account", query_params={"notice": "passkey_removed"}, status_code=303)


# --- API keys --------------------------------------------------------------------------------


async def _keys(request: Request) -> list[ApiKey]:
    reply = await auth_stub(request).list_api_keys(ListApiKeysRequest(), timeout=AUTH_TIMEOUT, metadata=call_metadata(request))
    return sorted(reply.keys, key=lambda k: (k.revoked_at is not None, -(k.created_at or _EPOCH).timestamp()))


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _keys_response(request: Request, principal: Principal, keys: list[ApiKey], *, status: int = 200,
                   created: str = "", created_name: str = "", error: str = "") -> Response[Any] | Template:
    context = {"keys": keys, "created": created, "created_name": created_name, "key_error": error, "now": datetime.now(UTC)}
    if is_htmx(request):
        return fragment(request, "_keys.html", status=status, **context)
    return page(request, "keys.html", status=status, principal=principal, active="keys", **context)


@get("/keys")
async def keys_page(request: Request) -> Template:
    principal = await signed_in(request)
    try:
        keys = await _keys(request)
    except GRPCError as exc:
        _raise_if_signed_out(exc, input_checked=False)
        raise
    return page(request, "keys.html", principal=principal, active="keys", keys=keys, created="", created_name="",
                key_error="", now=datetime.now(UTC))


@post("/keys", status_code=200)
async def create_key(request: Request) -> Response[Any] | Template:
    principal = await signed_in(request)
    values = await _form(request)
    name, expiry = values.get("name", "")[:64], values.get("expires", "")
    try:
        if not name:
            return _keys_response(request, principal, await _keys(request), status=400, error="Give the key a name.")
        if expiry not in EXPIRIES:
            return _keys_response(request, principal, await _keys(request), status=400, error="Choose an expiry.")
        days = EXPIRIES[expiry]
        expires_at = datetime.now(UTC) + timedelta(days=days) if days else None
        reply = await auth_stub(request).create_api_key(
            CreateApiKeyRequest(name=name, expires_at=expires_at), timeout=AUTH_TIMEOUT, metadata=call_metadata(request)
        )
        keys = await _keys(request)
    except GRPCError as exc:
        _raise_if_signed_out(exc, input_checked=False)
        if error_reason(exc) == "STEP_UP_REQUIRED":
            return _keys_response(request, principal, [], status=403, error=STEP_UP)
        message, status = backend_problem(request, exc)
        return _keys_response(request, principal, [], status=status, error=message)
    return _keys_response(request, principal, keys, created=reply.raw_key, created_name=name)


@post("/keys/{key_id:str}/revoke", status_code=200)
async def revoke_key(request: Request, key_id: FromPath[str]) -> Response[Any] | Template:
    principal = await signed_in(request)
    try:
        await auth_stub(request).revoke_api_key(
            RevokeApiKeyRequest(id=key_id[:128]), timeout=AUTH_TIMEOUT, metadata=call_metadata(request)
        )
        keys = await _keys(request)
    except GRPCError as exc:
        _raise_if_signed_out(exc, input_checked=False)
        message, status = backend_problem(request, exc)
        return _keys_response(request, principal, [], status=status, error=message)
    return _keys_response(request, principal, keys)


ROUTES = [
    account_page, change_password, step_up, step_up_passkey_begin, step_up_passkey_finish, totp_begin, totp_confirm,
    passkey_register_begin, passkey_register_finish, passkey_delete, keys_page, create_key, revoke_key, end_session,
]
