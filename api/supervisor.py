"""`lumina up`: the whole platform on one machine.

Starts, in order: embedded Postgres with pgvector (unless LUMINA_DATABASE_URL is set), NATS with
JetStream (the server on 127.0.0.1:4222 when one answers, else the nats-server binary), Redis (the
one on 127.0.0.1:6379, else redis-server; unless LUMINA_REDIS_URL is set), migrations, the first
start (default tenant, its administrator, LUMINA_BOOTSTRAP_API_KEY; `lumina first-start`), then the
child processes — the provider simulator (when no vendor key is set), the backend, the
worker and the web console — waits until each is ready, prints one line per URL and
``lumina is ready``. SIGINT/SIGTERM (or any child dying) stops every child, then the services it
started. Data lives under LUMINA_DATA_DIR, so a second start reuses it.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from adapters.embedded.nats import ensure_nats
from adapters.embedded.postgres import start_embedded_postgres
from adapters.embedded.process import EmbeddedServiceError, RunningService, port_is_free
from adapters.embedded.redis import ensure_redis
from api.settings import Settings

__all__ = ["StartupError", "up"]


class StartupError(Exception):
    """One line for the user; ``lumina up`` prints it and exits 1."""


@dataclass
class Child:
    name: str
    process: subprocess.Popen[bytes]
    log: Path


def _say(line: str) -> None:
    print(line, flush=True)


def _http_ok(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:  # noqa: S310 - loopback URL we built
                return bool(response.status == 200)
        except OSError:
            return False

    return check


def _logged(path: Path, text: str) -> Callable[[], bool]:
    """True once ``text`` appears in the log after its present end (logs are appended to across runs)."""
    try:
        start = path.stat().st_size
    except OSError:
        start = 0

    def check() -> bool:
        try:
            with path.open("rb") as log:
                log.seek(start)
                return text.encode() in log.read()
        except OSError:
            return False

    return check


def _grpc_serving(target: str) -> Callable[[], bool]:
    def check() -> bool:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        try:
            with grpc.insecure_channel(target) as channel:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)
        except grpc.RpcError:
            return False

    return check


def _check_ports(settings: Settings, simulated: bool) -> None:
    wanted = [("gRPC", settings.grpc_port, "LUMINA_GRPC_PORT"), ("HTTP", settings.http_port, "LUMINA_HTTP_PORT"),
              ("web console", settings.web_port, "LUMINA_WEB_PORT")]
    if simulated:
        wanted.append(("provider simulator", settings.sim_port, "LUMINA_SIM_PORT"))
    for what, port, env in wanted:
        if not port_is_free(port, settings.host):
            raise StartupError(f"{what} port {port} on {settings.host} is busy (set {env} to another port)")


def up(settings: Settings) -> int:
    data = settings.data_path
    data.mkdir(parents=True, exist_ok=True)
    logs = data / "logs"
    simulated = not settings.vendor_keys

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())

    services: list[RunningService] = []
    children: list[Child] = []
    pg = None
    env = dict(os.environ)
    try:
        t0 = time.monotonic()
        _check_ports(settings, simulated)
        if settings.database_url:
            database_url = settings.database_url
        else:
            _say(f"starting embedded Postgres + pgvector in {data / 'postgres'} ...")
            pg = start_embedded_postgres(data / "postgres", database="lumina")
            database_url = pg.url
        if settings.nats_url:
            nats_url = settings.nats_url
        else:
            nats = ensure_nats(data, port=4222)
            services.append(nats)
            nats_url = nats.url
            _say(f"NATS JetStream: {nats_url} ({'started' if nats.started else 'already running'})")
        if settings.redis_url:
            redis_url = settings.redis_url
        else:
            redis = ensure_redis(data, port=6379)
            services.append(redis)
            redis_url = redis.url
            _say(f"Redis:       {redis_url} ({'started' if redis.started else 'already running'})")
        env.update(LUMINA_DATABASE_URL=database_url, LUMINA_NATS_URL=nats_url, LUMINA_REDIS_URL=redis_url,
                   LUMINA_DATA_DIR=str(data))
        _say("migrating the database ...")
        # in a child process, so the supervisor itself stays small (no SQLAlchemy/alembic loaded)
        migrated = subprocess.run([sys.executable, "-m", "api.cli", "migrate"], env=env, capture_output=True, text=True)
        if migrated.returncode != 0:
            raise StartupError(f"migration failed: {_last(migrated.stderr or migrated.stdout)}")
        first = subprocess.run([sys.executable, "-m", "api.cli", "first-start"], env=env, capture_output=True, text=True)
        if first.returncode != 0:
            raise StartupError(f"first start failed: {_last(first.stderr or first.stdout)}")
        admin_lines = [ln for ln in first.stdout.splitlines() if ln.strip()]

        def spawn(name: str, argv: list[str]) -> Child:
            log_path = logs / f"{name}.log"
            process = subprocess.Popen(  # noqa: S603
                argv, stdin=subprocess.DEVNULL, stdout=open(log_path, "ab"), stderr=subprocess.STDOUT,  # noqa: SIM115
                env=env, start_new_session=True,
            )
            child = Child(name, process, log_path)
            children.append(child)
            return child

        logs.mkdir(parents=True, exist_ok=True)
        py = sys.executable
        host = settings.host
        checks: list[tuple[Child, Callable[[], bool]]] = []
        if simulated:
            sim = spawn("provider-sim", [py, "-m", "tools.provider_sim", "--host", host, "--port", str(settings.sim_port)])
            checks.append((sim, _http_ok(f"http://{host}:{settings.sim_port}/_sim/stats")))
        backend = spawn("backend", [py, "-m", "api.cli", "serve"])
        checks.append((backend, _http_ok(f"http://{host}:{settings.http_port}/readyz")))
        checks.append((backend, _grpc_serving(f"{host}:{settings.grpc_port}")))
        for child, check in checks:  # the first backend seeds the registry before its siblings start
            _wait_ready(child, check, stop, children)
        checks.clear()
        for n in range(2, settings.backend_processes + 1):  # siblings on the same ports (SO_REUSEPORT)
            sibling_log = logs / f"backend-{n}.log"
            listening = _logged(sibling_log, "backend listening")
            checks.append((spawn(f"backend-{n}", [py, "-m", "api.cli", "serve"]), listening))
        spawn("worker", [py, "-m", "api.cli", "worker"])
        web = spawn("web", [py, "-m", "api.cli", "web"])
        checks.append((web, _http_ok(f"http://{host}:{settings.web_port}/healthz")))
        for child, check in checks:
            _wait_ready(child, check, stop, children)
        time.sleep(0.3)
        _assert_alive(children)
        _say(f"gRPC:        {host}:{settings.grpc_port}  (lumina.v1.ChatService, AuthService, health, reflection)")
        _say(f"REST:        http://{host}:{settings.http_port}  (/v1/chat/completions, /v1/auth, /healthz, /readyz, /metrics)")
        if settings.backend_processes > 1:
            _say(f"backend:     {settings.backend_processes} processes sharing both ports")
        _say(f"console:     http://{host}:{settings.web_port}/chat")
        if simulated:
            _say(f"provider:    simulated (tools/provider_sim on http://{host}:{settings.sim_port}/v1); set OPENAI_API_KEY for real ones")
        for line in admin_lines:
            _say(line)
        _say(f"data:        {data}  (logs in {logs})")
        _say(f"lumina is ready ({time.monotonic() - t0:.1f}s)")

        while not stop.is_set():
            for child in children:
                if child.process.poll() is not None:
                    raise StartupError(f"{child.name} exited with code {child.process.returncode}: {_tail(child.log)}")
            stop.wait(0.5)
        _say("stopping ...")
        return 0
    except (StartupError, EmbeddedServiceError, OSError) as exc:
        _say(f"lumina: {exc}")
        return 1
    finally:
        _stop_children(children)
        for service in reversed(services):
            service.stop()
        if pg is not None:
            pg.stop()
        if stop.is_set():
            _say("lumina stopped")


def _wait_ready(child: Child, check: Callable[[], bool], stop: threading.Event, children: list[Child], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if stop.is_set():
            raise StartupError("interrupted during start-up")
        _assert_alive(children)
        if check():
            return
        time.sleep(0.1)
    raise StartupError(f"{child.name} did not become ready within {timeout:.0f}s (log: {child.log})")


def _assert_alive(children: list[Child]) -> None:
    for c in children:
        if c.process.poll() is not None:
            raise StartupError(f"{c.name} exited with code {c.process.returncode}: {_tail(c.log)} (log: {c.log})")


def _last(text: str) -> str:
    lines = [ln for ln in text.splitlines() if ln.strip()]
    return lines[-1][-400:] if lines else "no output"


def _tail(path: Path) -> str:
    try:
        lines = [ln for ln in path.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no output"
    return lines[-1][-400:] if lines else "no output"


def _stop_children(children: list[Child]) -> None:
    for child in reversed(children):
        if child.process.poll() is None:
            child.process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + 15
    for child in children:
        try:
            child.process.wait(max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            child.process.kill()
            child.process.wait(5)



