"""The ``lumina`` command.

  lumina up        the whole platform on this machine (embedded infrastructure)
  lumina serve     the backend: gRPC + REST
  lumina worker    JetStream consumers and the outbox relay
  lumina web       the HTMX console (a gRPC client of the backend)
  lumina migrate   apply database migrations (LUMINA_DATABASE_URL)
"""

from __future__ import annotations

import argparse
import sys

from api.settings import Settings, SettingsError, load_settings

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lumina", description="Lumina AI orchestration platform")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("up", help="start the whole platform on the embedded default and print its URLs")
    sub.add_parser("serve", help="run the backend (gRPC and REST)")
    sub.add_parser("worker", help="run the worker (outbox relay, JetStream consumers)")
    sub.add_parser("web", help="run the web console")
    migrate = sub.add_parser("migrate", help="apply database migrations")
    migrate.add_argument("revision", nargs="?", default="head", help="target revision (default: head)")
    return parser


def _require(settings: Settings, *names: str) -> None:
    for name in names:
        if not getattr(settings, name):
            raise SettingsError(f"LUMINA_{name.upper()} is not set (or run `lumina up`, which sets it)")


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = load_settings()
        match args.command:
            case "up":
                from api.supervisor import up

                return up(settings)
            case "serve":
                from api.runtime import run_serve

                _require(settings, "database_url")
                run_serve(settings)
            case "worker":
                from api.runtime import run_worker

                _require(settings, "database_url", "nats_url")
                run_worker(settings)
            case "web":
                from web.server import serve

                serve(settings.host, settings.web_port, settings.backend_target)
            case "migrate":
                from adapters.postgres.migrate import upgrade

                _require(settings, "database_url")
                upgrade(settings.database_url or "", args.revision)
                print(f"database migrated to {args.revision}")
    except SettingsError as exc:
        print(f"lumina: invalid setting: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"lumina: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
