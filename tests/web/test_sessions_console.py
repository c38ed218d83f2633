"""The account page's sessions (ASVS V7.5.2: list with dates, factors and "this session"; end any
one) and the enrolment path of a one-factor session whose organisation requires MFA (V6.3.3): the
console against a real backend (Postgres, Redis)."""

from __future__ import annotations

import re

import pyotp
import pytest
import sqlalchemy as sa

from domain.identity import TenantPolicy
from tests.web.conftest import ConsoleClient, Stack, alerts

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


def sessions(html: str) -> list[tuple[str, bool]]:
    """(id, is this session) of each session the account page lists."""
    return [(m.group(1), bool(m.group(2))) for m in re.finditer(r'data-session-id="([^"]+)"( data-current="true")?', html)]


async def test_the_account_page_lists_sessions_and_ends_one_or_this_one(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as first, ConsoleClient(stack.console_url) as second:
        account = await first.sign_up("ses")
        assert (await second.login(account)).status_code == 303
        html = (await first.http.get("/account")).text
        listed = sessions(html)
        assert len(listed) == 2 and [current for _, current in listed].count(True) == 1, listed
        assert "This session" in html and "one factor" in html and "signed in 20" in html and "last seen" in html
        other = next(sid for sid, current in listed if not current)
        ended = await first.submit(f"/account/sessions/{other}/end", {})
        assert ended.status_code == 303 and ended.headers["location"] == "/account?notice=session_ended"
        gone = await second.http.get("/account")  # the other browser is signed out
        assert gone.status_code == 303 and gone.headers["location"].startswith("/login")
        html = (await first.http.get("/account?notice=session_ended")).text
        assert "The session is ended" in html and len(sessions(html)) == 1
        again = await first.submit(f"/account/sessions/{other}/end", {})
        assert again.status_code == 404 and "ended already" in " ".join(alerts(again.text))
        forged = await first.http.post(f"/account/sessions/{sessions(html)[0][0]}/end", data={"csrf_token": "nope"})
        assert forged.status_code == 403  # CSRF protected like every state change
        mine = sessions(html)[0][0]
        out = await first.submit(f"/account/sessions/{mine}/end", {})
        assert out.status_code == 303 and out.headers["location"] == "/login?notice=signed_out"
        assert (await first.http.get("/account")).status_code == 303


async def test_a_one_factor_session_of_an_mfa_organisation_is_sent_to_enrol_and_can(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        account = await client.sign_up("mfa")
        async with stack.backend.identity.ctx.uow() as uow:
            await uow.tenants.set_policy(account.tenant, TenantPolicy(require_mfa=True))
            await uow.commit()
        for path in ("/chat", "/keys"):
            r = await client.http.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/account?notice=mfa_required", path
        page = await client.http.get("/account")
        assert page.status_code == 200
        assert "Your organisation requires a second factor" in page.text and 'id="session-list"' not in page.text
        begun = await client.submit("/account/totp", {})
        assert begun.status_code == 200, alerts(begun.text)
        secret = re.search(r'id="totp-secret">([A-Z2-7]+)<', begun.text)
        assert secret, begun.text[:300]
        done = await client.submit("/account/totp/confirm", {
            "enrolment_id": re.search(r'name="enrolment_id" value="([^"]+)"', begun.text).group(1),  # type: ignore[union-attr]
            "code": pyotp.TOTP(secret.group(1)).now(),
        })
        assert done.status_code == 200 and "recovery" in done.text.lower(), alerts(done.text)
        assert (await client.http.get("/chat")).status_code == 200  # two factors now: the console is open
        assert 'id="session-list"' in (await client.http.get("/account")).text


async def test_a_stale_one_factor_session_signs_in_again_before_its_first_factor(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        account = await client.sign_up("old")
        async with stack.engine.begin() as conn:
            await conn.execute(sa.text(
                "UPDATE auth_sessions SET created_at = created_at - interval '11 minutes' WHERE tenant_id = :t"
            ), {"t": account.tenant})
        assert (await client.http.get("/account")).status_code == 200  # still signed in
        begun = await client.submit("/account/totp", {})
        assert begun.status_code == 303 and begun.headers["location"].startswith("/login"), begun.text[:300]
        assert (await client.login(account)).status_code == 303
        again = await client.submit("/account/totp", {})
        assert again.status_code == 200 and 'id="totp-secret"' in again.text
