"""The account page's passkeys over HTTP against the real backend (tests/web/conftest.py), with a
software authenticator speaking for the browser: the list shows each passkey's name, when it was
added and last used; "Remove" deletes one; removal needs a recent second factor, and an
organisation that requires MFA keeps the user's last second factor."""

from __future__ import annotations

import json
import re

import pytest
import sqlalchemy as sa

from domain.identity import TenantPolicy
from tests.unit.identity.soft_authenticator import SoftAuthenticator, b64url
from tests.web.conftest import Account, ConsoleClient, Stack, alerts
from web.account import LAST_FACTOR, STEP_UP

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


async def add_passkey(client: ConsoleClient, device: SoftAuthenticator, name: str) -> None:
    headers = {"X-CSRF-Token": await client.token(), "Accept": "application/json"}
    begun = await client.http.post("/account/passkeys/begin", json={"name": name}, headers=headers)
    assert begun.status_code == 200, begun.text
    response, _ = device.create(json.dumps(begun.json()["options"]))
    done = await client.http.post("/account/passkeys/finish", headers=headers, json={
        "ceremony_id": begun.json()["ceremony_id"], "credential": json.loads(response), "name": name})
    assert done.status_code == 200 and done.json()["redirect"] == "/account?notice=passkey", done.text


def listed(html: str) -> list[tuple[str, str]]:
    """(name, last used) of each passkey the account page lists."""
    return re.findall(r'class="passkey-name">([^<]*)</strong>.*?class="passkey-used">([^<]*)</span>', html, re.S)


async def remove(client: ConsoleClient, device: SoftAuthenticator, index: int):  # type: ignore[no-untyped-def]
    passkey_id = b64url(device.credentials[index].credential_id)
    return await client.submit(f"/account/passkeys/{passkey_id}/delete", {})


async def set_second_factor_age(stack: Stack, account: Account, interval: str) -> None:
    async with stack.engine.begin() as conn:
        await conn.execute(sa.text(
            f"UPDATE auth_sessions SET second_factor_at = now() - interval '{interval}' WHERE tenant_id = :t"),  # noqa: S608
            {"t": account.tenant})


async def test_the_account_page_lists_and_removes_passkeys(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        account = await client.sign_up("pia")
        device = SoftAuthenticator("localhost", stack.console_url)
        await add_passkey(client, device, "work laptop")
        await add_passkey(client, device, "phone <b>")  # names are shown as text
        page = await client.http.get("/account")
        assert listed(page.text) == [("work laptop", "never"), ("phone &lt;b&gt;", "never")]
        assert "2 passkeys registered." in page.text
        assert re.search(r"added \d{4}-\d\d-\d\d \d\d:\d\d UTC", page.text)

        removed = await remove(client, device, 0)
        assert removed.status_code == 303 and removed.headers["location"] == "/account?notice=passkey_removed"
        page = await client.http.get("/account?notice=passkey_removed")
        assert listed(page.text) == [("phone &lt;b&gt;", "never")] and "The passkey is removed." in page.text

        # an hour after the last second factor, removing a factor first asks to confirm it is you
        await set_second_factor_age(stack, account, "1 hour")
        stale = await remove(client, device, 1)
        assert stale.status_code == 403 and STEP_UP in alerts(stale.text) and 'id="step-up"' in stale.text
        assert len(listed(stale.text)) == 1

        # an organisation that requires MFA keeps the last second factor
        await set_second_factor_age(stack, account, "1 second")
        async with stack.backend.identity.ctx.uow() as uow:
            await uow.tenants.set_policy(account.tenant, TenantPolicy(require_mfa=True))
            await uow.commit()
        kept = await remove(client, device, 1)
        assert kept.status_code == 403 and LAST_FACTOR in alerts(kept.text)
        assert len(listed((await client.http.get("/account")).text)) == 1

        # without CSRF token nothing happens
        forged = await client.http.post(f"/account/passkeys/{b64url(device.credentials[1].credential_id)}/delete")
        assert forged.status_code == 403
