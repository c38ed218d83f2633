"""OIDC sign-in (authorization code flow with PKCE S256, state and nonce) against a tenant's identity
provider, with just-in-time users and account linking by verified email.

How an IdP account finds its Lumina user, in order:

1. an existing link (tenant, issuer, subject): that user;
2. a user of the tenant with the asserted email: linked only when the tenant allows linking
   (``TenantPolicy.oidc_link_by_verified_email``), the IdP says ``email_verified`` **and** Lumina
   verified that address too (a mailbox proof, e.g. a password reset, or an invited user), and the
   user has no other subject at this issuer. Otherwise refused: an unverified address must never
   hand over an existing account (pre-registration takeover);
3. no such user: created when the tenant allows it (``oidc_jit_users``), passwordless, role member.

Every outcome leaves an audit event (method ``oidc``); every refusal is the same
``InvalidCredentials``, its reason only in the audit. An OIDC login is one factor (assurance 1):
a user with a second factor gets a pending session that ``VerifySecondFactor`` completes, and a
tenant that requires MFA keeps refusing single-factor sessions.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Protocol

import msgspec

from application.identity.context import (
    IdentityContext,
    IssuedSession,
    audit,
    issue_session,
)
from application.identity.login import has_second_factor
from application.identity.ports import IdentityUnitOfWork
from domain.errors import InvalidRequest, NotFound, Unavailable
from domain.identity import (
    InvalidCredentials,
    Membership,
    OidcIdentity,
    OidcLoginState,
    OidcProvider,
    Principal,
    Role,
    TenantPolicy,
    User,
    normalize_email,
    validate_tenant_id,
)

__all__ = [
    "BeginOidcLogin",
    "ConfigureOidc",
    "FinishOidcLogin",
    "OidcClaims",
    "OidcClient",
    "OidcMetadata",
    "OidcTokens",
    "RemoveOidc",
]

METHOD = "oidc"


class OidcMetadata(msgspec.Struct, frozen=True):
    """What discovery (``/.well-known/openid-configuration``) says; ``issuer`` equals the configured one."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    userinfo_endpoint: str = ""


class OidcTokens(msgspec.Struct, frozen=True):
    id_token: str
    access_token: str = ""


class OidcClaims(msgspec.Struct, frozen=True):
    """A validated ID token (plus userinfo for what the ID token left out)."""

    issuer: str
    subject: str
    email: str = ""
    email_verified: bool = False
    name: str = ""
    amr: tuple[str, ...] = ()
    acr: str = ""


class OidcClient(Protocol):
    """The relying party's side of OIDC. Protocol failures (error responses, a token that does not
    validate) raise ``InvalidCredentials`` with the cause as ``reason``; an IdP that cannot be
    reached raises ``Unavailable``."""

    async def discover(self, issuer: str) -> OidcMetadata: ...

    async def authorization_url(
        self, provider: OidcProvider, *, redirect_uri: str, state: str, nonce: str, code_verifier: str
    ) -> str:
        """The IdP's authorization endpoint with response_type=code, scope, state, nonce and the
        S256 challenge of ``code_verifier``."""
        ...

    async def exchange_code(
        self, provider: OidcProvider, *, code: str, redirect_uri: str, code_verifier: str
    ) -> OidcTokens: ...

    async def validate_id_token(self, provider: OidcProvider, id_token: str, *, nonce: str, now: datetime) -> OidcClaims:
        """Signature (the IdP's JWKS, asymmetric algorithms only), iss, aud (and azp), exp, iat, nonce."""
        ...

    async def userinfo(self, provider: OidcProvider, access_token: str, *, subject: str) -> OidcClaims:
        """Claims from the userinfo endpoint; ``InvalidCredentials`` unless its ``sub`` is ``subject``."""
        ...


class ConfigureOidc:
    """Set (or replace) a tenant's identity provider and its OIDC policy. ``by`` is the principal
    doing it through the API (an admin of that tenant); the operator's CLI passes none. Discovery is
    fetched first, so a wrong issuer fails here rather than at the first sign-in."""

    def __init__(self, ctx: IdentityContext, oidc: OidcClient) -> None:
        self._ctx = ctx
        self._oidc = oidc

    async def __call__(
        self,
        tenant_id: str,
        *,
        issuer: str,
        client_id: str,
        client_secret: str,
        redirect_uris: Sequence[str],
        scopes: Sequence[str] = ("openid", "email", "profile"),
        jit_users: bool = False,
        link_by_verified_email: bool = False,
        by: Principal | None = None,
    ) -> OidcProvider:
        ctx = self._ctx
        tenant_id = validate_tenant_id(tenant_id)
        if by is not None:
            if by.tenant_id != tenant_id:
                raise NotFound("tenant", tenant_id)
            by.require(Role.ADMIN, "configure oidc")
        provider = OidcProvider(
            tenant_id=tenant_id, issuer=issuer.strip(),
            client_id=client_id.strip(), client_secret=client_secret, redirect_uris=tuple(redirect_uris),
            scopes=tuple(scopes), created_at=ctx.clock.now(),
        )
        try:
            await self._oidc.discover(provider.issuer)
        except InvalidCredentials as exc:
            raise InvalidRequest.single("issuer", f"discovery failed: {exc.reason}") from None
        async with ctx.uow() as uow:
            tenant = await uow.tenants.get(tenant_id)
            if tenant is None:
                raise NotFound("tenant", tenant_id)
            await uow.oidc_providers.put(provider)
            await uow.tenants.set_policy(tenant_id, msgspec.structs.replace(
                tenant.policy, oidc_jit_users=jit_users, oidc_link_by_verified_email=link_by_verified_email))
            audit(ctx, uow, tenant_id, METHOD, "configured", user_id=by.user_id if by else "",
                  reason=f"issuer {provider.issuer}")
            await uow.commit()
        return provider


