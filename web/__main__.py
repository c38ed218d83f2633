"""``python -m web``: run the console alone (``lumina web`` is the usual way)."""

from __future__ import annotations

import argparse
import os
import sys

from web.server import ServeError, serve

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m web", description="Lumina web console")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("LUMINA_WEB_PORT", "8080")))
    parser.add_argument("--backend", default=os.environ.get("LUMINA_BACKEND", "127.0.0.1:50051"), help="gRPC host:port")
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port, args.backend)
    except ServeError as exc:
        print(f"lumina web: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
