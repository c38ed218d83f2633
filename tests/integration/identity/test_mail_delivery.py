"""Password recovery mail, delivered by the worker (``build_worker`` with LUMINA_SMTP_*) from the
mail outbox to a real SMTP server (aiosmtpd): the link arrives, works once, expires, and does not
bypass the second factor. The relay marks refused mail failed, keeps deferred mail queued, and the
worker says so when delivery is off."""

from __future__ import annotations

import asyncio
import re
import socket
import uuid
from collections.abc import AsyncIterator, Iterator
from email import message_from_bytes, policy

import pyotp
import pytest
import sqlalchemy as sa
import structlog
from aiosmtpd.controller import Controller
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from adapters.identity import SmtpMailSender
from adapters.nats import JetStreamBus
from adapters.postgres import create_engine
from adapters.postgres.migrate import upgrade
from api.bootstrap import build_worker
from api.settings import load_settings
from application.identity import (
    BeginTotpEnrolment,
    ConfirmTotpEnrolment,
    CreateTenant,
    DeliverMail,
    IdentityContext,
    PasswordLogin,
    RegisterUser,
    RequestPasswordReset,
    ResetPassword,
    ResolveSession,
    VerifySecondFactor,
)
from application.identity.ports import MailMessage
from domain.errors import Unavailable
from domain.identity import InvalidCredentials, SecondFactorRequired
from tests.harness.jetstream import JetStreamNames
from tests.harness.services import TestServices
from tests.integration.identity.conftest import PASSWORD, MovableClock, make_ctx

NEW_PASSWORD = "amber-kestrel-window-77"


