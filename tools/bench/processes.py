"""Starting what a benchmark measures, each in a process of its own: embedded Postgres (migrated),
a private Redis, the provider simulator and the backend. ``Stack`` stops them all. The backend's
first start stores ``BENCH_KEY`` (LUMINA_BOOTSTRAP_API_KEY): clients send it as their bearer key."""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ["BENCH_KEY", "Stack", "rss_mib", "running_stack"]

_ROOT = Path(__file__).resolve().parents[2]
BENCH_KEY = f"lum_{secrets.token_hex(6)}_{secrets.token_urlsafe(24)}"  # this run's admin key


@dataclass
class Stack:
    sim_port: int
    sim_pid: int
    backend_pid: int
    grpc_port: int
    http_port: int
    database_url: str
    sibling_pids: tuple[int, ...] = ()  # further backend processes on the same ports (``backends`` > 1)

    @property
    def backend_pids(self) -> tuple[int, ...]:
        return (self.backend_pid, *self.sibling_pids)

    @property
    def sim_url(self) -> str:
        return f"http://127.0.0.1:{self.sim_port}/v1"

    @property
    def lumina_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/v1"


def rss_mib(pid: int) -> float:
    """Resident memory of ``pid`` in MiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _spawn(
    args: Sequence[str], ready: re.Pattern[str], what: str, timeout: float = 60.0, env: dict[str, str] | None = None,
    prefix: Sequence[str] = (),
) -> tuple[subprocess.Popen[str], re.Match[str]]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    proc = subprocess.Popen(
        [*prefix, sys.executable, *args], cwd=_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        match = ready.search(line)
        if match:
            # keep reading what it prints (logs): a full pipe would block the process mid-request
            threading.Thread(target=_drain, args=(proc.stdout,), name=f"drain-{proc.pid}", daemon=True).start()
            return proc, match
    proc.kill()
    raise RuntimeError(f"{what} did not start")


def _drain(stream: object) -> None:
    for _ in stream:  # type: ignore[attr-defined]
        pass


def _stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_stack(
    sim_args: Sequence[str] = (), backends: int = 1, *, backend_prefix: Sequence[str] = (), start_timeout: float = 60.0,
    backend_env: dict[str, str] | None = None,
) -> Iterator[Stack]:
    """Embedded Postgres in a temporary directory, the simulator (``sim_args``: its CLI options)
    and the backend on uvloop, all on loopback ports. ``backends`` > 1: that many backend processes
    share the ports through SO_REUSEPORT, as ``LUMINA_BACKEND_PROCESSES`` makes ``lumina up`` run them.
    ``backend_prefix``: a command the (first) backend runs under, e.g. valgrind."""
    from adapters.embedded.postgres import start_embedded_postgres
    from adapters.embedded.redis import ensure_redis
    from adapters.postgres.migrate import upgrade

    with tempfile.TemporaryDirectory(prefix="lumina-bench-") as tmp:
        pg = start_embedded_postgres(Path(tmp) / "pg")
        redis = ensure_redis(Path(tmp), port=0)  # a private one
        procs: list[subprocess.Popen[str]] = []
        try:
            upgrade(pg.url)
            sim, m = _spawn(
                ["-m", "tools.provider_sim", "--port", "0", *sim_args], re.compile(r"http://127\.0\.0\.1:(\d+)/v1"), "simulator"
            )
            procs.append(sim)
            sim_port = int(m.group(1))
            args = ["-m", "tools.bench.backend", "--database-url", pg.url, "--sim-port", str(sim_port),
                    "--redis-url", redis.url, "--processes", str(backends)]
            env = {"LUMINA_BOOTSTRAP_API_KEY": BENCH_KEY, **(backend_env or {})}
            ready = re.compile(r"ready (\d+) (\d+)")
            backend, m = _spawn(args, ready, "backend", start_timeout, env=env, prefix=backend_prefix)
            procs.append(backend)
            grpc_port, http_port = int(m.group(1)), int(m.group(2))
            siblings = []
            for _ in range(backends - 1):  # after the first: it ran the first start and seeded the registry
                sibling, _m = _spawn([*args, "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--sibling"],
                                     ready, "backend", env=env)
                procs.append(sibling)
                siblings.append(sibling.pid)
            yield Stack(sim_port, sim.pid, backend.pid, grpc_port, http_port, pg.url, tuple(siblings))
        finally:
            for proc in reversed(procs):
                _stop(proc)
            redis.stop()
            pg.stop()
