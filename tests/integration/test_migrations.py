"""Alembic migrations against a real PostgreSQL (embedded 18 + pgvector, or the harness's)."""

from __future__ import annotations

import asyncio

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import pool
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.postgres import migrate
from adapters.postgres.schema import metadata

APP_TABLES = {"providers", "models", "usage_records", "outbox", "processed_events", "spend_daily"}


async def _tables(url: str) -> set[str]:
    engine = create_async_engine(url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            return set(await conn.run_sync(lambda c: sa.inspect(c).get_table_names()))
    finally:
        await engine.dispose()


def test_revisions_form_a_linear_history_from_0001() -> None:
    revs = migrate.revisions()
    assert revs[:2] == ["0001", "0002"]
    assert len(revs) == len(set(revs))


async def test_stairway_every_revision_upgrades_downgrades_and_upgrades_again(
    empty_database_url: str,
) -> None:
    url = empty_database_url
    revs = migrate.revisions()
    previous = "base"
    for rev in revs:
        await migrate.upgrade_async(url, rev)
        assert await migrate.current_async(url) == rev
        await migrate.downgrade_async(url, previous)
        assert await migrate.current_async(url) == (None if previous == "base" else previous)
        await migrate.upgrade_async(url, rev)
        previous = rev
    assert await migrate.current_async(url) == revs[-1]
    assert APP_TABLES <= await _tables(url)

    await migrate.downgrade_async(url, "base")
    assert await _tables(url) == {"alembic_version"}


async def test_head_schema_matches_the_table_metadata(database_url: str) -> None:
    """The hand-written revisions and ``tables.py`` describe the same schema."""
    engine = create_async_engine(database_url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(
                    MigrationContext.configure(c, opts={"compare_type": True}), metadata
                )
            )
            vector = await conn.scalar(sa.text("SELECT count(*) FROM pg_extension WHERE extname = 'vector'"))
    finally:
        await engine.dispose()
    # Tables other components create through their own revisions (and those tables' indexes) are
    # not ours to compare.
    drift = [
        d
        for d in diff
        if not (isinstance(d, tuple) and d[0] == "remove_table")
        and not (isinstance(d, tuple) and d[0] == "remove_index" and d[1].table.name not in metadata.tables)
    ]
    assert drift == []
    assert vector == 1


def test_sync_api_works_without_a_running_loop(empty_database_url: str) -> None:
    migrate.upgrade(empty_database_url, "0001")
    assert asyncio.run(migrate.current_async(empty_database_url)) == "0001"
    migrate.downgrade(empty_database_url, "base")
    assert asyncio.run(migrate.current_async(empty_database_url)) is None