class Inbox:
    """aiosmtpd handler: keeps what it accepts; refuses bounce@ for good (550), defers later@ (451)."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.arrived = asyncio.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.startswith("bounce@"):
            return "550 5.1.1 no such user"
        if address.startswith("later@"):
            return "451 4.3.0 try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(envelope.content)
        self.arrived.set()
        return "250 OK"

    async def next_link(self, timeout: float = 15.0) -> str:
        await asyncio.wait_for(self.arrived.wait(), timeout)
        self.arrived.clear()
        mail = message_from_bytes(self.messages[-1], policy=policy.default)
        match = re.search(r"token=([A-Za-z0-9_-]+)", mail.get_content())
        assert match is not None and mail["Subject"] == "Reset your Lumina password"
        return match.group(1)


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, int]]:
    inbox = Inbox()
    with socket.socket() as probe:  # a free loopback port (aiosmtpd's ready check cannot use 0)
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


@pytest.fixture
def mail_database_url(services: TestServices) -> Iterator[str]:
    """A database of its own: the worker relays every unsent outbox row it finds."""
    url = services.create_database("lumina_mail")
    upgrade(url)
    yield url
    services.drop_database(url)


@pytest.fixture
async def mail_engine(mail_database_url: str) -> AsyncIterator[AsyncEngine]:
    engine = create_engine(mail_database_url, pool_size=4)
    yield engine
    await engine.dispose()


@pytest.fixture
async def ctx(mail_engine: AsyncEngine, redis_url: str) -> AsyncIterator[IdentityContext]:
    redis = Redis.from_url(redis_url)
    yield make_ctx(mail_engine, redis, MovableClock(), f"lumina-test:{uuid.uuid4().hex[:8]}")
    await redis.aclose()


async def test_worker_mails_the_reset_link_which_works_once_and_keeps_mfa(
    ctx: IdentityContext, smtp: tuple[Inbox, int], mail_database_url: str, mail_engine: AsyncEngine,
    nats_url: str, js_names: JetStreamNames, tmp_path,
) -> None:
    inbox, port = smtp
    clock: MovableClock = ctx.clock  # type: ignore[assignment]
    tenant = js_names.tenant  # audit events relayed by the worker land on this test's stream
    await CreateTenant(ctx)(tenant, "Mail")
    user = await RegisterUser(ctx)(tenant, "ann@example.com", "Ann", PASSWORD)
    session = await PasswordLogin(ctx)(tenant, "ann@example.com", PASSWORD)
    enrolment = await BeginTotpEnrolment(ctx)(session.token)
    await ConfirmTotpEnrolment(ctx)(session.token, pyotp.TOTP(enrolment.secret).at(clock.now()))
    settings = load_settings({}, database_url=mail_database_url, nats_url=nats_url, smtp_host="127.0.0.1",
                             smtp_port=port, smtp_from="lumina@test.example", data_dir=str(tmp_path),
                             outbox_poll_interval=0.05)
    bus = await JetStreamBus.connect(nats_url, stream=js_names.stream, subjects=js_names.subjects)
    worker = await build_worker(settings, bus=bus)
    stop = asyncio.Event()
    running = asyncio.create_task(worker.run(stop))
    try:
        await RequestPasswordReset(ctx)(tenant, "ann@example.com")
        token = await inbox.next_link()
        mail = message_from_bytes(inbox.messages[-1], policy=policy.default)
        assert (mail["To"], mail["From"]) == ("ann@example.com", "lumina@test.example")
        for _ in range(100):  # the worker marks it sent just after the server took it
            async with mail_engine.connect() as conn:
                row = (await conn.execute(sa.text("SELECT body, sent_at, error FROM mail_outbox"))).one()
            if row.sent_at is not None:
                break
            await asyncio.sleep(0.05)
        assert row.sent_at is not None and row.body == "" and row.error is None  # wiped once sent

        reset = ResetPassword(ctx)
        await reset(token, NEW_PASSWORD)
        with pytest.raises(InvalidCredentials):  # single use
            await reset(token, "another-fine-passphrase-9")
        async with ctx.uow() as uow:
            reloaded = await uow.users.get(tenant, user.id)
        assert reloaded is not None and reloaded.email_verified  # the mailbox was proven

        # recovery does not bypass MFA: the new password opens only a pending session
        clock.advance(seconds=60)
        pending = await PasswordLogin(ctx)(tenant, "ann@example.com", NEW_PASSWORD)
        assert pending.pending_second_factor
        with pytest.raises(SecondFactorRequired):
            await ResolveSession(ctx)(pending.token)
        full = await VerifySecondFactor(ctx)(pending.token, pyotp.TOTP(enrolment.secret).at(clock.now()))
        assert full.session.assurance_level == 2

        # an expired link fails
        await RequestPasswordReset(ctx)(tenant, "ann@example.com")
        late = await inbox.next_link()
        clock.advance(minutes=16)
        with pytest.raises(InvalidCredentials):
            await reset(late, "another-fine-passphrase-9")
    finally:
        stop.set()
        await asyncio.wait_for(running, 10)
        await worker.close()
    assert len(inbox.messages) == 2


async def test_refused_mail_leaves_the_queue_and_deferred_mail_stays(
    ctx: IdentityContext, smtp: tuple[Inbox, int], mail_engine: AsyncEngine
) -> None:
    inbox, port = smtp
    async with ctx.uow() as uow:
        for to in ("bounce@example.com", "ok@example.com"):
            await uow.mail.add(MailMessage(id=uuid.uuid4().hex, to=to, subject="s", body="secret-link"))
        await uow.commit()
    deliver = DeliverMail(ctx, SmtpMailSender("127.0.0.1", port, "lumina@test.example"))
    assert await deliver() == 1
    async with mail_engine.connect() as conn:
        rows = {r.recipient: r for r in await conn.execute(sa.text("SELECT recipient, body, sent_at, error FROM mail_outbox"))}
    assert rows["bounce@example.com"].error.endswith("recipient refused ([550])")
    assert rows["bounce@example.com"].body == "" and rows["bounce@example.com"].sent_at is not None
    assert len(inbox.messages) == 1

    async with ctx.uow() as uow:
        await uow.mail.add(MailMessage(id=uuid.uuid4().hex, to="later@example.com", subject="s", body="b"))
        await uow.commit()
    with pytest.raises(Unavailable, match=r"deferred \(\[451\]\)"):
        await deliver()
    async with mail_engine.connect() as conn:
        waiting = (await conn.execute(sa.text("SELECT count(*) FROM mail_outbox WHERE sent_at IS NULL"))).scalar_one()
    assert waiting == 1  # tried again on the next run


async def test_delivery_is_off_without_an_smtp_host(mail_database_url: str, nats_url: str, js_names: JetStreamNames) -> None:
    settings = load_settings({}, database_url=mail_database_url, nats_url=nats_url)
    bus = await JetStreamBus.connect(nats_url, stream=js_names.stream, subjects=js_names.subjects)
    with structlog.testing.capture_logs() as logs:
        worker = await build_worker(settings, bus=bus)
    try:
        assert worker.worker._deliver_mail is None
        assert any(e["event"].startswith("mail delivery off: LUMINA_SMTP_HOST is not set") for e in logs)
    finally:
        await worker.close()
