"""``KeptConnections``: single autocommit reads on connections kept out of the pool, reused while
they work and thrown away when a statement fails."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.postgres import DatabaseUnavailable, create_engine
from adapters.postgres.autocommit import KeptConnections

PID = "SELECT pg_backend_pid()"


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=2, pre_ping=False)
    yield engine
    await engine.dispose()


async def test_reads_reuse_a_connection_and_a_failed_read_replaces_it(engine: AsyncEngine) -> None:
    kept = KeptConnections(engine, keep=1)
    try:
        first = await kept.fetchval(PID, what="pid")
        assert await kept.fetchval(PID, what="pid") == first  # the same backend: kept, not checked in
        assert await kept.fetchval("SHOW transaction_isolation", what="iso") == "read committed"
        async with engine.connect() as other:  # the kept connection holds no transaction open between reads
            state = await other.exec_driver_sql(f"SELECT state FROM pg_stat_activity WHERE pid = {first}")
            assert state.scalar_one() == "idle"
        with pytest.raises(DatabaseUnavailable):  # the server ends this connection mid-statement
            await kept.fetchval("SELECT pg_terminate_backend(pg_backend_pid())", what="terminate")
        second = await kept.fetchval(PID, what="pid")
        assert second != first  # a new connection, not the broken one
        # more concurrent reads than kept: all answered, one connection kept afterwards
        pids = await asyncio.gather(*(kept.fetchval("SELECT pg_backend_pid() FROM pg_sleep(0.05)", what="pid") for _ in range(3)))
        assert len(set(pids)) == 3
        assert len(kept._idle) == 1
    finally:
        await kept.aclose()
    assert kept._idle == []
