"""Instructions the backend executes per request, counted by valgrind (callgrind): the gateway
benchmark's stack with the backend under ``valgrind --tool=callgrind``, counting only while the
measured requests run.

    .venv/bin/python -m tools.bench.instructions [--requests 200] [--warm-up 150] [--stream]
        [--out /tmp/lumina.callgrind]   # keep the profile (callgrind_annotate reads it)
    LUMINA_BENCH_MEMORY=off ...         # without long-term memory in the chat path

Latency and CPU time on a shared 2-core machine move by ±50% from one quarter of an hour to the
next; an instruction count does not (the same code, inputs and environment give the same count
within a fraction of a percent), so it is how two versions of the request path are compared. It is
not a latency: cache misses, system calls and wake-ups cost time that instructions do not show,
and it counts the backend alone (not the simulator, Postgres or the client). Under valgrind the
backend runs 20–100× slower; the requests are sent one after another, as in the sequential part
of ``tools.bench.gateway``, and the first ``--warm-up`` are not counted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import uvloop

from tools.bench.gateway import _BODY, _STREAM_BODY, Conn
from tools.bench.processes import running_stack

__all__ = ["main"]

_TOTAL = re.compile(r"^summary:\s+(\d+)", re.MULTILINE)


def _callgrind(pid: int, *args: str) -> None:
    subprocess.run(["callgrind_control", *args, str(pid)], check=True, capture_output=True, timeout=300)


def _instructions(out_dir: Path) -> int:
    """Instructions in the dumps callgrind wrote since instrumentation was switched on."""
    total = 0
    for dump in out_dir.glob("callgrind.out*"):
        text = dump.read_text(errors="replace")
        found = _TOTAL.search(text) or re.search(r"^totals:\s+(\d+)", text, re.MULTILINE)
        if found:
            total += int(found.group(1))
    return total


async def _send(port: int, body: bytes, n: int) -> float:
    conn = await Conn.open(port, "/v1/chat/completions")
    try:
        started = time.perf_counter()
        for _ in range(n):
            await conn.post(body)
        return time.perf_counter() - started
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.instructions")
    p.add_argument("--requests", type=int, default=200, help="measured sequential requests")
    p.add_argument("--warm-up", type=int, default=150, help="requests sent before counting starts")
    p.add_argument("--stream", action="store_true", help="streaming requests instead of whole answers")
    p.add_argument("--out", default="", help="keep the callgrind profile at this path")
    args = p.parse_args(argv)
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        print("valgrind is not installed (Debian package valgrind)")
        return 2
    body = _STREAM_BODY if args.stream else _BODY
    memory = "off" if os.environ.get("LUMINA_BENCH_MEMORY") == "off" else "on"
    with tempfile.TemporaryDirectory(prefix="lumina-callgrind-") as tmp:
        out_dir = Path(tmp)
        prefix = ["valgrind", "--tool=callgrind", "--instr-atstart=no", "--dump-instr=no",
                  f"--callgrind-out-file={out_dir}/callgrind.out.%p", "--quiet"]
        print(f"starting the stack with the backend under callgrind (long-term memory: {memory}) ...", flush=True)
        with running_stack(backend_prefix=prefix, start_timeout=600) as stack:
            pid = stack.backend_pid
            loop_run = uvloop.run
            print(f"warming up: {args.warm_up} requests ...", flush=True)
            loop_run(_send(stack.http_port, body, args.warm_up))
            _callgrind(pid, "--instr=on")
            _callgrind(pid, "--zero")
            print(f"counting: {args.requests} sequential {'streaming' if args.stream else 'non-streaming'} requests ...",
                  flush=True)
            elapsed = loop_run(_send(stack.http_port, body, args.requests))
            _callgrind(pid, "--dump")
            _callgrind(pid, "--instr=off")
            total = _instructions(out_dir)
            if args.out:
                dumps = sorted(out_dir.glob("callgrind.out*"), key=lambda d: d.stat().st_mtime)
                if dumps:
                    shutil.copy(dumps[-1], args.out)
        if not total:
            print("callgrind wrote no counts")
            return 1
        per = total / args.requests
        print(f"backend instructions per request: {per / 1e6:.3f} M "
              f"({total:,} for {args.requests} requests; {elapsed / args.requests * 1000:.1f} ms each under valgrind)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
