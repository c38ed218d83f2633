"""Identity use cases wired to real Postgres (migrated), real Redis and the real primitives. Each
test gets a tenant of its own; its audit events are read from (and then removed from) the outbox.
TOTP seeds and OIDC client secrets are sealed with a local-keyfile KMS in a temporary directory;
``oidc_idp`` is a real OpenID Provider (npm ``oidc-provider``) for the whole session."""

from __future__ import annotations

import functools
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.events_codec import decode_event
from adapters.identity import (
    Argon2PasswordHasher,
    PyOtpTotp,
    PyWebAuthnRelyingParty,
    RedisLoginLimiter,
    SystemSecrets,
    ZxcvbnStrength,
)
from adapters.postgres import create_engine
from adapters.postgres.identity_uow import SqlIdentityUnitOfWorkFactory
from adapters.secrets import LocalKeyfileKms
from adapters.system import TimeOrderedIds
from application.identity import CreateTenant, IdentityContext, RegisterUser
from domain.events import AuthenticationAudited
from domain.identity import BackoffPolicy, Role, TenantPolicy, User
from tests.harness.oidc import OidcAccount, OidcClientRegistration, OidcProviderServer

ORIGIN = "http://localhost:8080"
PASSWORD = "violet-harbour-lantern-42"

# The IdP's client and accounts (see tests/integration/identity/test_oidc.py).
OIDC_CLIENT = OidcClientRegistration(
    client_id="lumina-console",
    client_secret="idp-client-secret-0123456789-abcdefghij",
    redirect_uris=("http://127.0.0.1:8080/auth/oidc/callback", "http://127.0.0.1:8080/other/callback"),
)
IDP_PASSWORD = "idp-password-7"
OIDC_ACCOUNTS = (
    OidcAccount("sub-carol", IDP_PASSWORD, email="carol@example.com", email_verified=True, name="Carol"),
    OidcAccount("sub-dave", IDP_PASSWORD, email="dave@example.com", email_verified=True, name="Dave"),
    OidcAccount("sub-erin", IDP_PASSWORD, email="erin@example.com", email_verified=False, name="Erin"),
    OidcAccount("sub-frank", IDP_PASSWORD, name="Frank"),  # no email at all
)


@functools.cache
def shared_data_dir() -> Path:
    """A data directory per test process: its secrets/kek.key seals TOTP seeds and OIDC secrets."""
    return Path(tempfile.mkdtemp(prefix="lumina-test-kms-"))


@functools.cache
def shared_kms() -> LocalKeyfileKms:
    return LocalKeyfileKms.in_data_dir(shared_data_dir())


class MovableClock:
    def __init__(self) -> None:
        self.at = datetime.now(UTC)

    def now(self) -> datetime:
        return self.at

    def monotonic(self) -> float:
        return self.at.timestamp()

    def advance(self, **kwargs: float) -> None:
        self.at += timedelta(**kwargs)


@dataclass
class World:
    ctx: IdentityContext
    clock: MovableClock
    engine: AsyncEngine
    tenant: str
    kms: LocalKeyfileKms

    async def user(self, email: str = "ann@example.com", password: str | None = PASSWORD, role: Role = Role.MEMBER) -> User:
        return await RegisterUser(self.ctx)(self.tenant, email, "Ann", password, role)

    async def audits(self) -> list[AuthenticationAudited]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT payload FROM outbox WHERE subject LIKE :s ORDER BY id"),
                                      {"s": f"lumina.{self.tenant}.auth.%"})
            return [decode_event(r.payload) for r in rows]  # type: ignore[misc]


async def _forget_queued_mail(engine: AsyncEngine) -> None:
    """Mail queued by other tests (no worker sends it) must not reach this test's SMTP server."""
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM mail_outbox WHERE sent_at IS NULL"))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=4)
    await _forget_queued_mail(engine)
    yield engine
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM outbox WHERE subject LIKE '%.auth.audited'"))
    await _forget_queued_mail(engine)
    await engine.dispose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def make_ctx(engine: AsyncEngine, redis: Redis, clock: MovableClock, namespace: str, **overrides: object) -> IdentityContext:
    ctx = IdentityContext(
        uow=SqlIdentityUnitOfWorkFactory(engine, kms=shared_kms()),
        clock=clock,
        ids=TimeOrderedIds(),
        secrets=SystemSecrets(),
        hasher=Argon2PasswordHasher(),
        strength=ZxcvbnStrength(),
        limiter=RedisLoginLimiter(redis, BackoffPolicy(free_attempts=2, base_seconds=0.3, cap_seconds=0.6), namespace),
        totp=PyOtpTotp(),
        webauthn=PyWebAuthnRelyingParty("localhost", "Lumina", [ORIGIN]),
    )
    return replace(ctx, **overrides)  # type: ignore[arg-type]


@pytest.fixture
async def world(engine: AsyncEngine, redis: Redis, request: pytest.FixtureRequest) -> World:
    tenant = f"t-{uuid.uuid4().hex[:10]}"
    clock = MovableClock()
    ctx = make_ctx(engine, redis, clock, f"lumina-test:{tenant}")
    policy = getattr(request, "param", None) or TenantPolicy()
    await CreateTenant(ctx)(tenant, "Test tenant", policy)
    return World(ctx=ctx, clock=clock, engine=engine, tenant=tenant, kms=shared_kms())


@pytest.fixture(scope="session")
def oidc_idp() -> Iterator[OidcProviderServer]:
    """A real OpenID Provider on loopback; strict about ID token claims (email from userinfo)."""
    with OidcProviderServer(clients=[OIDC_CLIENT], accounts=OIDC_ACCOUNTS) as server:
        yield server
