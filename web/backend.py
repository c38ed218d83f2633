"""Calling the backend on behalf of the browser: the AuthService stub, per-call metadata (the
session as ``authorization: Bearer``, the browser's address, the trace context) and WhoAmI."""

from __future__ import annotations

from grpclib.exceptions import GRPCError
from litestar import Request

from lumina_client.lumina.v1 import AuthServiceStub, Principal, WhoAmIRequest
from web.session import SESSION_COOKIE, SignInRequired, bearer, is_signed_out
from web.telemetry import traced_metadata

__all__ = ["AUTH_TIMEOUT", "auth_stub", "call_metadata", "signed_in"]

AUTH_TIMEOUT = 15.0  # seconds; password hashing and mail queueing take a moment, nothing more


def auth_stub(request: Request) -> AuthServiceStub:
    return AuthServiceStub(request.app.state.channel)


def call_metadata(request: Request, token: str | None = None, *, traced: bool = True) -> dict[str, str]:
    """Metadata for one call: the console's static metadata, the bearer ``token`` (by default the
    session cookie's), the browser's address for the backend's per-address limits, and (``traced``)
    the current trace context."""
    metadata = dict(request.app.state.grpc_metadata)
    token = bearer(request, SESSION_COOKIE) if token is None else token
    if token:
        metadata["authorization"] = f"Bearer {token}"
    if request.client is not None and request.client.host:
        metadata["x-forwarded-for"] = request.client.host
    return traced_metadata(metadata) if traced else metadata


async def signed_in(request: Request) -> Principal:
    """The signed-in principal, or ``SignInRequired`` (the page redirects to /login)."""
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
    return reply.principal
