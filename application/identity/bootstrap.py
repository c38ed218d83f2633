"""First start: the default tenant, its administrator and (optionally) a pre-shared admin API key,
idempotently; and acting as a user from the operator's command line (``lumina keys create``).

The administrator is created passwordless. With a bootstrap key (``LUMINA_BOOTSTRAP_API_KEY``)
scripts can call at once; without one, a one-time password-reset link lets the operator set the
password in the console. A second start changes nothing (a fresh link is issued while the
administrator still has no password; old links expire on their own)."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from application.identity.context import IdentityContext, audit, role_of
from domain.errors import NotFound
from domain.identity import (
    ApiKey,
    Membership,
    PasswordResetToken,
    Principal,
    PrincipalKind,
    Role,
    Tenant,
    User,
    normalize_email,
    parse_api_key,
    validate_tenant_id,
)

__all__ = ["ActAs", "BootstrapAdmin", "BootstrapKey", "FirstStart"]


class BootstrapKey:
    """What became of the bootstrap key on this start."""

    NONE = ""  # none was given
    CREATED = "created"
    EXISTS = "exists"  # stored by an earlier start: nothing to do
    REVOKED = "revoked"  # stored earlier and revoked since: it stays revoked
    CONFLICT = "conflict"  # its prefix belongs to another key


class FirstStart(msgspec.Struct, frozen=True):
    tenant_created: bool
    admin_created: bool
    admin: User
    key: str = BootstrapKey.NONE
    reset_link: str = ""  # set when the administrator has no password and no key was given


class BootstrapAdmin:
    def __init__(self, ctx: IdentityContext, *, reset_ttl: timedelta = timedelta(hours=1)) -> None:
        self._ctx = ctx
        self._reset_ttl = reset_ttl

    async def __call__(self, tenant_id: str, email: str, *, api_key: str = "", tenant_name: str = "Default") -> FirstStart:
        ctx = self._ctx
        tenant_id = validate_tenant_id(tenant_id)
        email = normalize_email(email)
        parsed = parse_api_key(api_key) if api_key else None
        now = ctx.clock.now()
        async with ctx.uow() as uow:
            tenant_created = admin_created = False
            if await uow.tenants.get(tenant_id) is None:
                await uow.tenants.add(Tenant(id=tenant_id, name=tenant_name, created_at=now))
                tenant_created = True
            admin = await uow.users.by_email(tenant_id, email)
            if admin is None:
                admin = User(
                    id=ctx.ids.new_id(), tenant_id=tenant_id, email=email, display_name="Administrator", created_at=now,
                    password_hash=None, email_verified=True,
                )
                await uow.users.add(admin)
                await uow.memberships.put(Membership(tenant_id=tenant_id, user_id=admin.id, role=Role.OWNER))
                admin_created = True
            key = BootstrapKey.NONE
            if parsed is not None:
                prefix, secret = parsed
                digest = ctx.secrets.digest(secret)
                existing = await uow.api_keys.by_prefix(prefix)
                if existing is None:
                    stored = ApiKey(
                        id=ctx.ids.new_id(), prefix=prefix, secret_hash=digest, tenant_id=tenant_id, user_id=admin.id,
                        name="bootstrap (LUMINA_BOOTSTRAP_API_KEY)", created_at=now,
                    )
                    await uow.api_keys.add(stored)
                    audit(ctx, uow, tenant_id, "api_key", "enrolled", user_id=admin.id, reason=f"key {stored.id} (bootstrap)")
                    key = BootstrapKey.CREATED
                elif existing.tenant_id != tenant_id or not ctx.secrets.equal(existing.secret_hash, digest):
                    key = BootstrapKey.CONFLICT
                else:
                    key = BootstrapKey.REVOKED if existing.revoked_at is not None else BootstrapKey.EXISTS
            link = ""
            if parsed is None and admin.password_hash is None:
                token = ctx.secrets.token(32)
                await uow.reset_tokens.add(
                    PasswordResetToken(
                        token_hash=ctx.secrets.digest(token), user_id=admin.id, tenant_id=tenant_id,
                        expires_at=now + self._reset_ttl,
                    )
                )
                audit(ctx, uow, tenant_id, "password_reset", "requested", user_id=admin.id, reason="first start")
                link = f"{ctx.reset_url}{token}"
            await uow.commit()
        return FirstStart(tenant_created=tenant_created, admin_created=admin_created, admin=admin, key=key, reset_link=link)


class ActAs:
    """The principal of a user named by tenant and email, for an operator at the command line (who
    holds the database, so is trusted with every account of it)."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, tenant_id: str, email: str) -> Principal:
        email = normalize_email(email)
        async with self._ctx.uow() as uow:
            user = await uow.users.by_email(validate_tenant_id(tenant_id), email)
            if user is None or user.disabled:
                raise NotFound("user", f"{email} in tenant {tenant_id}")
            role = await role_of(uow, tenant_id, user.id)
        return Principal(tenant_id=tenant_id, user_id=user.id, role=role, kind=PrincipalKind.USER, credential_id="cli")
