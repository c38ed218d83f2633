"""Tenants, users, teams, roles and passwords."""

from __future__ import annotations

import asyncio
import re

import msgspec

from application.identity.context import (
    IdentityContext,
    IssuedSession,
    audit,
    issue_session,
)
from application.identity.sessions import load_session
from domain.errors import NotFound
from domain.identity import (
    InvalidCredentials,
    Membership,
    Principal,
    PrincipalKind,
    Role,
    StepUpRequired,
    Team,
    Tenant,
    TenantPolicy,
    User,
    WeakPassword,
    normalize_email,
    validate_tenant_id,
)

__all__ = [
    "CONTEXT_WORDS",
    "ChangePassword",
    "CreateTeam",
    "CreateTenant",
    "RegisterUser",
    "SetRole",
    "UpdateTenantPolicy",
    "check_new_password",
]

# Context-specific words (ASVS V6.1.2, V6.2.11): words an attacker tries first, so a password built
# of them is no stronger than what is left without them. The product's own name, and, per call, the
# user's email (and its parts), display name, organisation and tenant id; parts of 4+ characters.
CONTEXT_WORDS = ("lumina",)
_WORD_PARTS = re.compile(r"[^\w]+")


def check_new_password(ctx: IdentityContext, password: str, user_inputs: list[str]) -> None:
    """Length first (cheap, and keeps huge inputs away from the estimator), then strength, then
    strength once the context words (``CONTEXT_WORDS`` + ``user_inputs``) are taken out."""
    policy = ctx.password_policy
    policy.check_length(password)
    words = [*CONTEXT_WORDS, *user_inputs]
    policy.check_strength(ctx.strength.estimate(password, words))
    rest = password
    parts = {p.lower() for w in words for p in _WORD_PARTS.split(w) if len(p) >= 4}
    for part in sorted(parts, key=len, reverse=True):
        rest = re.sub(re.escape(part), "", rest, flags=re.IGNORECASE)
    if rest != password:
        report = ctx.strength.estimate(rest, words)
        if len(rest) < policy.min_length or report.common or report.score < policy.min_score:
            raise WeakPassword("built on a name, an email address or the organisation: add words of your own")


class CreateTenant:
    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, tenant_id: str, name: str, policy: TenantPolicy | None = None) -> Tenant:
        tenant = Tenant(
            id=validate_tenant_id(tenant_id), name=name, created_at=self._ctx.clock.now(), policy=policy or TenantPolicy()
        )
        async with self._ctx.uow() as uow:
            await uow.tenants.add(tenant)
            await uow.commit()
        return tenant


class RegisterUser:
    """Create a user in a tenant with a tenant role; ``password`` None makes a passwordless account."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(
        self,
        tenant_id: str,
        email: str,
        display_name: str,
        password: str | None,
        role: Role = Role.MEMBER,
        *,
        email_verified: bool = False,
    ) -> User:
        ctx = self._ctx
        email = normalize_email(email)
        password_hash = None
        if password is not None:
            check_new_password(ctx, password, [email, display_name, email.split("@")[0], tenant_id])
            password_hash = await asyncio.to_thread(ctx.hasher.hash, password)
        user = User(
            id=ctx.ids.new_id(),
            tenant_id=validate_tenant_id(tenant_id),
            email=email,
            display_name=display_name,
            created_at=ctx.clock.now(),
            password_hash=password_hash,
            email_verified=email_verified,
        )
        async with ctx.uow() as uow:
            if await uow.tenants.get(tenant_id) is None:
                raise NotFound("tenant", tenant_id)
            await uow.users.add(user)
            await uow.memberships.put(Membership(tenant_id=tenant_id, user_id=user.id, role=role))
            await uow.commit()
        return user


class SetRole:
    """An admin sets a user's tenant (or team) role. The user's sessions end, so the new
    privileges start with a new session (ASVS V7.2.4: new token on privilege change)."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, actor: Principal, user_id: str, role: Role, team_id: str = "") -> None:
        actor.require(Role.ADMIN, "set role")
        if role is Role.OWNER:
            actor.require(Role.OWNER, "grant owner")
        async with self._ctx.uow() as uow:
            if await uow.users.get(actor.tenant_id, user_id) is None:
                raise NotFound("user", user_id)
            await uow.memberships.put(Membership(actor.tenant_id, user_id, role, team_id))
            await uow.sessions.delete_for_user(actor.tenant_id, user_id)
            await uow.commit()


class CreateTeam:
    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, actor: Principal, name: str) -> Team:
        actor.require(Role.ADMIN, "create team")
        team = Team(id=self._ctx.ids.new_id(), tenant_id=actor.tenant_id, name=name, created_at=self._ctx.clock.now())
        async with self._ctx.uow() as uow:
            await uow.teams.add(team)
            await uow.commit()
        return team


class ChangePassword:
    """Needs the current password (ASVS V6.2.3); ends every other session and rotates this one."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, token: str, current: str, new: str, *, client: str = "") -> IssuedSession:
        ctx = self._ctx
        async with ctx.uow() as uow:
            session = await load_session(ctx, uow, token)
            user = await uow.users.get(session.tenant_id, session.user_id)
            assert user is not None
            ok = user.password_hash is not None and await asyncio.to_thread(
                ctx.hasher.verify, user.password_hash, current
            )
            if not ok:
                audit(ctx, uow, user.tenant_id, "password", "failed", user_id=user.id, reason="change: wrong current", client=client)
                await uow.commit()
                raise InvalidCredentials("wrong current password")
            check_new_password(ctx, new, [user.email, user.display_name, user.email.split("@")[0], user.tenant_id])
            await uow.users.set_password_hash(user.tenant_id, user.id, await asyncio.to_thread(ctx.hasher.hash, new))
            await uow.sessions.delete_for_user(user.tenant_id, user.id)
            issued = await issue_session(ctx, uow, user, assurance_level=session.assurance_level)
            audit(ctx, uow, user.tenant_id, "password", "changed", user_id=user.id, client=client)
            await uow.commit()
        return issued


class UpdateTenantPolicy:
    """A tenant admin (or owner) sets whether the tenant requires MFA (ASVS V6.3.3). Turning it off
    weakens every account, so it needs a session with a recent second factor (step-up; an API key
    cannot). Turning it on leaves single-factor sessions able to enrol a factor and nothing else."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, actor: Principal, *, require_mfa: bool, client: str = "") -> TenantPolicy:
        actor.require(Role.ADMIN, "change the tenant's policy")
        ctx = self._ctx
        async with ctx.uow() as uow:
            tenant = await uow.tenants.get(actor.tenant_id)
            if tenant is None:
                raise NotFound("tenant", actor.tenant_id)
            if tenant.policy.require_mfa and not require_mfa:
                session = None
                if actor.kind is PrincipalKind.USER:
                    sessions = await uow.sessions.list_for_user(actor.tenant_id, actor.user_id)
                    session = next((s for s in sessions if s.id == actor.credential_id), None)
                if session is None or not session.recent_second_factor(ctx.clock.now(), ctx.session_policy):
                    raise StepUpRequired()
            policy = msgspec.structs.replace(tenant.policy, require_mfa=require_mfa)
            if policy != tenant.policy:
                await uow.tenants.set_policy(tenant.id, policy)
                audit(ctx, uow, tenant.id, "tenant_policy", "changed", user_id=actor.user_id,
                      reason=f"require_mfa={'on' if require_mfa else 'off'}", client=client)
                await uow.commit()
        return policy
