"""Calling the backend on behalf of the browser: the AuthService stub, per-call metadata (the
session as ``authorization: Bearer``, the browser's address as ``x-forwarded-for``, the trace
context) and WhoAmI. The backend believes that address because the console is one of its trusted
proxies (``LUMINA_TRUSTED_PROXIES``, loopback by default, where `lumina up` runs the console)."""

from __future__ import annotations

from grpclib.exceptions import GRPCError
from litestar import Request

from lumina_client.lumina.v1 import AuthServiceStub, Principal, WhoAmIRequest
from web.session import (
    SESSION_COOKIE,
    EnrolmentRequired,
    SignInRequired,
    bearer,
    is_signed_out,
)
from web.telemetry import traced_metadata

__all__ = ["AUTH_TIMEOUT", "auth_stub", "browser_address", "call_metadata", "signed_in"]

AUTH_TIMEOUT = 15.0  # seconds; password hashing and mail queueing take a moment, nothing more


def auth_stub(request: Request) -> AuthServiceStub:
    return AuthServiceStub(request.app.state.channel)


def browser_address(request: Request) -> str:
    """The browser's address: the peer, or whom a trusted proxy in front of the console forwards."""
    peer = request.client.host if request.client is not None else ""
    return str(request.app.state.proxies.client(peer, request.headers.getall("x-forwarded-for", [])))


def call_metadata(request: Request, token: str | None = None, *, traced: bool = True) -> dict[str, str]:
    """Metadata for one call: the console's static metadata, the bearer ``token`` (by default the
    session cookie's), the browser's address for the backend's per-address limits, and (``traced``)
    the current trace context."""
    metadata = dict(request.app.state.grpc_metadata)
    token = bearer(request, SESSION_COOKIE) if token is None else token
    if token:
        metadata["authorization"] = f"Bearer {token}"
    if request.client is not None and request.client.host:  # the browser (web/proxies.py), never a list
        metadata["x-forwarded-for"] = browser_address(request)
    return traced_metadata(metadata) if traced else metadata


async def signed_in(request: Request, *, enrolling: bool = False) -> Principal:
    """The signed-in principal, or ``SignInRequired`` (the page redirects to /login). A one-factor
    session of an organisation that requires MFA is ``EnrolmentRequired`` (to /account) unless
    ``enrolling`` (the account page and its enrolment actions)."""
    token = bearer(request)
    if not token:
        raise SignInRequired()
    try:
        reply = await auth_stub(request).who_am_i(
            WhoAmIRequest(), timeout=AUTH_TIMEOUT, metadata=call_metadata(request, token)
        )
    except GRPCError as exc:
        if is_signed_out(exc, input_checked=False):
            raise SignInRequired() from None
        raise
    if reply.principal is None:
        raise SignInRequired()
    if reply.principal.mfa_enrolment_required and not enrolling:
        raise EnrolmentRequired()
    return reply.principal
