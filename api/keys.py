"""``lumina keys create`` and `lumina up`'s first-start step, talking to the database directly
(``LUMINA_DATABASE_URL``, else the embedded database under ``LUMINA_DATA_DIR``).

  lumina keys create --name NAME [--email admin@localhost] [--tenant default]

prints a new API key of that user on stdout, once (it is stored only as a hash).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
from collections.abc import Iterator

from api.settings import Settings
from domain.errors import DomainError

__all__ = ["add_keys_commands", "run_first_start", "run_keys_command"]


def add_keys_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = sub.add_parser("keys", help="API keys (the gateway's virtual keys)")
    actions = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    create = actions.add_parser("create", help="create an API key and print it once")
    create.add_argument("--name", required=True, help="what the key is for (shown in listings)")
    create.add_argument("--email", default=None, help="whose key it is (default: LUMINA_ADMIN_EMAIL, admin@localhost)")
    create.add_argument("--tenant", default=None, help="the user's tenant (default: LUMINA_TENANT_ID)")
    sub.add_parser("first-start", help=argparse.SUPPRESS)  # `lumina up` runs it after migrating


@contextlib.contextmanager
def _database(settings: Settings) -> Iterator[str]:
    if settings.database_url:
        yield settings.database_url
        return
    from adapters.embedded.postgres import start_embedded_postgres

    pg = start_embedded_postgres(settings.data_path / "postgres", database="lumina")  # attaches to a running one
    try:
        yield pg.url
    finally:
        pg.stop()  # only stops a server this process started


def run_keys_command(settings: Settings, args: argparse.Namespace) -> int:
    from api.identity import create_key

    try:
        with _database(settings) as url:
            raw = asyncio.run(create_key(
                settings, url, name=args.name, email=args.email or settings.admin_email,
                tenant_id=args.tenant or settings.tenant_id,
            ))
    except DomainError as exc:  # unknown user or tenant: one line
        print(f"lumina: {exc}", file=sys.stderr)
        return 1
    print(raw)
    print("this key is shown once: store it now (send it as `Authorization: Bearer <key>`)", file=sys.stderr)
    return 0


def run_first_start(settings: Settings) -> int:
    """The default tenant, its administrator and the bootstrap key (idempotent); prints what next."""
    from api.identity import first_start

    try:
        with _database(settings) as url:
            lines = asyncio.run(first_start(settings, url))
    except DomainError as exc:
        print(f"lumina: first start: {exc}", file=sys.stderr)
        return 1
    print("\n".join(lines))
    return 0
