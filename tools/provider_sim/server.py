"""Serving the simulator with uvicorn (httptools + uvloop), TCP_NODELAY on every connection."""

from __future__ import annotations

import asyncio
import contextlib
import errno
import signal
import socket
import threading
from collections.abc import Generator

import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from tools.provider_sim.app import SimulatorApp
from tools.provider_sim.config import SimConfig
from tools.provider_sim.stats import Stats

__all__ = ["PortInUse", "SimServer", "bind_socket", "build_server", "nodelay_protocol"]


class PortInUse(OSError):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(errno.EADDRINUSE, f"cannot listen on {host}:{port}: address already in use")
        self.host = host
        self.port = port


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound, listening TCP socket (``port=0`` picks a free one). Raises ``PortInUse``."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise PortInUse(host, port) from exc
        raise
    sock.set_inheritable(True)
    return sock


def nodelay_protocol(stats: Stats) -> type[HttpToolsProtocol]:
    """uvicorn's httptools protocol, setting TCP_NODELAY on each accepted socket (without it,
    keep-alive requests can wait ~40 ms on delayed ACKs) and counting the sockets where
    ``getsockopt`` confirms it."""

    class NoDelayHttpToolsProtocol(HttpToolsProtocol):
        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            stats.connections += 1
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    if sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY):
                        stats.connections_nodelay += 1
            super().connection_made(transport)

    return NoDelayHttpToolsProtocol


class SimServer(uvicorn.Server):
    """A uvicorn server that, in the main thread, stops on SIGINT/SIGTERM and returns normally
    (uvicorn re-raises the signal after shutdown, which would end the process with a traceback
    or a signal status)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        originals = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in originals.items():
                signal.signal(sig, handler)


def build_server(config: SimConfig, *, stats: Stats | None = None, log_level: str = "warning") -> SimServer:
    """A server for ``SimulatorApp(config)``; start it with ``server.serve(sockets=[bind_socket(...)])``.
    The app is ``server.config.app``."""
    stats = stats or Stats()
    app = SimulatorApp(config, stats)
    uv_config = uvicorn.Config(
        app,
        http=nodelay_protocol(stats),
        loop="uvloop",
        interface="asgi3",
        lifespan="off",
        log_config=None,
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=75,
        timeout_graceful_shutdown=2,
    )
    return SimServer(uv_config)
