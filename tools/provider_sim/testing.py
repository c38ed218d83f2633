"""Running the real simulator inside a test process.

``with running_simulator(tokens=32) as base_url:`` serves it on a free loopback port in a
background thread (its own uvloop event loop) and yields ``http://127.0.0.1:PORT/v1``.
``async with async_running_simulator(...)`` serves it on the caller's event loop instead.
Keywords are those of ``SimConfig.build``: the ``Knobs`` fields, ``api_key``, ``models``,
``strict_models``.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator

import msgspec

from tools.provider_sim.config import SimConfig
from tools.provider_sim.server import bind_socket, build_server
from tools.provider_sim.stats import StatsSnapshot

__all__ = ["async_running_simulator", "fetch_stats", "reset_stats", "running_simulator"]

_STARTUP_TIMEOUT = 10.0


def _base_url(host: str, port: int) -> str:
    return f"http://{host}:{port}/v1"


@contextlib.contextmanager
def running_simulator(*, host: str = "127.0.0.1", **config: object) -> Iterator[str]:
    sim_config = SimConfig.build(**config)  # type: ignore[arg-type]
    sock = bind_socket(host, 0)
    port = sock.getsockname()[1]
    server = build_server(sim_config)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            server.run(sockets=[sock])
        except BaseException as exc:  # noqa: BLE001 - reported to the caller below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"provider-sim-{port}", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not server.started:
            if failure or not thread.is_alive():
                raise RuntimeError(f"provider simulator failed to start: {failure[:1]!r}")
            if time.monotonic() > deadline:
                raise RuntimeError("provider simulator did not start in time")
            time.sleep(0.005)
        yield _base_url(host, port)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@contextlib.asynccontextmanager
async def async_running_simulator(*, host: str = "127.0.0.1", **config: object) -> AsyncIterator[str]:
    sim_config = SimConfig.build(**config)  # type: ignore[arg-type]
    sock = bind_socket(host, 0)
    port = sock.getsockname()[1]
    server = build_server(sim_config)
    task = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        deadline = time.monotonic() + _STARTUP_TIMEOUT
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("provider simulator stopped during startup")
            if time.monotonic() > deadline:
                raise RuntimeError("provider simulator did not start in time")
            await asyncio.sleep(0.005)
        yield _base_url(host, port)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await task
        sock.close()


def _root(base_url: str) -> str:
    return base_url.rstrip("/").removesuffix("/v1")


def fetch_stats(base_url: str) -> StatsSnapshot:
    """``GET /_sim/stats`` (blocking; call it through ``asyncio.to_thread`` from async code)."""
    with urllib.request.urlopen(_root(base_url) + "/_sim/stats", timeout=5) as resp:
        return msgspec.json.decode(resp.read(), type=StatsSnapshot)


def reset_stats(base_url: str) -> None:
    req = urllib.request.Request(_root(base_url) + "/_sim/reset", method="POST", data=b"")
    with urllib.request.urlopen(req, timeout=5) as resp:
        resp.read()
