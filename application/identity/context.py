"""What every identity use case needs, built once by the composition root, plus the shared steps
(audit, issuing and rotating sessions, resolving a user's role)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

import msgspec

from application.identity.ports import (
    IdentityUnitOfWork,
    IdentityUnitOfWorkFactory,
    LoginLimiter,
    PasswordHasher,
    PasswordStrength,
    SecretGenerator,
    TotpEngine,
    WebAuthnRelyingParty,
)
from domain.events import AuthenticationAudited
from domain.identity import PasswordPolicy, Role, Session, SessionPolicy, User
from domain.ports import Clock, IdGenerator

__all__ = ["IdentityContext", "IssuedSession", "RateLimit", "audit", "client_key", "issue_session", "role_and_teams", "role_of"]


class RateLimit(msgspec.Struct, frozen=True):
    """At most ``limit`` uses per fixed window of ``window_seconds``."""

    limit: int
    window_seconds: float


@dataclass(frozen=True, slots=True)
class IdentityContext:
    uow: IdentityUnitOfWorkFactory
    clock: Clock
    ids: IdGenerator
    secrets: SecretGenerator
    hasher: PasswordHasher
    strength: PasswordStrength
    limiter: LoginLimiter
    totp: TotpEngine
    webauthn: WebAuthnRelyingParty
    session_policy: SessionPolicy = field(default_factory=SessionPolicy)
    password_policy: PasswordPolicy = field(default_factory=PasswordPolicy)
    issuer: str = "Lumina"
    reset_url: str = "http://127.0.0.1:8080/recover?token="
    reset_ttl_seconds: int = 900
    recovery_code_count: int = 10
    # abuse limits of the public calls that cost a password hash or a mail (ASVS V2.4.1, V6.3.1)
    signup_limit: RateLimit = RateLimit(20, 3600)  # sign-ups per client address
    reset_limit: RateLimit = RateLimit(20, 3600)  # reset requests per client address
    reset_account_limit: RateLimit = RateLimit(5, 900)  # reset mails per (tenant, email), known or not


class IssuedSession(msgspec.Struct, frozen=True):
    """A session and its opaque token. The token is shown to the client once and never stored."""

    token: str
    session: Session

    @property
    def pending_second_factor(self) -> bool:
        return self.session.pending_second_factor


def audit(
    ctx: IdentityContext,
    uow: IdentityUnitOfWork,
    tenant_id: str,
    method: str,
    outcome: str,
    *,
    user_id: str = "",
    reason: str = "",
    client: str = "",
) -> None:
    uow.record(
        AuthenticationAudited(
            event_id=ctx.ids.new_id(),
            tenant_id=tenant_id or "unknown",
            occurred_at=ctx.clock.now(),
            method=method,
            outcome=outcome,
            user_id=user_id,
            reason=reason,
            client_address=client,
        )
    )


def client_key(client: str) -> str:
    """The limiter's name for a client address: IPv6 addresses by their /64 (one subscriber gets a
    whole /64, so counting single addresses there counts nothing); anything else as it is."""
    if ":" not in client:
        return client
    try:
        return str(ipaddress.ip_network(f"{client}/64", strict=False))
    except ValueError:
        return client


async def issue_session(
    ctx: IdentityContext,
    uow: IdentityUnitOfWork,
    user: User,
    *,
    assurance_level: int,
    pending_second_factor: bool = False,
    replaces: str = "",
    second_factor: bool = False,
) -> IssuedSession:
    """A fresh token (≥256 bits) for ``user``; ``replaces`` names a session this one rotates."""
    now = ctx.clock.now()
    token = ctx.secrets.token(32)
    if replaces:
        await uow.sessions.delete(replaces)
    session = Session(
        id=ctx.ids.new_id(),
        token_hash=ctx.secrets.digest(token),
        tenant_id=user.tenant_id,
        user_id=user.id,
        created_at=now,
        last_seen_at=now,
        assurance_level=assurance_level,
        pending_second_factor=pending_second_factor,
        second_factor_at=now if second_factor else None,
    )
    await uow.sessions.add(session)
    return IssuedSession(token=token, session=session)


async def role_of(uow: IdentityUnitOfWork, tenant_id: str, user_id: str) -> Role:
    return (await role_and_teams(uow, tenant_id, user_id))[0]


async def role_and_teams(uow: IdentityUnitOfWork, tenant_id: str, user_id: str) -> tuple[Role, tuple[str, ...]]:
    """The user's tenant role (the highest of their tenant memberships) and the teams they are in."""
    memberships = await uow.memberships.list_for_user(tenant_id, user_id)
    roles = [m.role for m in memberships if not m.team_id]
    teams = tuple(sorted({m.team_id for m in memberships if m.team_id}))
    return (max(roles, key=lambda r: r.rank) if roles else Role.VIEWER), teams
