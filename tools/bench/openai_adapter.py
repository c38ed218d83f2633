"""CPU time of ``OpenAIProvider.stream`` alone: 16-token streams from the simulator (in a process of
its own) read to the end in a loop, sequentially and ``--concurrency`` at a time, on uvloop.

    .venv/bin/python -m tools.bench.openai_adapter [--requests 2000] [--concurrency 64]

Prints this process's CPU time per stream (from ``time.process_time``): the adapter, the openai SDK
and the HTTP client, without the gateway around them.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time

import uvloop

from adapters.providers.openai import OpenAIProvider
from domain.chat import ChatMessage, ChatRequest, Role
from tools.bench.processes import _spawn, _stop

__all__ = ["main"]

_REQUEST = ChatRequest(messages=(ChatMessage(Role.USER, "Say hello."),))
_WARM_UP = 50


async def _measure(base_url: str, requests: int, concurrency: int) -> tuple[float, float]:
    """(CPU ms per stream, wall ms per stream)."""
    provider = OpenAIProvider("sim", api_key="sim-key", base_url=base_url)

    async def one() -> None:
        async for _ in provider.stream("sim-small", _REQUEST):
            pass

    try:
        for _ in range(_WARM_UP):
            await one()
        rounds = max(1, requests // concurrency)
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            await asyncio.gather(*(one() for _ in range(concurrency)))
        n = rounds * concurrency
        return (time.process_time() - cpu) / n * 1000, (time.perf_counter() - wall) / n * 1000
    finally:
        await provider.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.openai_adapter")
    parser.add_argument("--requests", type=int, default=2000, help="streams per run")
    parser.add_argument("--concurrency", type=int, default=64, help="streams in flight in the concurrent run")
    args = parser.parse_args()
    sim, match = _spawn(["-m", "tools.provider_sim", "--port", "0"], re.compile(r"(http://127\.0\.0\.1:\d+/v1)"), "simulator")
    try:
        for concurrency in (1, args.concurrency):
            cpu, wall = uvloop.run(_measure(match.group(1), args.requests, concurrency))
            print(f"concurrency {concurrency:3d}: adapter CPU {cpu:.3f} ms/stream, wall {wall:.3f} ms/stream")
    finally:
        _stop(sim)


if __name__ == "__main__":
    main()
