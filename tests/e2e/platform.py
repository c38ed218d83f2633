"""Running `lumina up` as a real subprocess for end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import queue
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Platform:
    process: subprocess.Popen[str]
    data_dir: Path
    env: dict[str, str]
    grpc_port: int
    http_port: int
    web_port: int
    sim_port: int
    tenant: str
    lines: list[str] = field(default_factory=list)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def console_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}/v1"

    @property
    def api_key(self) -> str:
        """The administrator's key, stored by the first start from LUMINA_BOOTSTRAP_API_KEY."""
        return self.env["LUMINA_BOOTSTRAP_API_KEY"]

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.api_key}"),)

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.api_key}"}

    def log(self, name: str) -> str:
        path = self.data_dir / "logs" / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""


def _free_ports(n: int) -> list[str]:
    """``n`` different free loopback ports (all bound at once while they are chosen)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(n)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [str(sock.getsockname()[1]) for sock in socks]


def platform_env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LUMINA_", "OPENAI_"))}
    env.update(
        LUMINA_DATA_DIR=str(data_dir),
        **dict(zip(("LUMINA_GRPC_PORT", "LUMINA_HTTP_PORT", "LUMINA_WEB_PORT", "LUMINA_SIM_PORT"), _free_ports(4), strict=True)),
        # scripts and CI call a fresh platform at once with this key (the first start stores it)
        LUMINA_BOOTSTRAP_API_KEY=f"lum_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


def _pump(stream, sink: queue.Queue[str]) -> None:  # type: ignore[no-untyped-def]
    for line in stream:
        sink.put(line.rstrip("\n"))
    sink.put("\0eof")


@contextmanager
def lumina_up(env: dict[str, str], *, timeout: float = 120) -> Iterator[Platform]:
    """Start `lumina up`, wait for `lumina is ready`, yield; stop it with SIGINT afterwards."""
    process = subprocess.Popen(  # noqa: S603
        [sys.executable, "-m", "api.cli", "up"], cwd=ROOT, env=env, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
    )
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=_pump, args=(process.stdout, lines), daemon=True).start()
    platform = Platform(
        process=process, data_dir=Path(env["LUMINA_DATA_DIR"]), env=env,
        grpc_port=int(env["LUMINA_GRPC_PORT"]), http_port=int(env["LUMINA_HTTP_PORT"]),
        web_port=int(env["LUMINA_WEB_PORT"]), sim_port=int(env["LUMINA_SIM_PORT"]),
        tenant=env.get("LUMINA_TENANT_ID", "default"),
    )
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                line = lines.get(timeout=max(deadline - time.monotonic(), 0.01))
            except queue.Empty:
                raise AssertionError(f"lumina up not ready in {timeout}s:\n" + "\n".join(platform.lines)) from None
            if line == "\0eof":
                raise AssertionError(f"lumina up exited ({process.wait()}):\n" + "\n".join(platform.lines))
            platform.lines.append(line)
            if line.startswith("lumina is ready"):
                break
        yield platform
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(5)
        while True:
            try:
                line = lines.get(timeout=2)
            except queue.Empty:
                break
            if line == "\0eof":
                break
            platform.lines.append(line)
