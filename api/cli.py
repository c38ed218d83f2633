"""The ``lumina`` command.

  lumina up        the whole platform on this machine (embedded infrastructure)
  lumina serve     the backend: gRPC + REST
  lumina worker    JetStream consumers and the outbox relay
  lumina web       the HTMX console (a gRPC client of the backend)
  lumina migrate   apply database migrations (LUMINA_DATABASE_URL)
  lumina oidc      set, show or remove a tenant's OpenID Provider
  lumina keys      create an API key (`lumina keys create --name NAME`)
"""

from __future__ import annotations

import argparse
import sys

from api.keys import add_keys_commands
from api.oidc import add_oidc_commands
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
    add_oidc_commands(sub)
    add_keys_commands(sub)
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

                _require(settings, "database_url", "redis_url")
                run_serve(settings)
            case "worker":
                from api.runtime import run_worker

                _require(settings, "database_url", "nats_url")
                run_worker(settings)
            case "web":
                from web.server import serve

                serve(
                    settings.host, settings.web_port, settings.backend_target,
                    secret=settings.web_secret.encode() if settings.web_secret else None,
                    secure_cookies=settings.console_url.startswith("https://"),
                    public_url=settings.console_url, trusted_proxies=settings.trusted_proxies,
                )
            case "migrate":
                from adapters.postgres.migrate import upgrade

                _require(settings, "database_url")
                upgrade(settings.database_url or "", args.revision)
                print(f"database migrated to {args.revision}")
            case "keys":
                from api.keys import run_keys_command

                return run_keys_command(settings, args)
            case "first-start":
                from api.keys import run_first_start

                return run_first_start(settings)
            case "oidc":
                from api.oidc import run_oidc_command

                return run_oidc_command(settings, args)
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
