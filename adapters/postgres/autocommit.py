"""One dedicated connection for a group-commit writer: each batch is a single statement executed on
the driver's connection in autocommit mode, outside SQLAlchemy's implicit transaction, so it has
committed when ``execute`` returns. A failed or interrupted statement may leave the connection
unusable, so it is thrown away and the next batch opens a new one."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from adapters.postgres.errors import translate_errors

__all__ = ["AutocommitConnection"]


class AutocommitConnection:
    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine
        self._conn: AsyncConnection | None = None

    async def execute(self, sql: str, *args: Any, what: str) -> None:
        try:
            async with translate_errors(what):
                if self._conn is None:
                    conn = await self._engine.connect()
                    self._conn = await conn.execution_options(isolation_level="AUTOCOMMIT")
                raw = await self._conn.get_raw_connection()
                await raw.driver_connection.execute(sql, *args)  # type: ignore[union-attr]
        except BaseException:
            await self._drop()
            raise

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.invalidate()
                await conn.close()
            except Exception:  # noqa: BLE001, S110 - it is being thrown away
                pass

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            await conn.close()
