"""Signing in through the console in real Chromium against the real backend (tests/web/conftest.py).

Passkeys use Chromium's virtual authenticator (DevTools ``WebAuthn.addVirtualAuthenticator``: a
CTAP2 platform authenticator with resident keys and user verification), so the browser's own
WebAuthn implementation runs navigator.credentials.create()/get() against the backend's relying
party (id ``localhost``, origin ``http://localhost:<port>``). TOTP codes come from pyotp.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pyotp
import pytest
from playwright.async_api import BrowserContext, CDPSession, Page, async_playwright

from tests.e2e.browser import (
    chat_in_console,
    launch_chromium,
    screenshot,
    sign_out,
    sign_up,
)
from tests.web.conftest import MODEL, PASSWORD, Stack

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


@dataclass
class Tab:
    page: Page
    context: BrowserContext
    cdp: CDPSession
    authenticator_id: str
    csp_violations: list[str]

    async def credentials(self) -> list[dict[str, object]]:
        reply = await self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.authenticator_id})
        return list(reply["credentials"])


@pytest.fixture
async def tab(stack: Stack) -> AsyncIterator[Tab]:
    await stack.forget_failures_from_loopback()
    async with async_playwright() as pw:
        browser = await launch_chromium(pw)
        try:
            context = await browser.new_context(viewport={"width": 1100, "height": 760})
            page = await context.new_page()
            cdp = await context.new_cdp_session(page)
            await cdp.send("WebAuthn.enable", {"enableUI": False})
            added = await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
                "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
                "hasUserVerification": True, "isUserVerified": True, "automaticPresenceSimulation": True,
            }})
            violations: list[str] = []
            page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
            yield Tab(page, context, cdp, added["authenticatorId"], violations)
        finally:
            await browser.close()


def new_identity() -> tuple[str, str]:
    tag = uuid.uuid4().hex[:8]
    return f"Passkey Labs {tag}", f"pat-{tag}@example.com"


async def test_sign_up_register_a_passkey_sign_out_and_back_in_with_the_passkey_alone(stack: Stack, tab: Tab) -> None:
    page = tab.page
    organisation, email = new_identity()
    tenant = await sign_up(page, stack.console_url, organisation=organisation, email=email, password=PASSWORD,
                           display_name="Pat")
    assert tenant.startswith("passkey-labs-")
    assert await page.locator("#passkey-count").inner_text() == (
        "No passkey yet. A passkey signs you in without a password, and counts as two factors."
    )

    await page.locator("#passkey-name").fill("virtual authenticator")
    await page.locator("#add-passkey").click()
    await page.wait_for_url("**/account?notice=passkey", timeout=20_000)
    assert (await page.locator("#passkey-count").inner_text()).startswith("1 passkey registered.")
    assert "two factors" in await page.locator("#assurance").inner_text()  # the rotated session
    [credential] = await tab.credentials()
    assert credential["isResidentCredential"] is True and credential["rpId"] == "localhost"
    await screenshot(page, "console-passkey-registered")

    await sign_out(page)
    assert "lumina_session" not in {c["name"] for c in await page.context.cookies()}
    await page.locator("#passkey-login").click()  # no organisation, email or password typed
    await page.wait_for_url("**/chat", timeout=20_000)
    [used] = await tab.credentials()
    assert int(used["signCount"]) > int(credential["signCount"])  # the authenticator really signed

    answer = await chat_in_console(page, stack.console_url, "Hello from a passkey session", model=MODEL)
    assert answer.strip()
    assert "Pat" in await page.locator(".who-am-i").inner_text()
    await screenshot(page, "console-passkey-chat")
    assert tab.csp_violations == []


async def test_a_passkey_completes_a_password_login_as_its_second_factor(stack: Stack, tab: Tab) -> None:
    page = tab.page
    organisation, email = new_identity()
    tenant = await sign_up(page, stack.console_url, organisation=organisation, email=email, password=PASSWORD)
    await page.locator("#add-passkey").click()
    await page.wait_for_url("**/account?notice=passkey", timeout=20_000)
    await sign_out(page)

    # The password alone now leaves the login pending: the verify page offers the passkey.
    await page.locator("#tenant").fill(tenant)
    await page.locator("#email").fill(email)
    await page.locator("#password").fill(PASSWORD)
    await page.locator("#sign-in").click()
    await page.wait_for_url("**/login/verify?next=%2Fchat")
    await page.locator("#passkey-verify").click()
    await page.wait_for_url("**/chat", timeout=20_000)
    await page.goto(stack.console_url + "/account")
    assert "two factors" in await page.locator("#assurance").inner_text()


async def test_totp_enrolment_and_login_through_the_browser(stack: Stack, tab: Tab) -> None:
    page = tab.page
    organisation, email = new_identity()
    tenant = await sign_up(page, stack.console_url, organisation=organisation, email=email, password=PASSWORD)
    await page.locator("#totp-begin").click()  # htmx swaps the QR code in
    await page.locator("#totp-qr").wait_for()
    assert await page.locator("#totp-qr").evaluate("img => img.naturalWidth > 50")  # the SVG rendered under the CSP
    totp = pyotp.TOTP((await page.locator("#totp-secret").inner_text()).strip())
    await page.locator("#totp-code").fill("123")
    await page.locator("#totp-confirm").click()
    await page.get_by_text("That code is not right.").wait_for()
    await page.locator("#totp-code").fill(totp.now())
    await page.locator("#totp-confirm").click()
    await page.locator("#recovery-codes").wait_for()
    codes = await page.locator("#recovery-codes li").all_inner_texts()
    assert len(codes) >= 8
    await screenshot(page, "console-totp-recovery-codes")
    await page.get_by_role("link", name="Done").click()
    assert (await page.locator("#totp-state").inner_text()).startswith("On.")

    await sign_out(page)
    await page.locator("#tenant").fill(tenant)
    await page.locator("#email").fill(email)
    await page.locator("#password").fill(PASSWORD)
    await page.locator("#sign-in").click()
    await page.wait_for_url("**/login/verify?next=%2Fchat")
    await page.locator("#code").fill(totp.at(time.time() + 30))  # the next step's code: the enrolment used this one
    await page.locator("#verify").click()
    await page.wait_for_url("**/chat")
    assert await page.locator("#prompt").is_visible()
    assert tab.csp_violations == []


async def test_the_account_page_lists_a_passkey_and_removes_it(stack: Stack, tab: Tab) -> None:
    page = tab.page
    organisation, email = new_identity()
    await sign_up(page, stack.console_url, organisation=organisation, email=email, password=PASSWORD)
    await page.locator("#passkey-name").fill("virtual key")
    await page.locator("#add-passkey").click()
    await page.wait_for_url("**/account?notice=passkey", timeout=20_000)
    item = page.locator("#passkey-list li")
    assert await item.count() == 1
    assert await item.locator(".passkey-name").inner_text() == "virtual key"
    assert await item.locator(".passkey-used").inner_text() == "never"

    await sign_out(page)
    await page.locator("#passkey-login").click()
    await page.wait_for_url("**/chat", timeout=20_000)
    await page.goto(stack.console_url + "/account")
    assert (await item.locator(".passkey-used").inner_text()).endswith("UTC")  # used just now
    await screenshot(page, "console-passkey-list")

    await item.get_by_role("button", name="Remove the passkey virtual key").click()
    await page.wait_for_url("**/account?notice=passkey_removed")
    assert await page.locator("#passkey-list").count() == 0
    assert (await page.locator("#passkey-count").inner_text()).startswith("No passkey yet.")

    await sign_out(page)
    await page.locator("#passkey-login").click()  # the authenticator still holds it; the server does not
    status = page.locator("#passkey-status")
    await status.get_by_text("The passkey could not sign you in.").wait_for(timeout=20_000)
    assert page.url.split("?")[0].endswith("/login")
    assert tab.csp_violations == []