class RemoveOidc:
    """Turn OIDC sign-in off for a tenant (links stay, so turning it back on restores them)."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, tenant_id: str, *, by: Principal | None = None) -> bool:
        ctx = self._ctx
        if by is not None:
            if by.tenant_id != tenant_id:
                raise NotFound("tenant", tenant_id)
            by.require(Role.ADMIN, "configure oidc")
        async with ctx.uow() as uow:
            removed = await uow.oidc_providers.delete(tenant_id)
            if removed:
                audit(ctx, uow, tenant_id, METHOD, "removed", user_id=by.user_id if by else "")
            await uow.commit()
        return removed


class BeginOidcLogin:
    """``(tenant_id, redirect_uri) -> (authorization_url, state)``. The state (≥256 bits) goes to the
    browser; its hash, the nonce, the PKCE verifier and the redirect URI stay here, usable once
    within ``state_ttl_seconds``."""

    def __init__(self, ctx: IdentityContext, oidc: OidcClient, *, state_ttl_seconds: int = 600) -> None:
        self._ctx = ctx
        self._oidc = oidc
        self._ttl = timedelta(seconds=state_ttl_seconds)

    async def __call__(self, tenant_id: str, redirect_uri: str) -> tuple[str, str]:
        ctx = self._ctx
        tenant_id = validate_tenant_id(tenant_id)
        async with ctx.uow() as uow:
            provider = await uow.oidc_providers.get(tenant_id)
        if provider is None:
            raise NotFound("oidc provider of tenant", tenant_id)
        if redirect_uri not in provider.redirect_uris:
            raise InvalidRequest.single("redirect_uri", "not one of the tenant's registered redirect URIs")
        state, nonce, verifier = ctx.secrets.token(32), ctx.secrets.token(32), ctx.secrets.token(48)
        url = await self._oidc.authorization_url(
            provider, redirect_uri=redirect_uri, state=state, nonce=nonce, code_verifier=verifier
        )
        now = ctx.clock.now()
        async with ctx.uow() as uow:
            await uow.oidc_states.purge_expired(now)
            await uow.oidc_states.add(OidcLoginState(
                state_hash=ctx.secrets.digest(state), tenant_id=tenant_id, nonce=nonce, code_verifier=verifier,
                redirect_uri=redirect_uri, expires_at=now + self._ttl,
            ))
            audit(ctx, uow, tenant_id, METHOD, "started")
            await uow.commit()
        return url, state


class FinishOidcLogin:
    """``(state, code, redirect_uri) -> (IssuedSession, created, linked)``: the IdP's redirect back.
    ``created``: a user was made just in time; ``linked``: an existing user got this IdP account."""

    def __init__(self, ctx: IdentityContext, oidc: OidcClient) -> None:
        self._ctx = ctx
        self._oidc = oidc

    async def __call__(
        self, state: str, code: str, redirect_uri: str, *, client: str = "", current_token: str = ""
    ) -> tuple[IssuedSession, bool, bool]:
        ctx = self._ctx
        async with ctx.uow() as uow:  # consumed first, whatever follows: a state is never usable twice
            pending = await uow.oidc_states.take(ctx.secrets.digest(state)) if state else None
            await uow.commit()
        tenant_id = pending.tenant_id if pending else ""
        try:
            if pending is None or pending.expired(ctx.clock.now()):
                raise InvalidCredentials("unknown, used or expired state")
            if not code:
                raise InvalidCredentials("no authorization code")
            if not ctx.secrets.equal(redirect_uri, pending.redirect_uri):
                raise InvalidCredentials("redirect_uri differs from the authorization request's")
            async with ctx.uow() as uow:
                provider = await uow.oidc_providers.get(tenant_id)
            if provider is None:
                raise InvalidCredentials("oidc no longer configured")
            claims = await self._authenticate(provider, pending, code)
        except (InvalidCredentials, Unavailable) as exc:
            reason = exc.reason if isinstance(exc, InvalidCredentials) else "identity provider unavailable"
            await self._audit_failure(tenant_id, reason, client)
            raise
        async with ctx.uow() as uow:
            try:
                user, created, linked = await self._resolve(uow, provider, claims)
            except InvalidCredentials as exc:
                await uow.rollback()  # nothing of a refused sign-in stays, but its audit event
                audit(ctx, uow, tenant_id, METHOD, "failed", reason=exc.reason, client=client)
                await uow.commit()
                raise
            if current_token:
                old = await uow.sessions.by_token_hash(ctx.secrets.digest(current_token))
                if old is not None:
                    await uow.sessions.delete(old.id)
            second = await has_second_factor(uow, user)
            issued = await issue_session(ctx, uow, user, assurance_level=1, pending_second_factor=second)
            reason = "user created just in time" if created else "linked by verified email" if linked else ""
            if second:
                reason = f"{reason}; second factor pending" if reason else "second factor pending"
            audit(ctx, uow, tenant_id, METHOD, "succeeded", user_id=user.id, reason=reason, client=client)
            await uow.commit()
        return issued, created, linked

    async def _authenticate(self, provider: OidcProvider, pending: OidcLoginState, code: str) -> OidcClaims:
        tokens = await self._oidc.exchange_code(
            provider, code=code, redirect_uri=pending.redirect_uri, code_verifier=pending.code_verifier
        )
        claims = await self._oidc.validate_id_token(provider, tokens.id_token, nonce=pending.nonce, now=self._ctx.clock.now())
        if not claims.email and tokens.access_token:  # strict providers put email in userinfo only
            extra = await self._oidc.userinfo(provider, tokens.access_token, subject=claims.subject)
            claims = msgspec.structs.replace(claims, email=extra.email, email_verified=extra.email_verified,
                                             name=claims.name or extra.name)
        return claims

    async def _resolve(self, uow: IdentityUnitOfWork, provider: OidcProvider, claims: OidcClaims) -> tuple[User, bool, bool]:
        ctx, tenant_id, now = self._ctx, provider.tenant_id, self._ctx.clock.now()
        tenant = await uow.tenants.get(tenant_id)
        policy = tenant.policy if tenant else TenantPolicy()
        linked_identity = await uow.oidc_identities.get(tenant_id, claims.issuer, claims.subject)
        if linked_identity is not None:
            user = await uow.users.get(tenant_id, linked_identity.user_id)
            if user is None or user.disabled:
                raise InvalidCredentials("linked user disabled or gone")
            await uow.oidc_identities.touch(tenant_id, claims.issuer, claims.subject, now)
            return user, False, False
        try:
            email = normalize_email(claims.email) if claims.email else ""
        except InvalidRequest:
            email = ""
        if not email:
            raise InvalidCredentials("no usable email claim for an unlinked account")
        user = await uow.users.by_email(tenant_id, email)
        if user is not None:
            if not claims.email_verified:
                raise InvalidCredentials("email not verified by the identity provider matches an existing user")
            if not policy.oidc_link_by_verified_email:
                raise InvalidCredentials("email matches an existing user; linking is disabled for the tenant")
            if not user.email_verified:
                raise InvalidCredentials("email matches a user whose address Lumina has not verified")
            if user.disabled:
                raise InvalidCredentials("user disabled")
            if any(i.issuer == claims.issuer for i in await uow.oidc_identities.list_for_user(tenant_id, user.id)):
                raise InvalidCredentials("user already linked to another subject of this issuer")
            await self._link(uow, claims, user, email)
            return user, False, True
        if not policy.oidc_jit_users:
            raise InvalidCredentials("no such user and just-in-time creation is disabled")
        user = User(
            id=ctx.ids.new_id(), tenant_id=tenant_id, email=email, display_name=claims.name[:200] or email.split("@")[0],
            created_at=now, password_hash=None, email_verified=claims.email_verified,
        )
        try:
            await uow.users.add(user)
        except InvalidRequest:
            raise InvalidCredentials("concurrent creation of the same user") from None
        await uow.memberships.put(Membership(tenant_id=tenant_id, user_id=user.id, role=Role.MEMBER))
        await self._link(uow, claims, user, email)
        return user, True, False

    async def _link(self, uow: IdentityUnitOfWork, claims: OidcClaims, user: User, email: str) -> None:
        identity = OidcIdentity(tenant_id=user.tenant_id, issuer=claims.issuer, subject=claims.subject,
                                user_id=user.id, created_at=self._ctx.clock.now(), email=email,
                                last_login_at=self._ctx.clock.now())
        if not await uow.oidc_identities.add(identity):
            raise InvalidCredentials("concurrent link of the same subject")

    async def _audit_failure(self, tenant_id: str, reason: str, client: str) -> None:
        async with self._ctx.uow() as uow:
            audit(self._ctx, uow, tenant_id, METHOD, "failed", reason=reason, client=client)
            await uow.commit()
