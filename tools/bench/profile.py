"""Profile the backend under load: the gateway benchmark's stack, a fixed load through Lumina's
OpenAI edge, and ``py-spy record`` attached to the backend process meanwhile.

    .venv/bin/python -m tools.bench.profile --workers 64 --seconds 10 --out /tmp/backend.svg

``py-spy`` is a dev dependency; attaching to another process needs ptrace rights (root, or
``kernel.yama.ptrace_scope=0``). ``--format speedscope`` or ``raw`` (collapsed stacks) work too.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
from pathlib import Path

import uvloop

from tools.bench.gateway import _BODY, _STREAM_BODY, _concurrent, _pct
from tools.bench.processes import running_stack

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tools.bench.profile")
    p.add_argument("--workers", type=int, default=64)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--stream", action="store_true", help="streaming requests instead of whole answers")
    p.add_argument("--out", default="/tmp/backend.svg")
    p.add_argument("--format", default="flamegraph", choices=["flamegraph", "speedscope", "raw"])
    p.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    args = p.parse_args(argv)
    spy = Path(sys.executable).with_name("py-spy")
    body = _STREAM_BODY if args.stream else _BODY
    with running_stack() as stack:
        rec = subprocess.Popen(
            [str(spy), "record", "--pid", str(stack.backend_pid), "--duration", str(int(args.seconds)),
             "--rate", str(args.rate), "--format", args.format, "--output", args.out, "--nonblocking"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        rps, lat = uvloop.run(_concurrent(stack.http_port, "/v1/chat/completions", body, args.workers, args.seconds))
        _, err = rec.communicate(timeout=60)
        print(f"{rps:.0f} req/s  p50 {_pct(lat, 50):.2f} ms  p99 {_pct(lat, 99):.2f} ms; profile: {args.out}")
        if rec.returncode:
            print(err, file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
