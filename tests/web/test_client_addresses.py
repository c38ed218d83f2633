"""Per-browser limits behind the console (tests/web/conftest.py: each ``ConsoleClient`` connects
from a loopback address of its own, as separate browsers would): the console names the browser to
the backend in ``x-forwarded-for`` and the backend, trusting the console (loopback), counts failed
logins, sign-ups and reset requests per browser. One browser guessing passwords locks itself out,
not everyone else; refusals are 429 with Retry-After; audit events name the browser."""

from __future__ import annotations

import asyncio
import uuid

import pytest
import sqlalchemy as sa

from adapters.events_codec import decode_event
from tests.web.conftest import PASSWORD, ConsoleClient, Stack, alerts
from web.auth import BAD_LOGIN, RESET_SENT, TOO_MANY

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


async def audits(stack: Stack, tenant: str) -> list:
    async with stack.engine.connect() as conn:
        rows = await conn.execute(sa.text("SELECT payload FROM outbox WHERE subject = :s ORDER BY id"),
                                  {"s": f"lumina.{tenant}.auth.audited"})
        return [decode_event(r.payload) for r in rows]


async def test_one_browsers_failed_logins_do_not_lock_out_another(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as a, ConsoleClient(stack.console_url) as b:
        assert a.address != b.address
        account = await b.sign_up("bea")
        await b.logout()

        async def guess(i: int) -> None:  # accounts that do not exist: only A's address collects failures
            answer = await a.submit("/login", {"tenant": account.tenant, "email": f"guess-{i}@example.com",
                                               "password": "wrong-password-1", "next": "/chat"})
            assert answer.status_code == 401 and alerts(answer.text) == [BAD_LOGIN], answer.text[:300]

        for i in range(6):  # five free failures, then each one doubles the wait: 1 s, 2 s, 4 s
            await guess(i)
        await asyncio.sleep(1.1)
        await guess(6)
        await asyncio.sleep(2.1)
        await guess(7)  # A now waits 4 s

        locked = await a.login(account)  # even with the right password
        assert locked.status_code == 429 and int(locked.headers["retry-after"]) >= 1
        assert "Too many attempts" in " ".join(alerts(locked.text))
        signed_in = await b.login(account)
        assert signed_in.status_code == 303 and signed_in.headers["location"] == "/chat", alerts(signed_in.text)
        assert b.cookie("lumina_session")

    events = [e for e in await audits(stack, account.tenant) if e.method == "password"]
    assert {e.client_address for e in events if e.outcome == "failed"} == {a.address}
    assert {e.client_address for e in events if e.outcome == "locked_out"} == {a.address}
    assert b.address in {e.client_address for e in events if e.outcome == "succeeded"}


async def test_sign_ups_from_one_browser_are_limited_with_retry_after(stack: Stack) -> None:
    limit = stack.backend.identity.ctx.signup_limit.limit
    bad = {"organisation": "Flood", "email": "not an email", "password": PASSWORD, "confirm": PASSWORD}
    async with ConsoleClient(stack.console_url) as a, ConsoleClient(stack.console_url) as b:
        for _ in range(limit):
            assert (await a.submit("/signup", bad)).status_code == 422
        refused = await a.submit("/signup", bad)
        assert refused.status_code == 429 and 3000 <= int(refused.headers["retry-after"]) <= 3600
        assert TOO_MANY in alerts(refused.text)
        assert (await b.submit("/signup", bad)).status_code == 422  # another browser is not limited
        await b.sign_up("ok")


async def test_reset_requests_are_limited_alike_for_known_and_unknown_accounts(stack: Stack) -> None:
    per_account = stack.backend.identity.ctx.reset_account_limit.limit
    async with ConsoleClient(stack.console_url) as owner:
        account = await owner.sign_up("rita")
    unknown = f"nobody-{uuid.uuid4().hex[:6]}@example.com"
    for email in (account.email, unknown):
        answers = []
        for _ in range(per_account + 1):
            async with ConsoleClient(stack.console_url) as browser:  # a new browser each time: the account counts
                answers.append(await browser.submit("/forgot", {"tenant": account.tenant, "email": email}))
        assert [r.status_code for r in answers] == [200] * per_account + [429], email
        assert all(RESET_SENT in r.text for r in answers[:-1])
        assert TOO_MANY in alerts(answers[-1].text) and int(answers[-1].headers["retry-after"]) >= 1
