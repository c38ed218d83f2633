"""OIDC sign-in: a tenant's identity provider, the link from an IdP account (issuer, subject) to a
Lumina user, and the server-side state of one authorization request (single use, short-lived)."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import urlsplit

import msgspec

from domain.errors import InvalidRequest

__all__ = ["OidcIdentity", "OidcLoginState", "OidcProvider", "validate_url"]

_LOOPBACK = {"127.0.0.1", "::1", "localhost"}


def validate_url(field: str, url: str, *, allow_query: bool = True) -> str:
    """An absolute https URL, or http on loopback (local IdPs and tests); no fragment, no userinfo."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:
        raise InvalidRequest.single(field, "not a URL") from None
    if parts.scheme not in ("https", "http") or not host or parts.fragment or "@" in parts.netloc:
        raise InvalidRequest.single(field, "expected an absolute https URL without fragment or credentials")
    if parts.scheme == "http" and host not in _LOOPBACK:
        raise InvalidRequest.single(field, "http is allowed only on loopback; use https")
    if not allow_query and parts.query:
        raise InvalidRequest.single(field, "must not carry a query")
    return url


class OidcProvider(msgspec.Struct, frozen=True):
    """One tenant's OpenID Provider. ``client_secret`` is plain in memory only: the repository seals
    it with the key-management port. ``redirect_uris``: where Lumina may ask the IdP to send the
    browser back (the console's callback URLs); a sign-in naming any other is refused."""

    tenant_id: str
    issuer: str
    client_id: str
    client_secret: str
    redirect_uris: tuple[str, ...]
    scopes: tuple[str, ...] = ("openid", "email", "profile")
    created_at: datetime | None = None

    def __post_init__(self) -> None:
        validate_url("issuer", self.issuer, allow_query=False)
        if not self.client_id.strip():
            raise InvalidRequest.single("client_id", "required")
        if not self.client_secret:
            raise InvalidRequest.single("client_secret", "required")
        if "openid" not in self.scopes:
            raise InvalidRequest.single("scopes", "must include openid")
        if any(not s or " " in s for s in self.scopes):
            raise InvalidRequest.single("scopes", "one scope per entry, no spaces")
        if not self.redirect_uris:
            raise InvalidRequest.single("redirect_uris", "at least one")
        for uri in self.redirect_uris:
            validate_url("redirect_uris", uri)


class OidcIdentity(msgspec.Struct, frozen=True):
    """An IdP account linked to a Lumina user: found by (tenant, issuer, subject), never by email."""

    tenant_id: str
    issuer: str
    subject: str
    user_id: str
    created_at: datetime
    email: str = ""  # as the IdP asserted it when linked (informational)
    last_login_at: datetime | None = None


class OidcLoginState(msgspec.Struct, frozen=True):
    """One authorization request between ``BeginOidcLogin`` and ``FinishOidcLogin``. Only the
    state's hash is stored; nonce and PKCE verifier are bound to it and die with it."""

    state_hash: str
    tenant_id: str
    nonce: str
    code_verifier: str
    redirect_uri: str
    expires_at: datetime

    def expired(self, now: datetime) -> bool:
        return now >= self.expires_at
