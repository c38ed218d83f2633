"""The backend for benchmarks, in a process of its own on uvloop: ``python -m tools.bench.backend
--database-url URL --redis-url URL --sim-port P``. Runs the first start (the admin key from
LUMINA_BOOTSTRAP_API_KEY), then prints one line ``ready GRPC_PORT HTTP_PORT`` once it listens;
stops on SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import uvloop

from api.bootstrap import build_backend
from api.identity import first_start
from api.runtime import observability, tune_gc
from api.settings import load_settings

__all__ = ["main"]


async def _serve(args: argparse.Namespace) -> None:
    settings = load_settings(
        {}, database_url=args.database_url, redis_url=args.redis_url, sim_port=args.sim_port, tenant_id="bench",
        bootstrap_api_key=os.environ["LUMINA_BOOTSTRAP_API_KEY"],
        # LUMINA_BENCH_MEMORY=off: no long-term memory in the chat path (to measure the rest alone)
        memory_enabled=os.environ.get("LUMINA_BENCH_MEMORY", "on") != "off",
        backend_processes=args.processes,
        usage_commit=os.environ.get("LUMINA_USAGE_COMMIT", "durable"),
    )
    observability(settings, "lumina-backend")  # logging and tracing as `lumina serve` sets them up
    if not args.sibling:
        await first_start(settings, args.database_url)
    backend = build_backend(settings)
    await backend.start(grpc_port=args.grpc_port, http_port=args.http_port)
    tune_gc()  # as `lumina serve` does
    print(f"ready {backend.grpc_port} {backend.http_port}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
    finally:
        await backend.stop()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m tools.bench.backend")
    p.add_argument("--database-url", required=True)
    p.add_argument("--sim-port", type=int, required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--processes", type=int, default=1, help="backend processes sharing the ports (SO_REUSEPORT)")
    p.add_argument("--grpc-port", type=int, default=0)
    p.add_argument("--http-port", type=int, default=0)
    p.add_argument("--sibling", action="store_true", help="a further process: the first one ran the first start")
    uvloop.run(_serve(p.parse_args(argv)))


if __name__ == "__main__":
    main()
