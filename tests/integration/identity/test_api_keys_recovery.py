"""API keys; password recovery through the mail outbox to a real SMTP server (aiosmtpd);
the identity schema matches its table metadata."""

from __future__ import annotations

import asyncio
import re
import socket
from collections.abc import AsyncIterator
from datetime import timedelta
from email import message_from_bytes, policy

import pyotp
import pytest
import sqlalchemy as sa
from aiosmtpd.controller import Controller
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from adapters.identity import SmtpMailSender
from adapters.postgres import identity_tables
from adapters.postgres.tables import metadata
from application.identity import (
    AuthenticateApiKey,
    BeginTotpEnrolment,
    ConfirmTotpEnrolment,
    CreateApiKey,
    DeliverMail,
    ListApiKeys,
    PasswordLogin,
    RequestPasswordReset,
    ResetPassword,
    ResolveSession,
    RevokeApiKey,
    VerifySecondFactor,
)
from domain.identity import Forbidden, InvalidCredentials, PrincipalKind, Role, SessionExpired, WeakPassword
from tests.integration.identity.conftest import PASSWORD, World


async def _principal(world: World, email: str):
    return await ResolveSession(world.ctx)((await PasswordLogin(world.ctx)(world.tenant, email, PASSWORD)).token)


async def test_api_key_lifecycle(world: World) -> None:
    user = await world.user()
    await world.user("admin@example.com", role=Role.ADMIN)
    ann = await _principal(world, "ann@example.com")
    created = await CreateApiKey(world.ctx)(ann, "ci")
    assert re.fullmatch(r"lum_[a-z0-9]{12}_[A-Za-z0-9_-]{43}", created.raw)
    assert created.raw.split("_", 2)[2] not in created.key.secret_hash
    auth = AuthenticateApiKey(world.ctx)
    principal = await auth(created.raw, client="10.0.0.5")
    assert (principal.tenant_id, principal.user_id, principal.kind, principal.credential_id) == (
        world.tenant, user.id, PrincipalKind.API_KEY, created.key.id)
    [listed] = await ListApiKeys(world.ctx)(ann)
    assert listed.last_used_at == world.clock.now()
    prefix = created.key.prefix
    wrong = [created.raw[:-1] + ("A" if created.raw[-1] != "A" else "B"), f"lum_zzzzzzzzzzzz_{'x' * 43}", "Bearer nonsense", ""]
    for raw in wrong:
        with pytest.raises(InvalidCredentials) as err:
            await auth(raw)
        assert str(err.value) == "invalid credentials"
    expiring = await CreateApiKey(world.ctx)(ann, "short", expires_at=world.clock.now() + timedelta(hours=1))
    await auth(expiring.raw)
    world.clock.advance(hours=2)
    with pytest.raises(InvalidCredentials):
        await auth(expiring.raw)
    admin = await _principal(world, "admin@example.com")
    with pytest.raises(Forbidden):
        await CreateApiKey(world.ctx)(ann, "for admin", user_id=admin.user_id)
    assert await RevokeApiKey(world.ctx)(admin, created.key.id)  # an admin may revoke anyone's
    with pytest.raises(InvalidCredentials):
        await auth(created.raw)
    reasons = [a.reason for a in await world.audits() if a.method == "api_key" and a.outcome == "failed"]
    assert reasons == ["wrong secret", "expired", "revoked"] and prefix


class _Inbox:
    def __init__(self) -> None:
        self.messages: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd hook name
        self.messages.append(envelope.content)
        return "250 OK"


