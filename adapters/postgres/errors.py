"""Persistence errors, translated from driver errors at this adapter's boundary.

PersistenceError
└── DatabaseUnavailable   the database cannot be reached (refused, socket missing, connection
                          lost, timed out); retrying later may help
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg
from sqlalchemy import exc as sa_exc

from domain.errors import Unavailable

__all__ = ["DatabaseUnavailable", "PersistenceError", "translate_errors"]


class PersistenceError(Exception):
    """Base of the errors this adapter raises on purpose."""


class DatabaseUnavailable(PersistenceError, Unavailable):
    retryable = True

    def __init__(self, message: str) -> None:
        Unavailable.__init__(self, message)


_UNREACHABLE = (
    OSError,  # refused, no such socket, host unreachable (asyncpg raises these unwrapped)
    asyncio.TimeoutError,
    asyncpg.exceptions.CannotConnectNowError,
    asyncpg.exceptions.TooManyConnectionsError,
    asyncpg.exceptions.ConnectionDoesNotExistError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.InternalClientError,  # a connection whose protocol state broke (e.g. the server ended it mid-call)
    asyncpg.exceptions.AdminShutdownError,  # the server ended the connection (restart, pg_terminate_backend)
)


@asynccontextmanager
async def translate_errors(what: str) -> AsyncIterator[None]:
    """Re-raise connectivity failures as ``DatabaseUnavailable``; let the rest through."""
    try:
        yield
    except _UNREACHABLE as exc:
        raise DatabaseUnavailable(f"database unavailable during {what}: {type(exc).__name__}") from exc
    except sa_exc.DBAPIError as exc:
        cause = exc.orig.__cause__ if exc.orig is not None else None
        if (
            exc.connection_invalidated
            or isinstance(exc, sa_exc.InterfaceError)
            or isinstance(cause, _UNREACHABLE)
        ):
            raise DatabaseUnavailable(
                f"database unavailable during {what}: {type(cause or exc).__name__}"
            ) from exc
        raise
    except sa_exc.TimeoutError as exc:  # pool checkout timed out
        raise DatabaseUnavailable(f"database unavailable during {what}: connection pool timed out") from exc
