"""Redis: the server already answering on 127.0.0.1:port, else Debian's ``redis-server`` started
as a child process without persistence (tests and `lumina up` only need it as a cache)."""

from __future__ import annotations

from pathlib import Path

from adapters.embedded.process import (
    EmbeddedServiceError,
    RunningService,
    find_binary,
    free_port,
    port_is_free,
    read_greeting,
    start_process,
    wait_until,
)

__all__ = ["ensure_redis", "redis_answers"]

_HOST = "127.0.0.1"
_DEBIAN_PATHS = (Path("/usr/bin/redis-server"), Path("/usr/sbin/redis-server"))


def redis_answers(port: int, host: str = _HOST) -> bool:
    """True when a Redis server answers PING on host:port (``-NOAUTH`` counts: it is Redis)."""
    reply = read_greeting(port, host=host, send=b"PING\r\n")
    return reply.startswith((b"+PONG", b"-NOAUTH"))


def ensure_redis(data_dir: Path, port: int = 6379) -> RunningService:
    """Use the Redis on 127.0.0.1:``port`` (``started=False``) or start ``redis-server``.

    The started server listens on ``port`` when it is free, else on a free port; ``port=0`` always
    starts a private server on a free port. It saves nothing to disk.
    """
    if port and redis_answers(port):
        return RunningService("redis", f"redis://{_HOST}:{port}/0")
    binary = find_binary("redis-server", hint="install the Debian package redis-server", extra=_DEBIAN_PATHS)
    listen = port if port and port_is_free(port) else free_port()
    workdir = Path(data_dir) / "redis"
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = Path(data_dir) / "redis.log"
    argv = [
        str(binary),
        "--bind", _HOST,
        "--port", str(listen),
        "--save", "",
        "--appendonly", "no",
        "--dir", str(workdir),
        "--daemonize", "no",
    ]  # fmt: skip
    process = start_process("redis-server", argv, log_path=log_path)
    try:
        wait_until("redis-server", lambda: redis_answers(listen), process, log_path=log_path)
    except EmbeddedServiceError:
        RunningService("redis", "", process=process).stop(timeout=2)
        raise
    return RunningService("redis", f"redis://{_HOST}:{listen}/0", process=process)
