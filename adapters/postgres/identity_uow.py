"""``SqlIdentityUnitOfWork``: the identity repositories on one ``AsyncSession`` (one transaction),
with ``record(event)`` writing audit events to the shared outbox at ``commit()`` (same encoding and
trace headers as ``SqlAlchemyUnitOfWork``)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adapters.postgres.identity_repositories import (
    SqlApiKeyRepository,
    SqlChallengeRepository,
    SqlMailOutbox,
    SqlMembershipRepository,
    SqlPasskeyRepository,
    SqlRecoveryCodeRepository,
    SqlResetTokenRepository,
    SqlSessionRepository,
    SqlTeamRepository,
    SqlTenantRepository,
    SqlTotpRepository,
    SqlUserRepository,
)
from adapters.postgres.uow import SessionUnitOfWork

__all__ = ["SqlIdentityUnitOfWork", "SqlIdentityUnitOfWorkFactory"]


class SqlIdentityUnitOfWork(SessionUnitOfWork):
    tenants: SqlTenantRepository
    teams: SqlTeamRepository
    users: SqlUserRepository
    memberships: SqlMembershipRepository
    sessions: SqlSessionRepository
    totp: SqlTotpRepository
    recovery_codes: SqlRecoveryCodeRepository
    passkeys: SqlPasskeyRepository
    challenges: SqlChallengeRepository
    reset_tokens: SqlResetTokenRepository
    api_keys: SqlApiKeyRepository
    mail: SqlMailOutbox

    def _bind(self, s: AsyncSession) -> None:
        self.tenants, self.teams, self.users = SqlTenantRepository(s), SqlTeamRepository(s), SqlUserRepository(s)
        self.memberships, self.sessions = SqlMembershipRepository(s), SqlSessionRepository(s)
        self.totp, self.recovery_codes = SqlTotpRepository(s), SqlRecoveryCodeRepository(s)
        self.passkeys, self.challenges = SqlPasskeyRepository(s), SqlChallengeRepository(s)
        self.reset_tokens, self.api_keys, self.mail = SqlResetTokenRepository(s), SqlApiKeyRepository(s), SqlMailOutbox(s)


class SqlIdentityUnitOfWorkFactory:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=True)

    def __call__(self) -> SqlIdentityUnitOfWork:
        return SqlIdentityUnitOfWork(self._sessions)
