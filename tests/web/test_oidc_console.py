"""Single sign-on through the console's own routes (web/oidc.py) against a real OpenID Provider
(npm ``oidc-provider`` on loopback, tests/harness/oidc.py) and the real backend: the sign-in page
offers SSO only to a tenant that has an identity provider; /oidc/start sends the browser to the IdP
with the flow bound to it by a cookie; the IdP's login form is walked like a browser; /oidc/callback
signs in, or sends a user with a second factor to the verify page. A callback URL replayed, or
opened by another browser (login CSRF), or started by another site, signs no one in."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import pytest

from adapters.identity import AuthlibOidcClient
from application.identity import ConfigureOidc
from tests.harness.oidc import OidcAccount, OidcClientRegistration, OidcProviderServer, callback_params, sign_in
from tests.web.conftest import Account, ConsoleClient, Stack, alerts, set_cookie_headers
from tests.web.test_auth import enrol_totp, later_code
from web.oidc import SSO_FAILED, SSO_OFF

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]

CLIENT_ID, CLIENT_SECRET = "lumina-console-web", "web-idp-secret-0123456789-abcdefghijkl"
IDP_PASSWORD = "idp-password-web-9"


@pytest.fixture(scope="module")
def idp(stack: Stack) -> Iterator[OidcProviderServer]:
    registration = OidcClientRegistration(CLIENT_ID, CLIENT_SECRET, (f"{stack.console_url}/oidc/callback",))
    accounts = [OidcAccount("sub-olga", IDP_PASSWORD, email=f"olga-{uuid.uuid4().hex[:6]}@example.com",
                            email_verified=True, name="Olga")]
    with OidcProviderServer(clients=[registration], accounts=accounts) as server:
        yield server


async def sso_tenant(stack: Stack, idp: OidcProviderServer) -> Account:
    """An organisation signed up through the console whose owner sets up its IdP (just-in-time users)."""
    async with ConsoleClient(stack.console_url) as owner:
        account = await owner.sign_up("owner")
    await ConfigureOidc(stack.backend.identity.ctx, AuthlibOidcClient())(
        account.tenant, issuer=idp.issuer, client_id=CLIENT_ID, client_secret=CLIENT_SECRET,
        redirect_uris=(f"{stack.console_url}/oidc/callback",), jit_users=True,
    )
    return account


async def start(client: ConsoleClient, tenant: str, next_path: str = "/chat") -> str:
    """/oidc/start: the IdP's authorization URL the console sends the browser to."""
    answer = await client.http.get("/oidc/start", params={"tenant": tenant, "next": next_path})
    assert answer.status_code == 303, alerts(answer.text) or answer.text[:300]
    return answer.headers["location"]


def local(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.path}?{parts.query}"


