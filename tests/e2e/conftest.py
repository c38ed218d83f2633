"""A NATS server of the e2e tests' own: the platform creates its `lumina.>` stream there, which
would overlap the per-test streams that integration tests create on the session's server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from adapters.embedded.nats import ensure_nats


@pytest.fixture(scope="session")
def platform_nats_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    service = ensure_nats(Path(tmp_path_factory.mktemp("platform-nats")), port=0)
    try:
        yield service.url
    finally:
        service.stop()
