"""Resolving, ending and stepping up sessions."""

from __future__ import annotations

from application.identity.context import IdentityContext, role_of
from application.identity.ports import IdentityUnitOfWork
from domain.identity import (
    Principal,
    PrincipalKind,
    SecondFactorRequired,
    Session,
    SessionExpired,
    StepUpRequired,
)

__all__ = ["EndOtherSessions", "Logout", "ResolveSession", "load_session"]


async def load_session(
    ctx: IdentityContext, uow: IdentityUnitOfWork, token: str, *, allow_pending: bool = False
) -> Session:
    """The live session of ``token`` (SessionExpired otherwise); an expired one is deleted."""
    if not token:
        raise SessionExpired("no token")
    session = await uow.sessions.by_token_hash(ctx.secrets.digest(token))
    if session is None:
        raise SessionExpired("unknown token")
    why = session.expired(ctx.clock.now(), ctx.session_policy)
    if why:
        await uow.sessions.delete(session.id)
        await uow.commit()
        raise SessionExpired(why)
    if session.pending_second_factor and not allow_pending:
        raise SecondFactorRequired()
    return session


class ResolveSession:
    """Token -> ``Principal`` for the edges. Refreshes the idle timer. ``step_up`` demands a second
    factor within the policy's window; a tenant that requires MFA gets single-factor sessions
    refused unless ``allow_single_factor`` (MFA enrolment pages)."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, token: str, *, step_up: bool = False, allow_single_factor: bool = False) -> Principal:
        ctx = self._ctx
        async with ctx.uow() as uow:
            session = await load_session(ctx, uow, token)
            now = ctx.clock.now()
            if step_up and not session.recent_second_factor(now, ctx.session_policy):
                raise StepUpRequired()
            if session.assurance_level < 2 and not allow_single_factor:
                tenant = await uow.tenants.get(session.tenant_id)
                if tenant is not None and tenant.policy.require_mfa:
                    raise SecondFactorRequired()
            user = await uow.users.get(session.tenant_id, session.user_id)
            if user is None or user.disabled:
                await uow.sessions.delete(session.id)
                await uow.commit()
                raise SessionExpired("user gone")
            role = await role_of(uow, session.tenant_id, session.user_id)
            await uow.sessions.touch(session.id, now)
            await uow.commit()
        return Principal(
            tenant_id=session.tenant_id,
            user_id=session.user_id,
            role=role,
            kind=PrincipalKind.USER,
            credential_id=session.id,
            assurance_level=session.assurance_level,
        )


class Logout:
    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, token: str) -> None:
        async with self._ctx.uow() as uow:
            session = await uow.sessions.by_token_hash(self._ctx.secrets.digest(token))
            if session is not None:
                await uow.sessions.delete(session.id)
                await uow.commit()


class EndOtherSessions:
    """ASVS V7.4.4: the user sees and ends their other sessions. Returns how many ended."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, token: str) -> int:
        async with self._ctx.uow() as uow:
            session = await load_session(self._ctx, uow, token)
            ended = await uow.sessions.delete_for_user(session.tenant_id, session.user_id, except_id=session.id)
            await uow.commit()
        return ended
