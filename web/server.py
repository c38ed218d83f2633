"""Running the console: ``serve()`` for ``lumina web``; ``running_console()`` for tests and tools.

The listening socket is bound before uvicorn starts, so a busy port is one clear ``ServeError``
("port 8080 on 127.0.0.1 is already in use") instead of a uvicorn log and exit.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

import uvicorn

from web.app import create_app
from web.proxies import DEFAULT_TRUSTED_PROXIES
from web.telemetry import configure_tracing

__all__ = ["ServeError", "bind_socket", "running_console", "serve"]


class ServeError(OSError):
    """The console cannot start; the message is one line meant for the operator.

    An ``OSError``, so ``lumina``'s CLI prints it as one line like its other start-up failures.
    """


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise ServeError(
                f"port {port} on {host} is already in use: stop the other process or choose another port"
            ) from None
        raise ServeError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def _server(
    backend_target: str,
    log_level: str,
    grpc_metadata: Mapping[str, str] | None,
    secret: bytes | None = None,
    secure_cookies: bool = False,
    public_url: str | None = None,
    trusted_proxies: str = DEFAULT_TRUSTED_PROXIES,
) -> uvicorn.Server:
    try:
        app = create_app(backend_target, grpc_metadata=grpc_metadata, secret=secret, secure_cookies=secure_cookies,
                         public_url=public_url, trusted_proxies=trusted_proxies)
    except (ValueError, RuntimeError) as exc:
        raise ServeError(str(exc)) from None
    config = uvicorn.Config(
        app,
        log_level=log_level,
        lifespan="on",
        timeout_graceful_shutdown=3,
        proxy_headers=False,
        server_header=False,
    )
    return uvicorn.Server(config)


def serve(
    host: str,
    port: int,
    backend_target: str,
    *,
    log_level: str = "info",
    grpc_metadata: Mapping[str, str] | None = None,
    secret: bytes | None = None,
    secure_cookies: bool = False,
    public_url: str | None = None,
    trusted_proxies: str = DEFAULT_TRUSTED_PROXIES,
) -> None:
    """Serve the console on ``host:port`` until interrupted; raises ``ServeError`` if it cannot start.

    ``secret`` signs CSRF tokens (random per process when None); ``secure_cookies``: the console is
    served over TLS (by a proxy in front of it), so cookies are Secure. ``public_url`` and
    ``trusted_proxies``: see ``web.app.create_app``."""
    configure_tracing()
    server = _server(backend_target, log_level, grpc_metadata, secret, secure_cookies, public_url, trusted_proxies)
    sock = bind_socket(host, port)
    shown = f"[{host}]" if ":" in host else host
    logging.getLogger("uvicorn.error").info("Lumina console on http://%s:%d (backend %s)", shown, port, backend_target)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


@asynccontextmanager
async def running_console(
    backend_target: str,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    log_level: str = "warning",
    grpc_metadata: Mapping[str, str] | None = None,
    secret: bytes | None = None,
    secure_cookies: bool = False,
    url_host: str | None = None,
    trusted_proxies: str = DEFAULT_TRUSTED_PROXIES,
) -> AsyncIterator[str]:
    """Run the console in the current event loop; yields its base URL (``http://host:port``, or
    ``url_host`` in place of ``host``, e.g. ``localhost`` for WebAuthn's relying party id), which
    is also its public URL (OIDC's redirect URI is ``<url>/oidc/callback``)."""
    configure_tracing()
    sock = bind_socket(host, port)
    bound_port = sock.getsockname()[1]
    url = f"http://{url_host or host}:{bound_port}"
    try:
        server = _server(backend_target, log_level, grpc_metadata, secret, secure_cookies, url, trusted_proxies)
    except BaseException:
        sock.close()
        raise
    server.config.timeout_graceful_shutdown = 1
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            if task.done():
                task.result()
                raise ServeError("the console stopped while starting")
            await asyncio.sleep(0.02)
        yield url
    finally:
        server.should_exit = True
        await task
        sock.close()
