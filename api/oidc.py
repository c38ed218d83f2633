"""``lumina oidc``: the operator sets, shows or removes a tenant's OpenID Provider, talking to the
database directly (docs/operations.md "OIDC"). The client secret comes from an environment
variable, never from the command line, and is stored sealed with the data directory's key file."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import os
import sys
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, TypeVar

from api.settings import Settings
from domain.errors import DomainError

if TYPE_CHECKING:  # the commands import the database and IdP machinery only when they run
    from application.identity import IdentityContext

__all__ = ["add_oidc_commands", "run_oidc_command"]

_T = TypeVar("_T")
SECRET_ENV = "OIDC_CLIENT_SECRET"


def add_oidc_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    oidc = sub.add_parser("oidc", help="a tenant's OpenID Provider (sign-in with an external IdP)")
    actions = oidc.add_subparsers(dest="oidc_command", required=True, metavar="ACTION")
    set_ = actions.add_parser("set", help="set or replace the tenant's identity provider")
    set_.add_argument("--tenant", default=None, help="tenant id (default: LUMINA_TENANT_ID)")
    set_.add_argument("--issuer", required=True, help="the IdP's issuer URL (https; http only on loopback)")
    set_.add_argument("--client-id", required=True)
    set_.add_argument("--client-secret-env", default=SECRET_ENV, metavar="NAME",
                      help=f"environment variable holding the client secret (default {SECRET_ENV}; "
                           "asked for when unset and a terminal is attached)")
    set_.add_argument("--redirect-uri", action="append", required=True, dest="redirect_uris",
                      help="the console's callback URL registered at the IdP (repeatable)")
    set_.add_argument("--scope", action="append", dest="scopes", help="default: openid email profile (repeatable)")
    set_.add_argument("--jit", action="store_true", help="create users on their first sign-in")
    set_.add_argument("--link-verified-email", action="store_true",
                      help="link an existing user when both the IdP and Lumina verified the email address")
    for name, text in (("show", "show the tenant's identity provider"), ("remove", "turn OIDC sign-in off")):
        action = actions.add_parser(name, help=text)
        action.add_argument("--tenant", default=None, help="tenant id (default: LUMINA_TENANT_ID)")


def run_oidc_command(settings: Settings, args: argparse.Namespace) -> int:
    try:
        return _command(settings, args)
    except DomainError as exc:  # a wrong issuer, an unknown tenant, a bad URL: one line, no trace
        print(f"lumina: {exc}", file=sys.stderr)
        return 1


def _command(settings: Settings, args: argparse.Namespace) -> int:
    from adapters.identity import AuthlibOidcClient
    from application.identity import ConfigureOidc, RemoveOidc

    if not settings.database_url:
        print("lumina: LUMINA_DATABASE_URL is not set (or run `lumina up`, which sets it)", file=sys.stderr)
        return 2
    tenant = args.tenant or settings.tenant_id
    match args.oidc_command:
        case "set":
            secret = os.environ.get(args.client_secret_env, "")
            if not secret and sys.stdin.isatty():
                secret = getpass.getpass("client secret: ")
            if not secret:
                print(f"lumina: set {args.client_secret_env} to the client secret", file=sys.stderr)
                return 2

            async def configure(ctx: IdentityContext) -> list[str]:
                provider = await ConfigureOidc(ctx, AuthlibOidcClient())(
                    tenant, issuer=args.issuer, client_id=args.client_id, client_secret=secret,
                    redirect_uris=args.redirect_uris, scopes=args.scopes or ("openid", "email", "profile"),
                    jit_users=args.jit, link_by_verified_email=args.link_verified_email,
                )
                return [f"tenant {tenant}: OIDC sign-in through {provider.issuer} (client {provider.client_id})"]

            lines = _run(settings, configure)
        case "show":

            async def show(ctx: IdentityContext) -> list[str]:
                async with ctx.uow() as uow:
                    provider = await uow.oidc_providers.get(tenant)
                    tenant_row = await uow.tenants.get(tenant)
                if provider is None or tenant_row is None:
                    return [f"tenant {tenant}: no identity provider"]
                policy = tenant_row.policy
                return [
                    f"tenant:        {tenant}",
                    f"issuer:        {provider.issuer}",
                    f"client id:     {provider.client_id} (secret stored sealed)",
                    f"scopes:        {' '.join(provider.scopes)}",
                    f"redirect URIs: {', '.join(provider.redirect_uris)}",
                    f"jit users:     {'on' if policy.oidc_jit_users else 'off'}",
                    f"link by email: {'on' if policy.oidc_link_by_verified_email else 'off'}",
                ]

            lines = _run(settings, show)
        case _:

            async def remove(ctx: IdentityContext) -> list[str]:
                removed = await RemoveOidc(ctx)(tenant)
                return [f"tenant {tenant}: {'OIDC sign-in removed' if removed else 'had no identity provider'}"]

            lines = _run(settings, remove)
    print("\n".join(lines))
    return 0


def _run(settings: Settings, work: Callable[[IdentityContext], Awaitable[_T]]) -> _T:
    from redis.asyncio import Redis

    from adapters.postgres.engine import create_engine
    from api.identity import identity_context

    async def main() -> _T:
        engine = create_engine(settings.database_url or "", pool_size=2)
        redis = Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0")  # not contacted: no login here
        try:
            return await work(identity_context(settings, engine, redis))
        finally:
            await redis.aclose()
            await engine.dispose()

    return asyncio.run(main())
