"""``SqlIdentityUnitOfWork``: the identity repositories on one ``AsyncSession`` (one transaction),
with ``record(event)`` writing audit events to the shared outbox at ``commit()`` (same encoding and
trace headers as ``SqlAlchemyUnitOfWork``)."""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adapters.events_codec import encode_event
from adapters.postgres.errors import DatabaseUnavailable, translate_errors
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
from adapters.postgres.repositories import SqlOutboxRepository
from adapters.telemetry.tracing import inject_headers
from domain.events import DomainEvent

__all__ = ["SqlIdentityUnitOfWork", "SqlIdentityUnitOfWorkFactory"]


class SqlIdentityUnitOfWork:
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

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None
        self._events: list[tuple[DomainEvent, dict[str, str]]] = []

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise RuntimeError("unit of work is already in use")
        s = self._session = self._sessions()
        self._events = []
        self.tenants, self.teams, self.users = SqlTenantRepository(s), SqlTeamRepository(s), SqlUserRepository(s)
        self.memberships, self.sessions = SqlMembershipRepository(s), SqlSessionRepository(s)
        self.totp, self.recovery_codes = SqlTotpRepository(s), SqlRecoveryCodeRepository(s)
        self.passkeys, self.challenges = SqlPasskeyRepository(s), SqlChallengeRepository(s)
        self.reset_tokens, self.api_keys, self.mail = SqlResetTokenRepository(s), SqlApiKeyRepository(s), SqlMailOutbox(s)
        self._outbox = SqlOutboxRepository(s)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        session, self._session = self._session, None
        self._events = []
        if session is None:
            return
        try:
            async with translate_errors("close"):
                await session.close()
        except DatabaseUnavailable:
            if exc is None:
                raise

    def record(self, event: DomainEvent) -> None:
        self._active()
        self._events.append((event, inject_headers()))

    async def commit(self) -> None:
        session = self._active()
        async with translate_errors("commit"):
            for event, headers in self._events:
                await self._outbox.add(encode_event(event, headers))
            await session.commit()
        self._events = []

    async def rollback(self) -> None:
        self._events = []
        async with translate_errors("rollback"):
            await self._active().rollback()

    def _active(self) -> AsyncSession:
        if self._session is None:
            raise RuntimeError("unit of work used outside 'async with'")
        return self._session


class SqlIdentityUnitOfWorkFactory:
    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=True)

    def __call__(self) -> SqlIdentityUnitOfWork:
        return SqlIdentityUnitOfWork(self._sessions)
