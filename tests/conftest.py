"""Root fixtures. Services start lazily: a test that asks for none (every unit test) starts nothing.

Session fixtures: ``services`` (tests.harness.services.TestServices), ``database_url`` (a fresh
database for this session, migrated to head), ``nats_url``, ``redis_url``, ``js_stream_prefix``.
Function fixtures: ``empty_database_url`` (a fresh empty database, dropped afterwards) and
``js_names`` (a stream name and tenant of the test's own on the shared NATS; its streams are
deleted afterwards).

Async tests need pytest-asyncio in auto mode (``asyncio_mode = "auto"`` in pyproject, or
``-o asyncio_mode=auto``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.harness.jetstream import JetStreamNames
    from tests.harness.services import TestServices


def _harness_failure(exc: Exception) -> None:
    """Turn a harness error into one clear line: the whole run stops when the developer asked for
    testcontainers and there is no Docker; otherwise the tests that needed the service fail."""
    from tests.harness.services import DockerUnavailable, HarnessError

    if not isinstance(exc, HarnessError):
        raise exc
    if isinstance(exc, DockerUnavailable):
        pytest.exit(str(exc), returncode=pytest.ExitCode.USAGE_ERROR)
    pytest.fail(str(exc), pytrace=False)


@pytest.fixture(scope="session")
def services() -> Iterator[TestServices]:
    from tests.harness.services import HarnessError, TestServices, require_docker

    harness = TestServices()
    if harness.use_containers:
        try:
            require_docker()
        except HarnessError as exc:
            _harness_failure(exc)
    try:
        yield harness
    finally:
        harness.stop()


@pytest.fixture(scope="session")
def database_url(services: TestServices) -> str:
    from adapters.postgres.migrate import upgrade

    try:
        url = services.create_database("lumina_t")
    except Exception as exc:
        _harness_failure(exc)
        raise
    upgrade(url)
    return url


@pytest.fixture
def empty_database_url(services: TestServices) -> Iterator[str]:
    try:
        url = services.create_database("lumina_e")
    except Exception as exc:
        _harness_failure(exc)
        raise
    yield url
    services.drop_database(url)


@pytest.fixture(scope="session")
def nats_url(services: TestServices) -> str:
    try:
        return services.nats_url
    except Exception as exc:
        _harness_failure(exc)
        raise


@pytest.fixture(scope="session")
def redis_url(services: TestServices) -> str:
    try:
        return services.redis_url
    except Exception as exc:
        _harness_failure(exc)
        raise


@pytest.fixture(scope="session")
def js_stream_prefix() -> str:
    from tests.harness.jetstream import new_run_prefix

    return new_run_prefix()


@pytest.fixture
def js_names(nats_url: str, js_stream_prefix: str, request: pytest.FixtureRequest) -> Iterator[JetStreamNames]:
    from tests.harness.jetstream import JetStreamNames, delete_streams

    names = JetStreamNames(prefix=f"{js_stream_prefix}_{_short(request.node.name)}_{uuid.uuid4().hex[:4].upper()}")
    yield names
    delete_streams(nats_url, names.created)


def _short(test_name: str) -> str:
    cleaned = "".join(ch if ch.isalnum() else "_" for ch in test_name)
    return cleaned[:20].upper().strip("_") or "T"
