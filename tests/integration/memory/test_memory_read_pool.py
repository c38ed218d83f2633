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
        async with engine.connect() as conn:  # the connections to this database before the count's
            before = list((await conn.execute(text(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            ))).scalars())
        assert await repo.count(tenant, user) == 0
        async with engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO memory_search_stats (tenant_id, user_id, docs, lexemes) VALUES (:t, :u, 3, 30)"),
                {"t": tenant, "u": user},
            )
        assert await repo.count(tenant, user) == 3
        async with engine.connect() as conn:  # the server drops the connections opened since (the count's kept one)
            dropped = await conn.execute(text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid() AND NOT pid = ANY(:before)"
            ), {"before": before})
            assert dropped.scalar_one() >= 1
        with pytest.raises(DatabaseUnavailable):  # no pre-ping: the count meets the dropped connection
            await repo.count(tenant, user)
        assert await repo.count(tenant, user) == 3  # and the next one a new connection
    finally:
        await repo.aclose()
        async with engine.begin() as conn:
            await conn.execute(text("DELETE FROM memory_search_stats WHERE tenant_id = :t"), {"t": tenant})
