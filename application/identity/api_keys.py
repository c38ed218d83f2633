"""API keys ("virtual keys"): ``lum_<prefix>_<secret>``, shown once, stored as a SHA-256 of the
secret, scoped to a tenant and a principal, with expiry, revocation and last-used time."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

from application.identity.context import IdentityContext, audit, role_and_teams
from domain.identity import (
    ApiKey,
    InvalidCredentials,
    Principal,
    PrincipalKind,
    Role,
    format_api_key,
    parse_api_key,
)

__all__ = ["AuthenticateApiKey", "CreateApiKey", "CreatedApiKey", "ListApiKeys", "RevokeApiKey"]

_DUMMY_HASH = "0" * 64
LAST_USED_RESOLUTION = timedelta(seconds=60)  # write last_used_at at most once a minute


class CreatedApiKey(msgspec.Struct, frozen=True):
    key: ApiKey
    raw: str  # lum_<prefix>_<secret>: shown once, never stored


class CreateApiKey:
    """A key for ``actor`` (or, for an admin, for ``user_id`` of the same tenant)."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(
        self, actor: Principal, name: str, *, expires_at: datetime | None = None, user_id: str = ""
    ) -> CreatedApiKey:
        ctx = self._ctx
        owner = user_id or actor.user_id
        if owner != actor.user_id:
            actor.require(Role.ADMIN, "create an api key for another user")
        prefix = ctx.secrets.digest(ctx.secrets.token(16))[:12]  # 12 hex chars, 48 random bits
        secret = ctx.secrets.token(32)
        key = ApiKey(
            id=ctx.ids.new_id(), prefix=prefix, secret_hash=ctx.secrets.digest(secret), tenant_id=actor.tenant_id,
            user_id=owner, name=name[:100], created_at=ctx.clock.now(), expires_at=expires_at,
        )
        async with ctx.uow() as uow:
            if await uow.users.get(actor.tenant_id, owner) is None:
                raise InvalidCredentials("owner not in tenant")
            await uow.api_keys.add(key)
            audit(ctx, uow, actor.tenant_id, "api_key", "enrolled", user_id=owner, reason=f"key {key.id}")
            await uow.commit()
        return CreatedApiKey(key=key, raw=format_api_key(prefix, secret))


class ListApiKeys:
    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, actor: Principal) -> list[ApiKey]:
        async with self._ctx.uow() as uow:
            keys = await uow.api_keys.list_for_tenant(actor.tenant_id)
        if actor.role.includes(Role.ADMIN):
            return list(keys)
        return [k for k in keys if k.user_id == actor.user_id]


class RevokeApiKey:
    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, actor: Principal, key_id: str) -> bool:
        ctx = self._ctx
        async with ctx.uow() as uow:
            keys = {k.id: k for k in await uow.api_keys.list_for_tenant(actor.tenant_id)}
            key = keys.get(key_id)
            if key is None:
                return False
            if key.user_id != actor.user_id:
                actor.require(Role.ADMIN, "revoke another user's api key")
            done = await uow.api_keys.revoke(actor.tenant_id, key_id, ctx.clock.now())
            audit(ctx, uow, actor.tenant_id, "api_key", "revoked", user_id=key.user_id, reason=f"key {key_id}")
            await uow.commit()
        return done


class AuthenticateApiKey:
    """Raw key -> ``Principal``. Looks up by the public prefix, then compares the secret's hash in
    constant time (against a dummy hash when the prefix is unknown). Every failure is the same
    ``InvalidCredentials`` and an audit event."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, raw: str, *, client: str = "") -> Principal:
        ctx = self._ctx
        try:
            prefix, secret = parse_api_key(raw)
        except InvalidCredentials:
            prefix, secret = "", raw
        now = ctx.clock.now()
        async with ctx.uow() as uow:
            key = await uow.api_keys.by_prefix(prefix) if prefix else None
            matches = ctx.secrets.equal(key.secret_hash if key else _DUMMY_HASH, ctx.secrets.digest(secret))
            reason = ""
            if key is None or not prefix:
                reason = "unknown key"
            elif not matches:
                reason = "wrong secret"
            elif not key.usable(now):
                reason = "revoked" if key.revoked_at else "expired"
            user = None
            if not reason and key is not None:
                user = await uow.users.get(key.tenant_id, key.user_id)
                if user is None or user.disabled:
                    reason = "owner gone"
            if reason or key is None or user is None:
                audit(ctx, uow, key.tenant_id if key else "", "api_key", "failed",
                      user_id=key.user_id if key else "", reason=reason, client=client)
                await uow.commit()
                raise InvalidCredentials(reason)
            role, teams = await role_and_teams(uow, key.tenant_id, key.user_id)
            if key.last_used_at is None or now - key.last_used_at >= LAST_USED_RESOLUTION:
                await uow.api_keys.touch(key.id, now)
                await uow.commit()
        return Principal(
            tenant_id=key.tenant_id, user_id=key.user_id, role=role, kind=PrincipalKind.API_KEY, credential_id=key.id,
            team_ids=teams,
        )
