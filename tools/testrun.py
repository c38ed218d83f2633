"""`make test`: the layering contracts, the proto lint, then the whole pytest suite (the harness in
tests/harness starts and stops Postgres+pgvector, NATS and Redis as needed). Extra arguments go to
pytest, e.g. `make test ARGS="tests/unit -k chat"`."""

from __future__ import annotations

import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def step(title: str, argv: list[str]) -> int:
    print(f"==> {title}: {shlex.join(argv)}", flush=True)
    started = time.monotonic()
    code = subprocess.call(argv, cwd=ROOT)
    print(f"<== {title}: {'ok' if code == 0 else f'FAILED (exit {code})'} in {time.monotonic() - started:.1f}s", flush=True)
    return code


def main(args: list[str]) -> int:
    started = time.monotonic()
    if step("import-linter (layering contracts)", [str(BIN / "lint-imports")]) != 0:
        return 1
    if step("buf lint (proto contract)", [str(ROOT / "node_modules/.bin/buf"), "lint", "proto"]) != 0:
        return 1
    code = step("pytest", [sys.executable, "-m", "pytest", *(args or ["tests"])])
    if code == 5:
        print("pytest collected no tests: that is a failure here", flush=True)
        code = 1
    print(f"make test finished in {time.monotonic() - started:.0f}s", flush=True)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
