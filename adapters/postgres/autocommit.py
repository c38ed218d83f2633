"""One dedicated connection for a group-commit writer: each batch is a single statement executed on
the driver's connection in autocommit mode, outside SQLAlchemy's implicit transaction, so it has
committed when ``execute`` returns. A failed or interrupted statement may leave the connection
unusable, so it is thrown away and the next batch opens a new one.

``synchronous_commit=False``: the connection's commits return once their WAL is written, without
waiting for it to be flushed to disk (PostgreSQL's ``synchronous_commit = off``). Nothing becomes
inconsistent; a crash of the database server (not of this process) can lose the last commits of
up to three ``wal_writer_delay`` periods (0.6 s by default). The setting is reset before the
connection goes back to the pool."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.postgres.errors import translate_errors

__all__ = ["AutocommitConnection", "KeptConnections", "open_autocommit", "throw_away"]


class AutocommitConnection:
    def __init__(self, engine: AsyncEngine, *, synchronous_commit: bool = True) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None
        self._driver: Any = None  # the asyncpg connection under ``_conn``, looked up once
        self._synchronous = synchronous_commit

    async def execute(self, sql: str, *args: Any, what: str) -> None:
        try:
            async with translate_errors(what):
                driver = self._driver
                if driver is None:
                    self._conn, driver = await open_autocommit(self._engine)
                    if not self._synchronous:
                        await driver.execute("SET synchronous_commit = off")
                    self._driver = driver
                await driver.execute(sql, *args)
        except BaseException:
            await self._drop()
            raise

    async def _drop(self) -> None:
        conn, self._conn, self._driver = self._conn, None, None
        if conn is not None:
            await throw_away(conn)

    async def aclose(self) -> None:
        conn, driver, self._conn, self._driver = self._conn, self._driver, None, None
        if conn is not None:
            if not self._synchronous:
                try:
                    await driver.execute("RESET synchronous_commit")
                except Exception:  # noqa: BLE001 - a broken connection is not reused
                    await conn.invalidate()
            await conn.close()


class KeptConnections:
    """Connections kept checked out of ``engine``'s pool for single reads outside any transaction
    (autocommit), at most ``keep`` of them idle: a read takes an idle one (or opens one) and gives it
    back, without the pool's checkout and check-in (its events and reset) around every statement.
    A read that fails throws its connection away (whatever broke, the next read opens a new one)."""

    def __init__(self, engine: AsyncEngine, *, keep: int = 4) -> None:
        self._engine = engine
        self._keep = keep
        self._idle: list[tuple[AsyncConnection, Any]] = []

    async def fetchval(self, sql: str, *args: Any, what: str) -> Any:
        async with translate_errors(what):
            conn, driver = self._idle.pop() if self._idle else await open_autocommit(self._engine)
            try:
                value = await driver.fetchval(sql, *args)
            except BaseException:
                await throw_away(conn)
                raise
        if len(self._idle) < self._keep:
            self._idle.append((conn, driver))
        else:
            await conn.close()
        return value

    async def aclose(self) -> None:
        idle, self._idle = self._idle, []
        for conn, _ in idle:
            await conn.close()


async def open_autocommit(engine: AsyncEngine) -> tuple[AsyncConnection, Any]:
    """A connection of ``engine``'s pool in autocommit mode, and the asyncpg connection under it."""
    conn = await engine.connect()
    try:
        conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
        return conn, (await conn.get_raw_connection()).driver_connection
    except BaseException:
        await conn.close()
        raise


async def throw_away(conn: AsyncConnection) -> None:
    """Invalidate and close ``conn`` (the pool replaces it), whatever state it is in."""
    try:
        await conn.invalidate()
        await conn.close()
    except Exception:  # noqa: BLE001, S110 - it is being thrown away
        pass
