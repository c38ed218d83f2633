"""The memory count on a read pool without a pre-ping: exact, and a connection the server dropped
fails the one count that meets it, after which the next count gets a new connection."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres.engine import create_engine
from adapters.postgres.errors import DatabaseUnavailable
from adapters.postgres.memory_repository import PostgresMemoryRepository


async def test_the_count_reads_exactly_and_recovers_from_a_dropped_connection(engine: AsyncEngine, database_url: str) -> None:
    reads = create_engine(database_url, pool_size=1, pre_ping=False)
    repo = PostgresMemoryRepository(engine, read_engine=reads)
    tenant, user = f"t{uuid.uuid4().hex[:10]}", "u1"
    try:
        assert await repo.count(tenant, user) == 0
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO memory_search_stats (tenant_id, user_id, docs, lexemes) VALUES (:t, :u, 3, 30)"),
                {"t": tenant, "u": user},
            )
        assert await repo.count(tenant, user) == 3
        async with reads.connect() as conn:  # the pooled read connection's server process
            pid = (await conn.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})).scalar_one()
        with pytest.raises(DatabaseUnavailable):  # no pre-ping: the count meets the dropped connection
            await repo.count(tenant, user)
        assert await repo.count(tenant, user) == 3  # and the next one a new connection
    finally:
        await repo.aclose()
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM memory_search_stats WHERE tenant_id = :t"), {"t": tenant})
