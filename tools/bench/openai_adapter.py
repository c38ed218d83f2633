"""CPU time of ``OpenAIProvider.stream`` alone (or ``AnthropicProvider.stream`` with
``--anthropic``), over each HTTP transport, in one run: 16-token streams from the simulator (in a
process of its own) read to the end in a loop, sequentially and ``--concurrency`` at a time, on
uvloop.

    .venv/bin/python -m tools.bench.openai_adapter [--requests 2000] [--concurrency 64] [--rounds 3] [--anthropic]

Transports: ``aiohttp`` (the adapter's default, ``adapters.providers.transport``) and ``httpx2``
(the SDK's default httpcore2 transport, one pool). Rounds alternate between them so that whatever else the
machine does falls on both alike. Prints this process's CPU time per stream (from
``time.process_time``: the adapter, the openai SDK and the HTTP client, without the gateway
around them), the wall time per stream, and the ratio of CPU times.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from collections.abc import Callable

import anthropic
import openai
import uvloop

from adapters.providers.anthropic import AnthropicProvider
from adapters.providers.openai import OpenAIProvider
from domain.chat import ChatMessage, ChatRequest, Role
from tools.bench.processes import _spawn, _stop

__all__ = ["main"]

_REQUEST = ChatRequest(messages=(ChatMessage(Role.USER, "Say hello."),))
_WARM_UP = 50

Provider = OpenAIProvider | AnthropicProvider


def _openai(base_url: str, transport: str) -> Provider:
    client = openai.DefaultAsyncHttpxClient() if transport == "httpx2" else None  # None: the provider's default
    return OpenAIProvider("sim", api_key="sim-key", base_url=base_url, http_client=client)


def _anthropic(base_url: str, transport: str) -> Provider:
    provider = AnthropicProvider("sim", api_key="sim-key", base_url=base_url)
    if transport == "httpx2":  # the SDK's own client and transport, same settings otherwise
        provider._client = provider._client.with_options(http_client=anthropic.DefaultAsyncHttpxClient())
    return provider


KINDS: dict[str, tuple[Callable[[str, str], Provider], str]] = {
    "openai": (_openai, "sim-small"),
    "anthropic": (_anthropic, "claude-haiku-4-5"),
}
TRANSPORTS = ("aiohttp", "httpx2")


async def _round(provider: Provider, model: str, requests: int, concurrency: int) -> tuple[float, float, int]:
    """(CPU seconds, wall seconds, streams)."""

    async def one() -> None:
        async for _ in provider.stream(model, _REQUEST):
            pass

    rounds = max(1, requests // concurrency)
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(rounds):
        await asyncio.gather(*(one() for _ in range(concurrency)))
    return time.process_time() - cpu, time.perf_counter() - wall, rounds * concurrency


async def _measure(kind: str, base_url: str, requests: int, concurrencies: tuple[int, ...], rounds: int) -> None:
    make, model = KINDS[kind]
    providers = {name: make(base_url, name) for name in TRANSPORTS}
    try:
        for provider in providers.values():
            for concurrency in concurrencies:
                await _round(provider, model, _WARM_UP * concurrency, concurrency)
        for concurrency in concurrencies:
            totals = {name: [0.0, 0.0, 0] for name in providers}
            for _ in range(rounds):
                for name, provider in providers.items():
                    cpu, wall, n = await _round(provider, model, requests // rounds, concurrency)
                    totals[name][0] += cpu
                    totals[name][1] += wall
                    totals[name][2] += n
            per = {name: (c / n * 1000, w / n * 1000) for name, (c, w, n) in totals.items()}
            for name, (cpu_ms, wall_ms) in per.items():
                print(f"{kind} concurrency {concurrency:3d}  {name:8s} adapter CPU {cpu_ms:.3f} ms/stream, wall {wall_ms:.3f} ms/stream")
            print(f"{kind} concurrency {concurrency:3d}  CPU aiohttp / httpx2 = {per['aiohttp'][0] / per['httpx2'][0]:.2f}")
    finally:
        for provider in providers.values():
            await provider.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tools.bench.openai_adapter")
    parser.add_argument("--requests", type=int, default=2000, help="streams per transport and concurrency")
    parser.add_argument("--concurrency", type=int, default=64, help="streams in flight in the concurrent run")
    parser.add_argument("--rounds", type=int, default=3, help="alternations between the transports")
    parser.add_argument("--anthropic", action="store_true", help="AnthropicProvider instead of OpenAIProvider")
    args = parser.parse_args()
    sim, match = _spawn(["-m", "tools.provider_sim", "--port", "0"], re.compile(r"(http://127\.0\.0\.1:\d+/v1)"), "simulator")
    try:
        kind = "anthropic" if args.anthropic else "openai"
        uvloop.run(_measure(kind, match.group(1), args.requests, (1, args.concurrency), args.rounds))
    finally:
        _stop(sim)


if __name__ == "__main__":
    main()
