"""Self-service sign-up: a new organisation (tenant) with the caller as its owner, signed in at once.

The tenant id is derived from the organisation's name (``Acme Labs`` -> ``acme-labs``) and made
unique with a short random suffix when taken; an explicit ``tenant_id`` must be free. Tenant, user,
owner membership, session and audit event commit in one transaction.

Every attempt counts against the client address's sign-up limit (``IdentityContext.signup_limit``,
a fixed window in Redis), valid or not: each one costs a password hash, and a flood of them
would fill the database with organisations. Past it the answer is ``TooManyAttempts`` (429 with
Retry-After) whatever was sent."""

from __future__ import annotations

import asyncio
import re
import unicodedata

import msgspec

from application.identity.accounts import check_new_password
from application.identity.context import (
    IdentityContext,
    IssuedSession,
    audit,
    client_key,
    issue_session,
)
from domain.errors import InvalidRequest
from domain.identity import (
    Membership,
    Role,
    Tenant,
    TooManyAttempts,
    User,
    normalize_email,
    validate_tenant_id,
)

__all__ = ["SignUp", "SignedUp", "tenant_id_for"]

_NOT_SLUG = re.compile(r"[^a-z0-9]+")
_ATTEMPTS = 5


def tenant_id_for(name: str) -> str:
    """A tenant id from an organisation's name: ASCII-folded, lower-case, runs of other characters
    as one '-', at most 40 characters; 'org' when nothing is left."""
    folded = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    slug = _NOT_SLUG.sub("-", folded).strip("-")[:40].strip("-")
    return slug or "org"


class SignedUp(msgspec.Struct, frozen=True):
    tenant: Tenant
    user: User
    session: IssuedSession


class SignUp:
    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(
        self, email: str, password: str, display_name: str, organisation: str, *, tenant_id: str = "", client: str = ""
    ) -> SignedUp:
        ctx = self._ctx
        if client:
            try:
                await ctx.limiter.hit(f"signup:{client_key(client)}", limit=ctx.signup_limit.limit,
                                      window_seconds=ctx.signup_limit.window_seconds)
            except TooManyAttempts:
                async with ctx.uow() as uow:
                    audit(ctx, uow, "", "signup", "locked_out", reason="sign-up limit of the address", client=client)
                    await uow.commit()
                raise
        email = normalize_email(email)
        organisation = organisation.strip()[:100]
        if not organisation and not tenant_id:
            raise InvalidRequest.single("organisation", "required (or a tenant_id)")
        display_name = display_name.strip()[:100] or email.split("@")[0]
        check_new_password(ctx, password, [email, display_name, email.split("@")[0], organisation])
        password_hash = await asyncio.to_thread(ctx.hasher.hash, password)
        base = validate_tenant_id(tenant_id) if tenant_id else tenant_id_for(organisation)
        now = ctx.clock.now()
        async with ctx.uow() as uow:
            chosen = base
            if not tenant_id:
                for _ in range(_ATTEMPTS):
                    if await uow.tenants.get(chosen) is None:
                        break
                    chosen = f"{base[:50]}-{ctx.secrets.digest(ctx.secrets.token(8))[:6]}"
            tenant = Tenant(id=chosen, name=organisation or chosen, created_at=now)
            await uow.tenants.add(tenant)  # InvalidRequest(tenant_id) when taken meanwhile
            user = User(
                id=ctx.ids.new_id(), tenant_id=tenant.id, email=email, display_name=display_name, created_at=now,
                password_hash=password_hash,
            )
            await uow.users.add(user)
            await uow.memberships.put(Membership(tenant_id=tenant.id, user_id=user.id, role=Role.OWNER))
            issued = await issue_session(ctx, uow, user, assurance_level=1)
            audit(ctx, uow, tenant.id, "password", "enrolled", user_id=user.id, reason="sign-up", client=client)
            await uow.commit()
        return SignedUp(tenant=tenant, user=user, session=issued)
