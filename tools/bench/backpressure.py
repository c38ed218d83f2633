"""Backpressure, end to end: a 100k-token answer streamed from the simulator (one token per chunk)
through Lumina's gRPC edge to a client that reads 10 chunks/s. Prints, every second, the backend's
resident memory and how many chunks the simulator has sent: both level off while the client
lags, because the backend stops reading the provider once its bounded buffer is full.

    .venv/bin/python -m tools.bench.backpressure [--seconds 20] [--rate 10]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import urllib.request

import grpc
import msgspec

from tools.bench.processes import BENCH_KEY, Stack, rss_mib, running_stack

__all__ = ["main"]

TOKENS = 100_000


def _sim_chunks(stack: Stack) -> int:
    with urllib.request.urlopen(f"http://127.0.0.1:{stack.sim_port}/_sim/stats", timeout=5) as resp:
        return int(msgspec.json.decode(resp.read()).get("chunks_sent", -1))


async def _run(stack: Stack, seconds: float, rate: float) -> list[tuple[float, float, int, int]]:
    from lumina.v1 import chat_pb2 as pb
    from lumina.v1 import chat_pb2_grpc

    rows: list[tuple[float, float, int, int]] = []
    request = pb.StreamCompleteRequest(
        parameters=pb.ChatParameters(model="sim-small", messages=[pb.ChatMessage(role=pb.ROLE_USER, content="a long story")])
    )
    # a fixed HTTP/2 window on the client (no BDP auto-tuning): a tuning client would buffer
    # bursts in its own memory, which says nothing about the backend's
    options = [("grpc.http2.bdp_probe", 0)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{stack.grpc_port}", options=options) as channel:
        call = chat_pb2_grpc.ChatServiceStub(channel).StreamComplete(
            request, metadata=(("authorization", f"Bearer {BENCH_KEY}"),)
        )
        started = time.monotonic()
        read = 0
        next_report = started
        while (now := time.monotonic()) - started < seconds:
            if now >= next_report:
                sent = await asyncio.to_thread(_sim_chunks, stack)
                rows.append((now - started, rss_mib(stack.backend_pid), sent, read))
                print(f"{now - started:5.1f} s  backend RSS {rows[-1][1]:7.1f} MiB  "
                      f"simulator sent {sent:6d} chunks  client read {read:4d}", flush=True)
                next_report += 1.0
            await call.read()
            read += 1
            await asyncio.sleep(1 / rate)
        call.cancel()
    return rows


def _still_runs(sent: list[int]) -> list[tuple[int, int]]:
    """(start, end) sample indexes of stretches where the simulator sent nothing more."""
    runs, start = [], 0
    for i in range(1, len(sent) + 1):
        if i == len(sent) or sent[i] != sent[start]:
            runs.append((start, i - 1))
            start = i
    return runs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.backpressure")
    p.add_argument("--seconds", type=float, default=20.0)
    p.add_argument("--rate", type=float, default=10.0, help="chunks the client reads per second")
    args = p.parse_args(argv)
    with running_stack(["--tokens", str(TOKENS), "--chunks", str(TOKENS)]) as stack:
        rows = asyncio.run(_run(stack, args.seconds, args.rate))
    if len(rows) < 4:
        print("too short a run to judge")
        return 1
    settled = rows[2:]
    rss = [r[1] for r in settled]
    sent = [r[2] for r in settled]
    growth = max(rss) - min(rss)
    print(f"\nafter the first 2 s: RSS {min(rss):.1f}..{max(rss):.1f} MiB (spread {growth:.1f} MiB); "
          f"simulator sent {sent[0]}..{sent[-1]} of {TOKENS + 2} chunks")
    paused = max((b - a for a, b in _still_runs(sent)), default=0)
    print(f"longest stretch with the upstream read paused: {paused} s")
    flat = growth < 8 and paused >= 3
    print("backpressure holds: memory flat, upstream paused" if flat else "BACKPRESSURE FAILED")
    return 0 if flat else 1


if __name__ == "__main__":
    raise SystemExit(main())
