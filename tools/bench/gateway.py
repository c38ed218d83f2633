"""Lumina's added latency and throughput: the same load through Lumina's OpenAI edge
(``/v1/chat/completions``) and straight to the simulator, in one run, on one machine.

    .venv/bin/python -m tools.bench.gateway [--requests 2000] [--seconds 8] [--no-limits] [--backends N] [--usage-commit durable|fast]

Starts embedded Postgres (temporary directory, migrated), the simulator and the backend (uvloop),
each in a process of its own. The load generator is a minimal HTTP/1.1 keep-alive client (one
connection per concurrent worker) so that the client costs as little CPU as possible; both
targets are measured with it alike, and the difference is what Lumina adds.

Then (unless ``--no-limits``) the bench tenant gets a budget and a rate limit (both far from
reached) and the sequential and concurrency-64 non-streaming runs are repeated: every request now
acquires the rate-limit meters, reserves and settles its budget in Redis (and the settlement's
ledger row in Postgres) — the cost of budgets and limits, beside the run without them.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time

import msgspec
import uvloop

from tools.bench.processes import BENCH_KEY, Stack, running_stack

__all__ = ["main"]

_BODY = msgspec.json.encode({"model": "sim-small", "messages": [{"role": "user", "content": "Say hello."}]})
_KEY = BENCH_KEY.encode()  # both targets get it: Lumina checks it (cached), the simulator ignores it
_STREAM_BODY = msgspec.json.encode(
    {"model": "sim-small", "stream": True, "messages": [{"role": "user", "content": "Say hello."}]}
)


class Conn:
    """One keep-alive HTTP/1.1 connection: POST a JSON body, read a content-length or chunked answer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str, path: str) -> None:
        self.reader, self.writer, self.host, self.path = reader, writer, host, path

    @classmethod
    async def open(cls, port: int, path: str) -> Conn:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer, f"127.0.0.1:{port}", path)

    async def post(self, body: bytes) -> tuple[float, float]:
        """(seconds to the first body byte, seconds to the end)."""
        start = time.perf_counter()
        self.writer.write(
            b"POST " + self.path.encode() + b" HTTP/1.1\r\nhost: " + self.host.encode()
            + b"\r\nauthorization: Bearer " + _KEY + b"\r\ncontent-type: application/json\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = head[9:12]
        if status != b"200":
            raise RuntimeError(f"HTTP {status.decode()}: {head[:200]!r}")
        lower = head.lower()
        first = 0.0
        if b"transfer-encoding: chunked" in lower:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).strip(), 16)
                data = await self.reader.readexactly(size + 2)
                if size == 0:
                    break
                if not first and b'"content":"' in data and b'"content":""' not in data:
                    first = time.perf_counter() - start
        else:
            idx = lower.index(b"content-length:") + 15
            length = int(lower[idx : lower.index(b"\r\n", idx)])
            await self.reader.readexactly(length)
            first = time.perf_counter() - start
        return first, time.perf_counter() - start

    def close(self) -> None:
        self.writer.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of ``pid`` so far (Linux /proc): the cost per request that other
    processes on a busy machine do not distort, unlike latency."""
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _backend_cpu(stack: Stack) -> float:
    """CPU seconds of every backend process together."""
    return sum(cpu_seconds(pid) for pid in stack.backend_pids)


def _pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000


_WARM_UP = 500
"""Requests sent before each sequential measurement: a backend's first few hundred requests after a
start cost up to twice the CPU of later ones (fresh tables, caches, allocator arenas); the figures
are those of a running gateway."""


async def _sequential(
    port: int, path: str, body: bytes, n: int, *, stack: Stack | None = None
) -> tuple[list[float], list[float], float]:
    """(seconds to the first byte, seconds to the end) of ``n`` requests one after another, after
    ``_WARM_UP`` more on the same connection; with ``stack``, also the backend's CPU milliseconds
    per measured request (warm-up excluded)."""
    conn = await Conn.open(port, path)
    try:
        for _ in range(_WARM_UP):
            await conn.post(body)
        cpu = _backend_cpu(stack) if stack is not None else 0.0
        firsts, totals = [], []
        for _ in range(n):
            f, t = await conn.post(body)
            firsts.append(f)
            totals.append(t)
        cpu = (_backend_cpu(stack) - cpu) / n * 1000 if stack is not None else 0.0
        return firsts, totals, cpu
    finally:
        conn.close()


async def _concurrent(port: int, path: str, body: bytes, workers: int, seconds: float) -> tuple[float, list[float]]:
    conns = [await Conn.open(port, path) for _ in range(workers)]
    latencies: list[float] = []
    done = 0
    await asyncio.gather(*(c.post(body) for c in conns))  # warm-up
    deadline = time.perf_counter() + seconds

    async def work(conn: Conn) -> None:
        nonlocal done
        while time.perf_counter() < deadline:
            _, t = await conn.post(body)
            latencies.append(t)
            done += 1

    started = time.perf_counter()
    await asyncio.gather(*(work(c) for c in conns))
    elapsed = time.perf_counter() - started
    for c in conns:
        c.close()
    return done / elapsed, latencies


async def _configure_limits(stack: Stack) -> None:
    """A tenant budget and a tenant rate limit, generous enough never to refuse this bench."""
    import httpx

    headers = {"authorization": f"Bearer {BENCH_KEY}"}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{stack.http_port}", headers=headers, timeout=30) as http:
        r = await http.post("/v1/budgets", json={"name": "bench", "scope": "tenant", "limit_micros": 10**12,
                                                 "period": "daily"})
        r.raise_for_status()
        r = await http.put("/v1/rate-limits", json={"scope": "tenant", "requests_per_minute": 100_000_000,
                                                    "tokens_per_minute": 1_000_000_000})
        r.raise_for_status()
        r = await http.post("/v1/chat/completions", content=_BODY, headers={"content-type": "application/json"})
        r.raise_for_status()
        if "x-ratelimit-limit-requests" not in r.headers:
            raise RuntimeError("the rate limit is not applied: no x-ratelimit-* headers")


async def _limited(stack: Stack, n: int, seconds: float) -> None:
    print("with a tenant budget and rate limit (Redis: acquire, reserve, settle, adjust per request)")
    port, path = stack.http_port, "/v1/chat/completions"
    _, totals, cpu = await _sequential(port, path, _BODY, n, stack=stack)
    print(f"  sequential      p50 {_pct(totals, 50):6.2f}  p99 {_pct(totals, 99):6.2f}  backend CPU {cpu:.2f} ms/request")
    cpu = _backend_cpu(stack)
    rps, lat = await _concurrent(port, path, _BODY, 64, seconds)
    cpu = (_backend_cpu(stack) - cpu) / max(1, len(lat)) * 1000
    print(f"  concurrency 64 {rps:6.0f} req/s  p50 {_pct(lat, 50):7.2f}  p99 {_pct(lat, 99):7.2f}  "
          f"backend CPU {cpu:.2f} ms/request")


async def _run(stack: Stack, n: int, seconds: float, limits: bool = True) -> None:
    targets = {"direct": (stack.sim_port, "/v1/chat/completions"), "lumina": (stack.http_port, "/v1/chat/completions")}
    print(f"sequential, {n} non-streaming requests each (ms)")
    seq: dict[str, list[float]] = {}
    for name, (port, path) in targets.items():
        _, totals, cpu = await _sequential(port, path, _BODY, n, stack=stack)
        seq[name] = totals
        extra = f"  backend CPU {cpu:.2f} ms/request" if name == "lumina" else ""
        print(f"  {name:7s} p50 {_pct(totals, 50):6.2f}  p99 {_pct(totals, 99):6.2f}{extra}")
    print(f"  ADDED   p50 {_pct(seq['lumina'], 50) - _pct(seq['direct'], 50):6.2f}  "
          f"p99 {_pct(seq['lumina'], 99) - _pct(seq['direct'], 99):6.2f}")

    print(f"sequential, {n} streaming requests each: time to first token (ms)")
    ttft: dict[str, list[float]] = {}
    for name, (port, path) in targets.items():
        firsts, _, _ = await _sequential(port, path, _STREAM_BODY, n)
        ttft[name] = firsts
        print(f"  {name:7s} p50 {_pct(firsts, 50):6.2f}  p99 {_pct(firsts, 99):6.2f}")
    print(f"  ADDED   p50 {_pct(ttft['lumina'], 50) - _pct(ttft['direct'], 50):6.2f}  "
          f"p99 {_pct(ttft['lumina'], 99) - _pct(ttft['direct'], 99):6.2f}")

    for workers in (16, 64):
        print(f"concurrency {workers}, non-streaming, {seconds:.0f} s each")
        rates: dict[str, tuple[float, list[float]]] = {}
        for name, (port, path) in targets.items():
            cpu = _backend_cpu(stack)
            rates[name] = await _concurrent(port, path, _BODY, workers, seconds)
            rps, lat = rates[name]
            cpu = (_backend_cpu(stack) - cpu) / max(1, len(lat)) * 1000
            extra = f"  backend CPU {cpu:.2f} ms/request" if name == "lumina" else ""
            print(f"  {name:7s} {rps:8.0f} req/s  p50 {_pct(lat, 50):7.2f}  p99 {_pct(lat, 99):7.2f}{extra}")
        d, lu = rates["direct"][1], rates["lumina"][1]
        print(f"  ADDED   p50 {_pct(lu, 50) - _pct(d, 50):7.2f}  p99 {_pct(lu, 99) - _pct(d, 99):7.2f}")

    if limits:
        await _configure_limits(stack)
        await _limited(stack, n, seconds)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.gateway")
    p.add_argument("--requests", type=int, default=2000, help="sequential requests per target")
    p.add_argument("--seconds", type=float, default=8.0, help="duration of each concurrent run")
    p.add_argument("--no-limits", action="store_true", help="skip the run with a budget and a rate limit")
    p.add_argument("--backends", type=int, default=1,
                   help="backend processes sharing the port (SO_REUSEPORT), as LUMINA_BACKEND_PROCESSES")
    p.add_argument("--usage-commit", choices=["durable", "fast"], default="durable",
                   help="the backend's LUMINA_USAGE_COMMIT (fast: usage rows commit without waiting for the WAL flush)")
    args = p.parse_args(argv)
    os.environ["LUMINA_USAGE_COMMIT"] = args.usage_commit  # the backend processes inherit it
    memory = "off" if os.environ.get("LUMINA_BENCH_MEMORY") == "off" else "on"
    print(f"backend processes: {args.backends}; usage commit: {args.usage_commit}; "
          f"long-term memory in the chat path: {memory}; load average {os.getloadavg()[0]:.1f}")
    with running_stack(backends=args.backends) as stack:
        uvloop.run(_run(stack, args.requests, args.seconds, not args.no_limits))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
