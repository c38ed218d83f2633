"""``python -m tools.provider_sim [--host H] [--port P] [--tokens N] ...``: serve the simulator.

Prints ``provider simulator listening on http://H:P/v1`` once listening; stops cleanly on
SIGINT/SIGTERM; a busy port is a one-line error and exit status 1.
"""

from __future__ import annotations

import argparse
import os
import sys

import msgspec

from tools.provider_sim.config import DEFAULT_MODELS, FAULTS, SimConfig
from tools.provider_sim.server import PortInUse, bind_socket, build_server

__all__ = ["main", "parse_args"]


def _models(text: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for item in filter(None, (p.strip() for p in text.split(","))):
        name, _, window = item.partition("=")
        out[name] = int(window) if window else 131_072
    if not out:
        raise argparse.ArgumentTypeError("at least one model")
    return out


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.provider_sim", description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8090)
    p.add_argument("--latency-ms", type=float, default=0.0, help="delay before the first byte")
    p.add_argument("--chunks", type=int, default=8, help="content chunks per stream")
    p.add_argument("--tokens", type=int, default=16, help="completion tokens per answer")
    p.add_argument("--chunk-delay-ms", type=float, default=0.0, help="delay between stream chunks")
    p.add_argument("--fault", choices=sorted(FAULTS), default=None, help="fail every request this way")
    p.add_argument("--retry-after", type=float, default=2.0, help="retry-after of 429 faults")
    p.add_argument("--cached-tokens", type=int, default=0)
    p.add_argument("--reasoning-tokens", type=int, default=0)
    p.add_argument("--tool-call", default=None, help="answer with a call of this function")
    p.add_argument(
        "--api-key",
        default=os.environ.get("PROVIDER_SIM_API_KEY"),
        help="accept only this bearer token (default: $PROVIDER_SIM_API_KEY, else any)",
    )
    p.add_argument(
        "--models",
        type=_models,
        default=dict(DEFAULT_MODELS),
        help="name=context_window,... (default: %(default)s)",
    )
    p.add_argument("--accept-any-model", action="store_true", help="serve unknown model names too")
    p.add_argument("--log-level", default="warning")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = SimConfig.build(
            api_key=args.api_key,
            models=args.models,
            strict_models=not args.accept_any_model,
            latency_ms=args.latency_ms,
            chunks=args.chunks,
            tokens=args.tokens,
            chunk_delay_ms=args.chunk_delay_ms,
            fault=args.fault,
            retry_after=args.retry_after,
            cached_tokens=args.cached_tokens,
            reasoning_tokens=args.reasoning_tokens,
            tool_call=args.tool_call,
        )
    except msgspec.ValidationError as exc:
        print(f"provider simulator: invalid option: {exc}", file=sys.stderr)
        return 2
    try:
        sock = bind_socket(args.host, args.port)
    except PortInUse as exc:
        print(f"provider simulator: {exc.strerror} (port {exc.port})", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"provider simulator: cannot listen on {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 1
    host = f"[{args.host}]" if ":" in args.host else args.host
    port = sock.getsockname()[1]
    server = build_server(config, log_level=args.log_level)
    print(f"provider simulator listening on http://{host}:{port}/v1", flush=True)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:  # a second Ctrl+C during shutdown
        pass
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
