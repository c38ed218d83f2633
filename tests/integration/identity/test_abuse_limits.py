"""Abuse limits of the calls open to anyone, on real Redis and Postgres: sign-ups and password-reset
requests per client address (fixed windows), reset mails per (tenant, email) whether or not the
account exists; each refusal is the same ``TooManyAttempts`` with the window's remaining time, and
leaves an audit event. Other addresses are untouched; the window ends."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa
from redis.asyncio import Redis

from adapters.events_codec import decode_event
from adapters.identity import RedisLoginLimiter
from application.identity import RateLimit, RequestPasswordReset
from application.identity.signup import SignUp
from domain.errors import InvalidRequest
from domain.identity import TooManyAttempts
from tests.integration.identity.conftest import PASSWORD, World, make_ctx

A, B = "198.51.100.10", "198.51.100.20"


async def test_the_fixed_window_counts_per_key_and_ends(redis: Redis) -> None:
    limiter = RedisLoginLimiter(redis, namespace=f"lumina-test:{uuid.uuid4().hex}")
    for _ in range(3):
        await limiter.hit("k", limit=3, window_seconds=0.6)
    with pytest.raises(TooManyAttempts) as refused:
        await limiter.hit("k", limit=3, window_seconds=0.6)
    assert 0 < refused.value.retry_after <= 0.6
    await limiter.hit("other", limit=3, window_seconds=0.6)  # keys count apart
    await asyncio.sleep(0.7)
    await limiter.hit("k", limit=3, window_seconds=0.6)  # a new window
    hits = await asyncio.gather(*(limiter.hit("burst", limit=5, window_seconds=5) for _ in range(20)),
                                return_exceptions=True)
    assert sum(1 for h in hits if h is None) == 5  # atomic under concurrency: exactly the limit passes


async def test_sign_ups_are_limited_per_address_valid_or_not(world: World, redis: Redis) -> None:
    ctx = make_ctx(world.engine, redis, world.clock, f"lumina-test:{uuid.uuid4().hex}", signup_limit=RateLimit(3, 60))
    sign_up = SignUp(ctx)
    tag = uuid.uuid4().hex[:8]
    await sign_up(f"a1-{tag}@example.com", PASSWORD, "A", f"Abuse {tag} one", client=A)
    with pytest.raises(InvalidRequest):  # a refused attempt counts as well: it cost a check
        await sign_up("not an email", PASSWORD, "A", "x", client=A)
    await sign_up(f"a2-{tag}@example.com", PASSWORD, "A", f"Abuse {tag} two", client=A)
    with pytest.raises(TooManyAttempts) as refused:
        await sign_up(f"a3-{tag}@example.com", PASSWORD, "A", f"Abuse {tag} three", client=A)
    assert 55 < refused.value.retry_after <= 60
    done = await sign_up(f"b1-{tag}@example.com", PASSWORD, "B", f"Abuse {tag} four", client=B)  # B is not A
    assert done.tenant.id.startswith("abuse-")
    async with world.engine.connect() as conn:
        made = (await conn.execute(sa.text("SELECT count(*) FROM users WHERE email LIKE :e"), {"e": f"%-{tag}@example.com"})).scalar_one()
        rows = (await conn.execute(sa.text("SELECT payload FROM outbox WHERE subject = 'lumina.unknown.auth.audited'"))).all()
    audits = [decode_event(r.payload) for r in rows]
    assert made == 3
    assert [(a.method, a.outcome) for a in audits if a.client_address == A] == [("signup", "locked_out")]  # type: ignore[attr-defined]


async def test_reset_requests_are_limited_per_address_and_per_account_alike_for_unknown_accounts(
    world: World, redis: Redis
) -> None:
    ctx = make_ctx(world.engine, redis, world.clock, f"lumina-test:{uuid.uuid4().hex}",
                   reset_limit=RateLimit(4, 60), reset_account_limit=RateLimit(2, 60))
    ann = await world.user("ann@example.com")
    request = RequestPasswordReset(ctx)
    # per (tenant, email): the third request for one address is refused, known account or not
    for email in ("ann@example.com", "nobody@example.com"):
        await request(world.tenant, email, client=f"198.51.100.{len(email)}")
        await request(world.tenant, email, client=f"198.51.100.{len(email) + 100}")
        with pytest.raises(TooManyAttempts) as refused:
            await request(world.tenant, email, client="198.51.100.200")
        assert 55 < refused.value.retry_after <= 60
    # per address: the fifth request from A is refused, whatever it asks for
    for i in range(4):
        await request(world.tenant, f"user{i}@example.com", client=A)
    with pytest.raises(TooManyAttempts):
        await request(world.tenant, "someone-else@example.com", client=A)
    await request(world.tenant, "someone-else@example.com", client=B)
    async with world.engine.connect() as conn:
        tokens = (await conn.execute(sa.text("SELECT count(*) FROM password_reset_tokens WHERE user_id = :u"),
                                     {"u": ann.id})).scalar_one()
    assert tokens == 2  # the refused third request made no token and queued no mail
    reasons = [(a.outcome, a.reason) for a in await world.audits() if a.method == "password_reset"]
    assert reasons.count(("locked_out", "reset-acct")) == 2 and ("locked_out", "reset") in reasons
