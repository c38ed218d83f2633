"""Alembic environment (async, asyncpg). Target metadata: ``adapters.postgres.tables``.

Two ways in:
- programmatic (``adapters.postgres.migrate``): the caller opens an async connection and runs alembic
  inside ``AsyncConnection.run_sync``, passing the sync connection as ``config.attributes["connection"]``;
- CLI: ``alembic -c migrations/alembic.ini -x url=postgresql+asyncpg://... upgrade head`` (or
  ``LUMINA_DATABASE_URL``); this file then runs its own event loop.
"""

from __future__ import annotations

import asyncio
import os

from alembic import context
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.postgres.engine import async_url
from adapters.postgres.schema import metadata

config = context.config
target_metadata = metadata


def _url() -> str:
    url = (
        config.attributes.get("url")
        or context.get_x_argument(as_dictionary=True).get("url")
        or os.environ.get("LUMINA_DATABASE_URL")
        or config.get_main_option("sqlalchemy.url")
    )
    if not url:
        raise SystemExit("no database URL: pass -x url=... or set LUMINA_DATABASE_URL")
    return async_url(url)


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    engine = create_async_engine(_url(), poolclass=pool.NullPool)
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
            await connection.commit()
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
