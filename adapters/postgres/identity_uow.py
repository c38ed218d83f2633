"""``SqlIdentityUnitOfWork``: the identity repositories on one ``AsyncSession`` (one transaction),
with ``record(event)`` writing audit events to the shared outbox at ``commit()`` (same encoding and
trace headers as ``SqlAlchemyUnitOfWork``). The ``kms`` seals TOTP seeds and OIDC client secrets
at rest (``adapters.secrets.LocalKeyfileKms`` in the data directory, the one provider keys use)."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adapters.postgres.identity_repositories import (
    SqlApiKeyRepository,
    SqlChallengeRepository,
    SqlMailOutbox,
    SqlMembershipRepository,
    SqlOidcIdentityRepository,
    SqlOidcProviderRepository,
    SqlOidcStateRepository,
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
from application.identity.ports import Kms

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
    oidc_providers: SqlOidcProviderRepository
    oidc_identities: SqlOidcIdentityRepository
    oidc_states: SqlOidcStateRepository

    def __init__(self, sessions: async_sessionmaker[AsyncSession], kms: Kms) -> None:
        super().__init__(sessions)
        self._kms = kms

    def _bind(self, s: AsyncSession) -> None:
        self.tenants, self.teams, self.users = SqlTenantRepository(s), SqlTeamRepository(s), SqlUserRepository(s)
        self.memberships, self.sessions = SqlMembershipRepository(s), SqlSessionRepository(s)
        self.totp, self.recovery_codes = SqlTotpRepository(s, self._kms), SqlRecoveryCodeRepository(s)
        self.passkeys, self.challenges = SqlPasskeyRepository(s), SqlChallengeRepository(s)
        self.reset_tokens, self.api_keys, self.mail = SqlResetTokenRepository(s), SqlApiKeyRepository(s), SqlMailOutbox(s)
        self.oidc_providers = SqlOidcProviderRepository(s, self._kms)
        self.oidc_identities, self.oidc_states = SqlOidcIdentityRepository(s), SqlOidcStateRepository(s)


class SqlIdentityUnitOfWorkFactory:
    def __init__(self, engine: AsyncEngine, *, kms: Kms) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=True)
        self._kms = kms

    def __call__(self) -> SqlIdentityUnitOfWork:
        return SqlIdentityUnitOfWork(self._sessions, self._kms)
