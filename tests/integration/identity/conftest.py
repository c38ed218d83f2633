"""Identity use cases wired to real Postgres (migrated), real Redis and the real primitives. Each
test gets a tenant of its own; its audit events are read from (and then removed from) the outbox."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta

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
from adapters.system import TimeOrderedIds
from application.identity import CreateTenant, IdentityContext, RegisterUser
from domain.events import AuthenticationAudited
from domain.identity import BackoffPolicy, Role, TenantPolicy, User

ORIGIN = "http://localhost:8080"
PASSWORD = "violet-harbour-lantern-42"


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

    async def user(self, email: str = "ann@example.com", password: str | None = PASSWORD, role: Role = Role.MEMBER) -> User:
        return await RegisterUser(self.ctx)(self.tenant, email, "Ann", password, role)

    async def audits(self) -> list[AuthenticationAudited]:
        async with self.engine.connect() as conn:
            rows = await conn.execute(sa.text("SELECT payload FROM outbox WHERE subject LIKE :s ORDER BY id"),
                                      {"s": f"lumina.{self.tenant}.auth.%"})
            return [decode_event(r.payload) for r in rows]  # type: ignore[misc]


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(database_url, pool_size=4)
    yield engine
    async with engine.begin() as conn:
        await conn.execute(sa.text("DELETE FROM outbox WHERE subject LIKE '%.auth.audited'"))
    await engine.dispose()


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


def make_ctx(engine: AsyncEngine, redis: Redis, clock: MovableClock, namespace: str, **overrides: object) -> IdentityContext:
    ctx = IdentityContext(
        uow=SqlIdentityUnitOfWorkFactory(engine),
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
    return World(ctx=ctx, clock=clock, engine=engine, tenant=tenant)
