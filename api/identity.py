"""Composition of identity (for ``api/bootstrap.py`` and the operator's commands).

``build_identity`` wires one ``IdentityContext`` with the real primitives — argon2id, zxcvbn, the
Redis brute-force limiter (``LUMINA_REDIS_URL``, keys under ``LUMINA_REDIS_NAMESPACE``), pyotp,
py_webauthn with the relying party from settings — and from it the edges' authenticator (API keys
cached briefly, ``api.auth``) and the AuthService operations, which carry the trusted proxies
(``LUMINA_TRUSTED_PROXIES``) the edges serving them use to find each caller's address.
``first_start`` and ``create_key`` are `lumina up`'s first-start step and `lumina keys create`,
talking to the database directly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.identity import (
    Argon2PasswordHasher,
    AuthlibOidcClient,
    PyOtpTotp,
    PyWebAuthnRelyingParty,
    RedisLoginLimiter,
    SystemSecrets,
    ZxcvbnStrength,
)
from adapters.postgres.engine import create_engine
from adapters.postgres.identity_uow import SqlIdentityUnitOfWorkFactory
from adapters.secrets import LocalKeyfileKms
from adapters.system import SystemClock, TimeOrderedIds
from api.auth import CachingAuthenticator, TrustedProxies
from api.grpc.auth import AuthOperations, OidcLogin
from api.settings import Settings
from application.identity import (
    BeginOidcLogin,
    CreateApiKey,
    FinishOidcLogin,
    IdentityContext,
)
from application.identity.authenticate import Authenticate
from application.identity.bootstrap import ActAs, BootstrapAdmin, BootstrapKey
from domain.ports import Clock, IdGenerator

__all__ = ["IdentityModule", "build_identity", "create_key", "first_start", "identity_context"]

_LOCAL_REDIS = "redis://127.0.0.1:6379/0"


@dataclass
class IdentityModule:
    ctx: IdentityContext
    authenticator: CachingAuthenticator
    operations: AuthOperations
    redis: Redis

    async def aclose(self) -> None:
        await self.redis.aclose()


def identity_context(
    settings: Settings, engine: AsyncEngine, redis: Redis, *, clock: Clock | None = None, ids: IdGenerator | None = None
) -> IdentityContext:
    return IdentityContext(
        # TOTP seeds and OIDC client secrets sealed with the key file provider keys use
        uow=SqlIdentityUnitOfWorkFactory(engine, kms=LocalKeyfileKms.in_data_dir(settings.data_path)),
        clock=clock or SystemClock(),
        ids=ids or TimeOrderedIds(),
        secrets=SystemSecrets(),
        hasher=Argon2PasswordHasher(),
        strength=ZxcvbnStrength(),
        limiter=RedisLoginLimiter(redis, namespace=f"{settings.redis_namespace}:auth"),
        totp=PyOtpTotp(),
        webauthn=PyWebAuthnRelyingParty(settings.rp_id, "Lumina", settings.rp_origins),
        reset_url=f"{settings.console_url}/recover?token=",
    )


def _oidc(ctx: IdentityContext, settings: Settings) -> OidcLogin | None:
    """OIDC sign-in for AuthService's BeginOidcLogin/FinishOidcLogin: always on; a tenant without
    an identity provider (`lumina oidc set`, docs/operations.md "OIDC") answers NotFound."""
    client = AuthlibOidcClient()
    return OidcLogin(begin=BeginOidcLogin(ctx, client), finish=FinishOidcLogin(ctx, client))


def build_identity(
    settings: Settings, engine: AsyncEngine, *, clock: Clock | None = None, ids: IdGenerator | None = None,
    redis: Redis | None = None,
) -> IdentityModule:
    if redis is None:
        if not settings.redis_url:
            raise ValueError("LUMINA_REDIS_URL is not set (`lumina up` sets it); the login limiter needs Redis")
        redis = Redis.from_url(settings.redis_url)
    ctx = identity_context(settings, engine, redis, clock=clock, ids=ids)
    authenticator = CachingAuthenticator(Authenticate(ctx), ttl=settings.api_key_cache_seconds)
    operations = AuthOperations(
        ctx, default_tenant=settings.tenant_id, signup_enabled=settings.signup_enabled,
        on_revoke=authenticator.forget, oidc=_oidc(ctx, settings),
        proxies=TrustedProxies.parse(settings.trusted_proxies),
    )
    return IdentityModule(ctx=ctx, authenticator=authenticator, operations=operations, redis=redis)


# --- the operator's commands ------------------------------------------------------------------


async def _with_context(settings: Settings, database_url: str, work: Any) -> Any:
    engine = create_engine(database_url, pool_size=2)
    redis = Redis.from_url(settings.redis_url or _LOCAL_REDIS)  # not contacted: no login happens here
    try:
        return await work(identity_context(settings, engine, redis))
    finally:
        await redis.aclose()
        await engine.dispose()


async def first_start(settings: Settings, database_url: str) -> list[str]:
    """The default tenant, its administrator, the bootstrap key; lines telling the operator what next."""

    async def work(ctx: IdentityContext) -> list[str]:
        done = await BootstrapAdmin(ctx)(settings.tenant_id, settings.admin_email, api_key=settings.bootstrap_api_key or "")
        who = f"{done.admin.email} (tenant {settings.tenant_id})"
        match done.key:
            case BootstrapKey.CREATED | BootstrapKey.EXISTS:
                return [f"admin:       {who}; LUMINA_BOOTSTRAP_API_KEY is its API key (Authorization: Bearer ...)"]
            case BootstrapKey.REVOKED:
                return [(f"admin:       {who}; LUMINA_BOOTSTRAP_API_KEY was revoked and stays so: "
                         "make another with `lumina keys create --name NAME`")]
            case BootstrapKey.CONFLICT:
                return [f"admin:       {who}; LUMINA_BOOTSTRAP_API_KEY NOT stored: its prefix belongs to another key"]
        if done.reset_link:
            return [(f"admin:       {who} has no password yet: set it at {done.reset_link} (valid 1 h, once), "
                     "then `lumina keys create --name NAME` makes an API key")]
        return [f"admin:       {who}; sign in to the console, or `lumina keys create --name NAME` for an API key"]

    return await _with_context(settings, database_url, work)  # type: ignore[no-any-return]


async def create_key(settings: Settings, database_url: str, *, name: str, email: str, tenant_id: str) -> str:
    """A new API key for the user ``email`` of ``tenant_id``; the raw key (shown once)."""

    async def work(ctx: IdentityContext) -> str:
        principal = await ActAs(ctx)(tenant_id, email)
        return (await CreateApiKey(ctx)(principal, name)).raw

    return await _with_context(settings, database_url, work)  # type: ignore[no-any-return]
