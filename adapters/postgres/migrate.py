"""Schema migrations (alembic) driven from code; no ini file needed.

``upgrade``/``downgrade`` are synchronous and safe to call from sync code (the CLI, a test fixture):
they run the work on their own event loop. Called from inside a running event loop they still work,
by running that loop in a helper thread, but they block the calling loop until done; async callers
should ``await upgrade_async(...)``/``downgrade_async(...)`` instead.

Each call runs all the steps in one transaction (PostgreSQL has transactional DDL): a failing
migration leaves the schema where it was.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import pool
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from adapters.postgres.engine import async_url
from adapters.postgres.errors import translate_errors

__all__ = [
    "MIGRATIONS_DIR",
    "current_async",
    "downgrade",
    "downgrade_async",
    "revisions",
    "upgrade",
    "upgrade_async",
]

MIGRATIONS_DIR = Path(__file__).resolve().parents[2] / "migrations"
T = TypeVar("T")


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return config


def revisions() -> list[str]:
    """Revision ids from base to head."""
    script = ScriptDirectory.from_config(alembic_config())
    return [rev.revision for rev in reversed(list(script.walk_revisions(base="base", head="heads")))]


async def upgrade_async(url: str, revision: str = "head") -> None:
    await _run(url, lambda config: command.upgrade(config, revision))


async def downgrade_async(url: str, revision: str) -> None:
    await _run(url, lambda config: command.downgrade(config, revision))


async def current_async(url: str) -> str | None:
    """The database's current revision id (None when unversioned)."""
    from alembic.runtime.migration import MigrationContext

    engine = create_async_engine(async_url(url), poolclass=pool.NullPool)
    try:
        async with translate_errors("migrate.current"), engine.connect() as conn:
            return await conn.run_sync(lambda sync: MigrationContext.configure(sync).get_current_revision())
    finally:
        await engine.dispose()


def upgrade(url: str, revision: str = "head") -> None:
    _block_on(lambda: upgrade_async(url, revision))


def downgrade(url: str, revision: str) -> None:
    _block_on(lambda: downgrade_async(url, revision))


async def _run(url: str, step: Callable[[Config], None]) -> None:
    config = alembic_config()
    engine = create_async_engine(async_url(url), poolclass=pool.NullPool)

    def in_connection(connection: Connection) -> None:
        config.attributes["connection"] = connection
        step(config)

    try:
        async with translate_errors("migrate"), engine.begin() as conn:
            await conn.run_sync(in_connection)
    finally:
        await engine.dispose()


def _block_on(make: Callable[[], Coroutine[Any, Any, T]]) -> T:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="lumina-migrate") as worker:
        return worker.submit(lambda: asyncio.run(make())).result()
