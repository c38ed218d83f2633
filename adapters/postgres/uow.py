"""``SqlAlchemyUnitOfWork``: one ``AsyncSession`` (one transaction) per ``async with``.

``record(event)`` queues a domain event; ``commit()`` encodes the queued events and inserts them into
the outbox in the same transaction as the state changes, then commits. Leaving the block without
``commit()`` (or with an exception) rolls everything back, queued events included; entities read
inside the block stay readable (detached) after it. Connectivity
failures surface as ``adapters.postgres.errors.DatabaseUnavailable``.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from adapters.events_codec import encode_event
from adapters.postgres.errors import DatabaseUnavailable, translate_errors
from adapters.postgres.repositories import (
    SqlOutboxRepository,
    SqlProcessedEvents,
    SqlProviderRepository,
    SqlSpendRepository,
    SqlUsageRepository,
)
from adapters.telemetry.tracing import inject_headers
from domain.events import DomainEvent

__all__ = ["SqlAlchemyUnitOfWork", "SqlAlchemyUnitOfWorkFactory"]


class SessionUnitOfWork:
    """The transaction mechanics every SQL unit of work shares: one session per ``async with``,
    events queued by ``record`` and written to the outbox in the same transaction by ``commit``,
    rollback of whatever was not committed on exit. Subclasses attach their repositories in
    ``_bind``."""

    outbox: SqlOutboxRepository

    def __init__(self, sessions: async_sessionmaker[AsyncSession]) -> None:
        self._sessions = sessions
        self._session: AsyncSession | None = None
        self._events: list[tuple[DomainEvent, dict[str, str]]] = []

    def _bind(self, session: AsyncSession) -> None:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        if self._session is not None:
            raise RuntimeError("unit of work is already in use")
        session = self._sessions()
        self._session = session
        self._events = []
        self.outbox = SqlOutboxRepository(session)
        self._bind(session)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        session, self._session = self._session, None
        self._events = []
        if session is None:
            return
        # close() rolls back whatever was not committed and detaches the loaded entities without
        # expiring them, so what a read returned stays usable after the block. A failure to close
        # never hides the exception that is already leaving the block.
        try:
            async with translate_errors("close"):
                await session.close()
        except DatabaseUnavailable:
            if exc is None:
                raise

    def record(self, event: DomainEvent) -> None:
        self._active()
        # The trace context of the request that caused the event travels with it (W3C headers),
        # so the relay's publish and every consumer join the same trace.
        self._events.append((event, inject_headers()))

    async def commit(self) -> None:
        session = self._active()
        async with translate_errors("commit"):
            for event, headers in self._events:
                await self.outbox.add(encode_event(event, headers))
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


class SqlAlchemyUnitOfWork(SessionUnitOfWork):
    usage: SqlUsageRepository
    providers: SqlProviderRepository
    processed: SqlProcessedEvents
    spend: SqlSpendRepository

    def _bind(self, session: AsyncSession) -> None:
        self.usage = SqlUsageRepository(session)
        self.providers = SqlProviderRepository(session)
        self.processed = SqlProcessedEvents(session)
        self.spend = SqlSpendRepository(session)


class SqlAlchemyUnitOfWorkFactory:
    """``UnitOfWorkFactory``: a fresh unit of work per call, all sharing the engine's pool."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False, autoflush=True)

    def __call__(self) -> SqlAlchemyUnitOfWork:
        return SqlAlchemyUnitOfWork(self._sessions)
