"""The test harness's refusal paths, which must work without any service (and without Docker)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from adapters.embedded.process import EmbeddedServiceError, find_binary
from tests.harness.services import DockerUnavailable, TestServices, require_docker

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def dead_docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    socket = tmp_path / "no-docker.sock"
    monkeypatch.setenv("DOCKER_HOST", f"unix://{socket}")
    return str(socket)


def test_require_docker_names_the_setting_and_the_dead_socket(dead_docker: str) -> None:
    started = time.monotonic()
    with pytest.raises(DockerUnavailable) as caught:
        require_docker()
    message = str(caught.value)
    assert "LUMINA_TESTCONTAINERS=1" in message
    assert "no Docker engine answers" in message
    assert dead_docker in message
    assert "\n" not in message
    assert time.monotonic() - started < 10


def test_testcontainers_mode_never_falls_back_to_embedded_services(dead_docker: str, tmp_path: Path) -> None:
    services = TestServices({"LUMINA_TESTCONTAINERS": "1"}, work_dir=tmp_path)
    assert services.use_containers
    for service in ("nats_url", "redis_url", "postgres"):
        with pytest.raises(DockerUnavailable, match="no Docker engine answers"):
            getattr(services, service)
    assert services.started == []
    services.stop()


def test_a_test_session_in_testcontainers_mode_without_docker_exits_with_a_usage_error(
    dead_docker: str, tmp_path: Path
) -> None:
    probe = tmp_path / "test_probe.py"
    probe.write_text("def test_needs_nats(nats_url):\n    assert nats_url\n")
    env = {**os.environ, "LUMINA_TESTCONTAINERS": "1", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "tests.conftest", "-p", "no:cacheprovider", str(probe)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, output[-2000:]
    assert "LUMINA_TESTCONTAINERS=1 but no Docker engine answers" in output


def test_a_missing_binary_is_one_clear_line() -> None:
    with pytest.raises(EmbeddedServiceError) as caught:
        find_binary("lumina-no-such-server", hint="install the package that ships it")
    assert str(caught.value) == "lumina-no-such-server binary not found (install the package that ships it)"