async def test_sso_sign_in_through_the_console(stack: Stack, idp: OidcProviderServer) -> None:
    account = await sso_tenant(stack, idp)
    callback = f"{stack.console_url}/oidc/callback"
    async with ConsoleClient(stack.console_url) as browser, ConsoleClient(stack.console_url) as other:
        page = await browser.http.get("/login", params={"tenant": account.tenant})
        assert 'id="sso-login"' in page.text
        assert f'href="/oidc/start?tenant={account.tenant}&amp;next=%2Fchat"' in page.text
        plain = await browser.http.get("/login", params={"tenant": f"no-sso-{uuid.uuid4().hex[:6]}"})
        assert 'id="sso-login"' not in plain.text

        answer = await browser.http.get("/oidc/start", params={"tenant": account.tenant, "next": "/keys"})
        assert answer.status_code == 303
        authorization = answer.headers["location"]
        query = parse_qs(urlsplit(authorization).query)
        assert authorization.startswith(idp.issuer + "/auth?") and query["redirect_uri"] == [callback]
        [flow_cookie] = set_cookie_headers(answer, "lumina_oidc")
        flags = [part.strip().lower() for part in flow_cookie.split(";")]
        assert "httponly" in flags and "path=/oidc" in flags and "samesite=lax" in flags

        back = await sign_in(authorization, login="sub-olga", password=IDP_PASSWORD, redirect_uri=callback)
        assert callback_params(back)["state"] == query["state"][0]

        # another browser opening this callback (a login CSRF), with or without a flow of its own,
        # gets nothing, and spends nothing
        forged = await other.http.get(local(back))
        assert forged.status_code == 401 and SSO_FAILED in alerts(forged.text)
        await start(other, account.tenant)
        forged = await other.http.get(local(back))
        assert forged.status_code == 401 and SSO_FAILED in alerts(forged.text) and other.cookie("lumina_session") is None

        done = await browser.http.get(local(back))
        assert done.status_code == 303 and done.headers["location"] == "/keys", alerts(done.text)
        assert browser.cookie("lumina_session") and browser.cookie("lumina_oidc") is None
        me = await browser.http.get("/account")
        assert me.status_code == 200 and "Olga" in me.text and f"<code id=\"profile-tenant\">{account.tenant}" in me.text

        replayed = await browser.http.get(local(back))  # the flow is over: its cookie is gone, its state used
        assert replayed.status_code == 401 and SSO_FAILED in alerts(replayed.text)


async def test_sso_with_a_second_factor_goes_through_the_verify_page(stack: Stack, idp: OidcProviderServer) -> None:
    account = await sso_tenant(stack, idp)
    callback = f"{stack.console_url}/oidc/callback"
    async with ConsoleClient(stack.console_url) as browser:
        first = await sign_in(await start(browser, account.tenant), login="sub-olga", password=IDP_PASSWORD,
                              redirect_uri=callback)
        assert (await browser.http.get(local(first))).status_code == 303
        totp, _ = await enrol_totp(browser)
        await browser.logout()

        again = await sign_in(await start(browser, account.tenant, "/keys"), login="sub-olga", password=IDP_PASSWORD,
                              redirect_uri=callback)
        pending = await browser.http.get(local(again))
        assert pending.status_code == 303 and pending.headers["location"] == "/login/verify?next=%2Fkeys"
        assert browser.cookie("lumina_pending") and browser.cookie("lumina_session") is None
        assert (await browser.http.get("/keys")).status_code == 303  # not signed in yet
        verified = await browser.submit("/login/verify", {"code": later_code(totp), "next": "/keys"})
        assert verified.status_code == 303 and verified.headers["location"] == "/keys", alerts(verified.text)
        assert (await browser.http.get("/keys")).status_code == 200


async def test_sso_refusals(stack: Stack, idp: OidcProviderServer) -> None:
    account = await sso_tenant(stack, idp)
    async with ConsoleClient(stack.console_url) as browser:
        # started by another site: the user decides on the sign-in page
        cross = await browser.http.get("/oidc/start", params={"tenant": account.tenant, "next": "/keys"},
                                       headers={"Sec-Fetch-Site": "cross-site"})
        assert cross.status_code == 303 and cross.headers["location"] == f"/login?tenant={account.tenant}&next=%2Fkeys"
        assert browser.cookie("lumina_oidc") is None
        # the IdP answers with an error (the user cancelled)
        await start(browser, account.tenant)
        cancelled = await browser.http.get("/oidc/callback", params={"error": "access_denied", "state": "x"})
        assert cancelled.status_code == 401 and SSO_FAILED in alerts(cancelled.text)
        # a state that is not this browser's
        await start(browser, account.tenant)
        wrong = await browser.http.get("/oidc/callback", params={"state": "not-the-state", "code": "abc"})
        assert wrong.status_code == 401 and SSO_FAILED in alerts(wrong.text)
        # a tenant without an identity provider
        off = await browser.http.get("/oidc/start", params={"tenant": f"plain-{uuid.uuid4().hex[:6]}"})
        assert off.status_code == 404 and SSO_OFF in alerts(off.text)
        assert browser.cookie("lumina_session") is None