@pytest.fixture
async def smtp() -> AsyncIterator[tuple[_Inbox, int]]:
    inbox = _Inbox()
    with socket.socket() as probe:  # a free loopback port (aiosmtpd's ready check cannot use 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def test_password_reset_by_mail_is_single_use_and_keeps_mfa(world: World, smtp) -> None:
    inbox, port = smtp
    await world.user()
    # enrol TOTP first: recovery must not bypass it
    session = await PasswordLogin(world.ctx)(world.tenant, "ann@example.com", PASSWORD)
    enrolment = await BeginTotpEnrolment(world.ctx)(session.token)
    enrolled = await ConfirmTotpEnrolment(world.ctx)(session.token, pyotp.TOTP(enrolment.secret).at(world.clock.now()))
    request = RequestPasswordReset(world.ctx)
    assert await request(world.tenant, "nobody@example.com") is None  # same answer, no mail
    assert await request(world.tenant, "ann@example.com") is None
    sender = SmtpMailSender("127.0.0.1", port, "lumina@localhost")
    assert await DeliverMail(world.ctx, sender)() == 1
    assert await DeliverMail(world.ctx, sender)() == 0
    [raw] = inbox.messages
    mail = message_from_bytes(raw, policy=policy.default)
    assert mail["To"] == "ann@example.com"
    token = re.search(r"token=([A-Za-z0-9_-]+)", mail.get_content()).group(1)
    async with world.engine.connect() as conn:
        bodies = (await conn.execute(sa.text("SELECT body FROM mail_outbox WHERE recipient = 'ann@example.com'"))).all()
        hashes = (await conn.execute(sa.text("SELECT token_hash FROM password_reset_tokens"))).scalars().all()
    assert all(token not in b.body for b in bodies) and token not in hashes  # wiped once sent; stored hashed
    reset = ResetPassword(world.ctx)
    with pytest.raises(WeakPassword):  # a weak choice leaves the token usable
        await reset(token, "password")
    await reset(token, "amber-kestrel-window-77")
    with pytest.raises(InvalidCredentials):  # single use
        await reset(token, "another-fine-passphrase-9")
    with pytest.raises(SessionExpired):  # every session ended
        await ResolveSession(world.ctx)(enrolled.session.token)
    after = await PasswordLogin(world.ctx)(world.tenant, "ann@example.com", "amber-kestrel-window-77")
    assert after.pending_second_factor  # still needs the second factor
    world.clock.advance(seconds=60)
    await VerifySecondFactor(world.ctx)(after.token, pyotp.TOTP(enrolment.secret).at(world.clock.now()))
    # an expired token fails
    await request(world.tenant, "ann@example.com")
    await DeliverMail(world.ctx, sender)()
    token2 = re.search(r"token=([A-Za-z0-9_-]+)", message_from_bytes(inbox.messages[-1], policy=policy.default).get_content()).group(1)
    world.clock.advance(minutes=16)
    with pytest.raises(InvalidCredentials):
        await reset(token2, "another-fine-passphrase-9")
    outcomes = [(a.method, a.outcome) for a in await world.audits() if a.method == "password_reset"]
    # failed resets name no account, so they are audited under the "unknown" tenant
    assert outcomes.count(("password_reset", "requested")) == 3 and ("password_reset", "succeeded") in outcomes


async def test_identity_schema_matches_its_tables(database_url: str) -> None:
    from sqlalchemy import pool
    from sqlalchemy.ext.asyncio import create_async_engine

    assert identity_tables.users.metadata is metadata
    engine = create_async_engine(database_url, poolclass=pool.NullPool)
    try:
        async with engine.connect() as conn:
            diff = await conn.run_sync(
                lambda c: compare_metadata(MigrationContext.configure(c, opts={"compare_type": True}), metadata)
            )
    finally:
        await engine.dispose()
    ours = {getattr(identity_tables, name).name for name in identity_tables.__all__}
    assert ours <= {t.name for t in metadata.sorted_tables}
    # Only drift on the identity tables is ours to judge (other rooms add tables of their own).
    assert [d for d in diff if any(f"'{name}'" in repr(d) or f"table={name}" in repr(d) for name in ours)] == []
    await asyncio.sleep(0)


async def test_principals_carry_the_teams_their_user_is_in(world: World) -> None:
    """Team budgets and rate limits apply through the principal's team ids (API key and session)."""
    from application.identity import CreateTeam, SetRole

    ann = await world.user()
    await world.user("admin@example.com", role=Role.ADMIN)
    admin = await _principal(world, "admin@example.com")
    team = await CreateTeam(world.ctx)(admin, "research")
    before = await _principal(world, "ann@example.com")
    assert before.team_ids == ()
    await SetRole(world.ctx)(admin, ann.id, Role.MEMBER, team.id)
    created = await CreateApiKey(world.ctx)(await _principal(world, "ann@example.com"), "ci")
    by_key = await AuthenticateApiKey(world.ctx)(created.raw)
    by_session = await _principal(world, "ann@example.com")
    assert by_key.team_ids == by_session.team_ids == (team.id,)
    assert by_key.role is Role.MEMBER  # a team membership does not change the tenant role
