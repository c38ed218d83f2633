"""Engine construction. The composition root creates one engine per process and disposes it."""

from __future__ import annotations

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from adapters.postgres.mappers import start_mappers

__all__ = ["async_url", "create_engine", "start_mappers"]


def async_url(url: str) -> str:
    """``postgres://``/``postgresql://``/``postgresql+psycopg://`` -> ``postgresql+asyncpg://``."""
    parsed = make_url(url)
    if parsed.get_backend_name() not in ("postgresql", "postgres"):
        raise ValueError(f"not a PostgreSQL URL: {parsed.render_as_string(hide_password=True)}")
    return parsed.set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def create_engine(url: str, pool_size: int = 10, *, pre_ping: bool = True) -> AsyncEngine:
    """An asyncpg-backed engine (no connection is made until first use); maps the entities.

    ``pre_ping``: every checkout first checks its connection (one round trip), so a connection the
    server dropped (a restart) is replaced before use. Without it, such a connection fails the one
    statement that meets it and is replaced then: for hot reads whose failure is tolerated."""
    start_mappers()
    return create_async_engine(
        async_url(url),
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_pre_ping=pre_ping,
        pool_timeout=10,
    )
