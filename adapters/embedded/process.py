"""A local infrastructure server that is either already running or started here as a child process.

``RunningService`` is the handle ``ensure_nats`` and ``ensure_redis`` return: ``url`` to connect
to, ``started`` (True when this process started it, so ``stop()`` has something to stop) and
``stop()``, which sends SIGTERM, waits, and kills after a timeout. Stopping a service that was
already running before is a no-op: we never stop what we did not start.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "EmbeddedServiceError",
    "RunningService",
    "find_binary",
    "free_port",
    "port_is_free",
    "read_greeting",
    "start_process",
    "wait_until",
]


class EmbeddedServiceError(RuntimeError):
    """A local service could not be found, started or reached; the message is one line."""


class RunningService:
    """A server reachable at ``url``; ``started`` tells whether this process owns it."""

    def __init__(self, name: str, url: str, *, process: subprocess.Popen[bytes] | None = None) -> None:
        self.name = name
        self.url = url
        self._process = process

    @property
    def started(self) -> bool:
        return self._process is not None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM the process this handle started, wait up to ``timeout`` s, then SIGKILL."""
        process = self._process
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)

    def __repr__(self) -> str:
        return f"RunningService({self.name!r}, {self.url!r}, started={self.started})"


def find_binary(name: str, *, hint: str, extra: Sequence[Path] = ()) -> Path:
    """The executable ``name``: next to the interpreter (PyPI wheels install binaries there), in
    the scheme's scripts dir, in ``extra``, or on PATH. Raises a one-line error naming it."""
    candidates = [Path(sys.executable).parent / name, Path(sysconfig.get_path("scripts")) / name, *extra]
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which(name)
    if found:
        return Path(found)
    raise EmbeddedServiceError(f"{name} binary not found ({hint})")


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when a server could listen on host:port now (connections in TIME_WAIT don't count,
    as servers bind with SO_REUSEADDR)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def start_process(name: str, argv: Sequence[str], *, log_path: Path) -> subprocess.Popen[bytes]:
    """Start ``argv`` with its output appended to ``log_path``, in its own process group."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        try:
            return subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except OSError as exc:
            raise EmbeddedServiceError(f"{name}: cannot start {argv[0]}: {exc.strerror or exc}") from exc


def wait_until(
    name: str,
    ready: Callable[[], bool],
    process: subprocess.Popen[bytes],
    *,
    log_path: Path,
    timeout: float = 20.0,
) -> None:
    """Poll ``ready`` until it is true; fail with the log's last line if the process exits or
    ``timeout`` passes (the process is then stopped)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise EmbeddedServiceError(
                f"{name} exited with code {process.returncode}: {_last_line(log_path)} (log: {log_path})"
            )
        if ready():
            return
        time.sleep(0.05)
    RunningService(name, "", process=process).stop(timeout=2)
    raise EmbeddedServiceError(f"{name} did not become ready within {timeout:.0f}s (log: {log_path})")


def read_greeting(port: int, *, send: bytes = b"", host: str = "127.0.0.1", timeout: float = 0.5) -> bytes:
    """Connect, optionally send ``send``, and return the first bytes the server answers (b'' when
    nothing answers)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            if send:
                sock.sendall(send)
            data = b""
            while b"\n" not in data and len(data) < 65536:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                data += chunk
            return data
    except OSError:
        return b""


def _last_line(path: Path) -> str:
    with contextlib.suppress(OSError):
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines() if line.strip()]
        if lines:
            return lines[-1][-300:]
    return "no output"
