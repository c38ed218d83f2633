"""Resolving, ending and stepping up sessions."""

from __future__ import annotations

import msgspec

from application.identity.context import IdentityContext, audit, role_and_teams, role_of
from application.identity.ports import IdentityUnitOfWork
from domain.errors import NotFound
from domain.identity import (
    Forbidden,
    Principal,
    PrincipalKind,
    ReauthenticationRequired,
    Role,
    SecondFactorRequired,
    Session,
    SessionExpired,
    StepUpRequired,
)

__all__ = [
    "EndOtherSessions",
    "EndSession",
    "EndUserSessions",
    "ListSessions",
    "Logout",
    "ResolveSession",
    "SessionView",
    "load_session",
    "require_fresh_sign_in",
]


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


def require_fresh_sign_in(ctx: IdentityContext, session: Session) -> None:
    """ASVS V7.5.1: the first second factor of a single-factor account is enrolled only by a session
    signed in within the step-up window (10 min). A session is only ever issued by a sign-in (password,
    passkey or IdP) or a password change with the current password, and rotating replaces it, so its
    ``created_at`` is when its holder last proved the password (or signed in at the IdP): an older,
    perhaps stolen, session must sign in again (``ReauthenticationRequired``)."""
    if ctx.clock.now() - session.created_at > ctx.session_policy.step_up_window:
        raise ReauthenticationRequired()


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
            role, teams = await role_and_teams(uow, session.tenant_id, session.user_id)
            await uow.sessions.touch(session.id, now)
            await uow.commit()
        return Principal(
            tenant_id=session.tenant_id,
            user_id=session.user_id,
            role=role,
            kind=PrincipalKind.USER,
            credential_id=session.id,
            assurance_level=session.assurance_level,
            team_ids=teams,
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


class SessionView(msgspec.Struct, frozen=True):
    session: Session
    current: bool  # the session of the caller


class ListSessions:
    """ASVS V7.5.2: the caller's own live sessions, newest first (an API key caller: its user's)."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, principal: Principal) -> list[SessionView]:
        ctx, now = self._ctx, self._ctx.clock.now()
        async with ctx.uow() as uow:
            sessions = await uow.sessions.list_for_user(principal.tenant_id, principal.user_id)
        current = principal.credential_id if principal.kind is PrincipalKind.USER else ""
        live = [s for s in sessions if not s.expired(now, ctx.session_policy)]
        live.sort(key=lambda s: s.created_at, reverse=True)
        return [SessionView(session=s, current=s.id == current) for s in live]


class EndSession:
    """ASVS V7.5.2: the caller ends one of their own sessions (their current one too: a logout).
    Another user's session, or an unknown id, is NotFound alike."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, principal: Principal, session_id: str, *, client: str = "") -> None:
        ctx = self._ctx
        async with ctx.uow() as uow:
            mine = {s.id for s in await uow.sessions.list_for_user(principal.tenant_id, principal.user_id)}
            if not session_id or session_id not in mine:
                raise NotFound("session", session_id)
            await uow.sessions.delete(session_id)
            audit(ctx, uow, principal.tenant_id, "session", "ended", user_id=principal.user_id,
                  reason=f"by the user: {session_id}", client=client)
            await uow.commit()


class EndUserSessions:
    """ASVS V7.4.5: a tenant admin ends every session of a user of their tenant (an owner's only an
    owner may end). Returns how many ended. A user of another tenant is NotFound."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, actor: Principal, user_id: str, *, client: str = "") -> int:
        actor.require(Role.ADMIN, "end a user's sessions")
        ctx = self._ctx
        async with ctx.uow() as uow:
            if not user_id or await uow.users.get(actor.tenant_id, user_id) is None:
                raise NotFound("user", user_id)
            if await role_of(uow, actor.tenant_id, user_id) is Role.OWNER and not actor.role.includes(Role.OWNER):
                raise Forbidden("end an owner's sessions")
            ended = await uow.sessions.delete_for_user(actor.tenant_id, user_id)
            audit(ctx, uow, actor.tenant_id, "session", "ended", user_id=user_id,
                  reason=f"all {ended} by admin {actor.user_id}", client=client)
            await uow.commit()
        return ended
