"""Fixtures for the memory use cases on the real Postgres (pgvector + full-text) of the session."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres.engine import create_engine
from adapters.postgres.memory_repository import PostgresMemoryRepository
from adapters.system import TimeOrderedIds
from adapters.vectorstores.pgvector import PgVectorStore
from application.memory import IngestTurns, SearchMemory
from tests.unit.memory_app.hashing import HashEmbedder


class FixedClock:
    def __init__(self, now: float) -> None:
        self._now = now

    def now(self) -> datetime:
        return datetime.fromtimestamp(self._now, UTC)

    def monotonic(self) -> float:
        return 0.0


NOW = 1_760_000_000.0


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2)
    yield engine
    await engine.dispose()


@pytest.fixture
def tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def memory(engine: AsyncEngine) -> tuple[IngestTurns, SearchMemory, PostgresMemoryRepository]:
    repo = PostgresMemoryRepository(engine)
    store = PgVectorStore(engine)
    embedder = HashEmbedder()
    return (
        IngestTurns(repo, store, embedder, TimeOrderedIds()),
        SearchMemory(repo, store, embedder, FixedClock(NOW)),
        repo,
    )
