"""The console's identity pages over HTTP against a real backend (tests/web/conftest.py): sign-up,
login with the TOTP step, uniform errors, CSRF, cookie flags, logout, password change, recovery
and API keys. Codes come from pyotp with the secret the enrolment shows."""

from __future__ import annotations

import re
import time

import grpc
import pyotp
import pytest

from lumina.v1 import auth_pb2, auth_pb2_grpc
from tests.web.conftest import (
    PASSWORD,
    Account,
    ConsoleClient,
    Stack,
    alerts,
    csrf_of,
    set_cookie_headers,
)
from web.auth import BAD_CODE, BAD_LOGIN, RESET_SENT
from web.server import running_console

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(120)]


@pytest.fixture(autouse=True)
async def fresh_limits(stack: Stack) -> None:
    await stack.forget_failures_from_loopback()


async def enrol_totp(client: ConsoleClient) -> tuple[pyotp.TOTP, list[str]]:
    """Turn the authenticator app on from the account page, as htmx does; (totp, recovery codes)."""
    htmx = {"HX-Request": "true", "X-CSRF-Token": await client.token()}
    begun = await client.http.post("/account/totp", headers=htmx)
    assert begun.status_code == 200, begun.text
    secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', begun.text)
    assert secret and 'src="data:image/svg+xml;base64,' in begun.text  # the QR code, as an image
    enrolment_id = re.search(r'name="enrolment_id" value="([^"]+)"', begun.text)
    assert enrolment_id
    totp = pyotp.TOTP(secret.group(1))
    confirmed = await client.http.post(
        "/account/totp/confirm", data={"enrolment_id": enrolment_id.group(1), "code": totp.now()}, headers=htmx
    )
    assert confirmed.status_code == 200, confirmed.text
    codes = re.findall(r"<li><code>([^<]+)</code></li>", confirmed.text)
    assert "shown only this once" in confirmed.text
    return totp, codes


def later_code(totp: pyotp.TOTP, steps: int = 1) -> str:
    """The code of a later time step (the backend accepts ±1 step; each step's code once)."""
    return totp.at(time.time() + 30 * steps)


async def grpc_whoami(stack: Stack, credential: str) -> auth_pb2.Principal:
    async with grpc.aio.insecure_channel(stack.grpc_target) as channel:
        reply = await auth_pb2_grpc.AuthServiceStub(channel).WhoAmI(
            auth_pb2.WhoAmIRequest(), metadata=(("authorization", f"Bearer {credential}"),)
        )
    return reply.principal


# --- sign-up and the session cookie -----------------------------------------------------------


async def test_sign_up_signs_in_with_a_hardened_session_cookie(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        await client.http.get("/login")
        csrf_before = client.cookie("lumina_csrf")
        response = await client.submit("/signup", {
            "organisation": "Cookie Check", "email": "cookie-check@example.com".replace("@", f"-{time.time_ns()}@"),
            "display_name": "Cora", "password": PASSWORD, "confirm": PASSWORD,
        })
        assert response.status_code == 303 and response.headers["location"] == "/account?notice=welcome"
        [session] = set_cookie_headers(response, "lumina_session")
        flags = [part.strip().lower() for part in session.split(";")]
        assert "httponly" in flags and "samesite=lax" in flags and "path=/" in flags
        assert "secure" not in flags  # served over plain http here
        token = client.cookie("lumina_session")
        assert token and len(token) >= 32
        assert client.cookie("lumina_csrf") != csrf_before  # the CSRF nonce rotates with the sign-in

        account = await client.http.get("/account?notice=welcome")
        assert account.status_code == 200
        assert "Cora" in account.text and "Welcome to Lumina" in account.text
        principal = await grpc_whoami(stack, token)  # the cookie holds the backend's own session
        assert principal.display_name == "Cora" and principal.kind == "user" and principal.role == "owner"
        assert f'<code id="profile-tenant">{principal.tenant_id}</code>' in account.text
        chat = await client.http.get("/chat")
        assert chat.status_code == 200 and 'id="prompt"' in chat.text


async def test_sign_up_shows_the_backends_field_errors(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        weak = await client.submit("/signup", {
            "organisation": "Weak Co", "email": f"weak-{time.time_ns()}@example.com", "password": "password1",
            "confirm": "password1",
        })
        differ = await client.submit("/signup", {
            "organisation": "Weak Co", "email": "x@example.com", "password": PASSWORD, "confirm": PASSWORD + "x",
        })
    assert weak.status_code == 422 and 'id="password-error"' in weak.text and 'aria-invalid="true"' in weak.text
    assert client.cookie("lumina_session") is None
    assert differ.status_code == 400 and "The two passwords differ." in differ.text


async def test_console_pages_send_the_signed_out_to_login_and_back(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        for path in ("/chat", "/account", "/keys"):
            response = await client.http.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"].startswith("/login"), path
        assert (await client.http.get("/chat")).headers["location"] == "/login?next=%2Fchat"
        htmx = await client.http.post(
            "/chat", data={"prompt": "hi"}, headers={"HX-Request": "true", "X-CSRF-Token": await client.token()}
        )
        assert htmx.status_code == 401 and htmx.headers["HX-Redirect"] == "/login"
        # A cookie the backend does not know: dropped on the way to the login page.
        client.http.cookies.set("lumina_session", "forged-token-" + "x" * 40)
        forged = await client.http.get("/account")
        assert forged.status_code == 303 and forged.headers["location"].startswith("/login")
        assert any("Max-Age=0" in c or "expires=" in c.lower() for c in set_cookie_headers(forged, "lumina_session"))
        # and signing in goes back where the visitor wanted to go
        account = await client.sign_up()
        await client.logout()
        login = await client.submit("/login", {"tenant": account.tenant, "email": account.email,
                                               "password": PASSWORD, "next": "/keys"})
        assert login.status_code == 303 and login.headers["location"] == "/keys"
        off_site = await client.submit("/login", {"tenant": account.tenant, "email": account.email,
                                                  "password": PASSWORD, "next": "//evil.example/x"})
        assert off_site.headers["location"] == "/chat"  # never to another site


# --- login ------------------------------------------------------------------------------------


async def test_wrong_password_unknown_email_and_unknown_organisation_answer_alike(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        account = await client.sign_up()
        await client.logout()
        answers = [
            await client.login(account, password="not-the-password-at-all"),
            await client.login(Account(account.organisation, account.tenant, "nobody@example.com")),
            await client.login(Account(account.organisation, "no-such-organisation-zz", account.email)),
        ]
        for response in answers:
            assert response.status_code == 401
            assert alerts(response.text) == [BAD_LOGIN]
            assert not set_cookie_headers(response, "lumina_session")
        assert client.cookie("lumina_session") is None
        assert answers[0].text.replace(account.email, "E") == answers[1].text.replace("nobody@example.com", "E")
        ok = await client.login(account)
        assert ok.status_code == 303 and client.cookie("lumina_session")


async def test_login_with_the_totp_step_and_a_recovery_code(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        account = await client.sign_up()
        before = client.cookie("lumina_session")
        totp, codes = await enrol_totp(client)
        assert len(codes) >= 8 and len(set(codes)) == len(codes)
        rotated = client.cookie("lumina_session")
        assert rotated and rotated != before  # a new factor rotates the session
        with pytest.raises(grpc.aio.AioRpcError):
            await grpc_whoami(stack, before or "")  # the old token is dead
        page = await client.http.get("/account")
        assert 'id="totp-state">On.' in page.text

        await client.logout()
        login = await client.login(account)
        assert login.status_code == 303 and login.headers["location"] == "/login/verify?next=%2Fchat"
        [pending] = set_cookie_headers(login, "lumina_pending")
        assert "path=/login" in pending.lower() and "httponly" in pending.lower()
        assert client.cookie("lumina_session") is None
        assert (await client.http.get("/chat")).status_code == 303  # a pending login is not a session

        verify_page = await client.http.get("/login/verify?next=%2Fchat")
        assert 'autocomplete="one-time-code"' in verify_page.text
        wrong = await client.submit("/login/verify", {"code": "000000", "next": "/chat"})
        assert wrong.status_code == 401 and alerts(wrong.text) == [BAD_CODE]
        code = later_code(totp)
        done = await client.submit("/login/verify", {"code": code, "next": "/chat"})
        assert done.status_code == 303 and done.headers["location"] == "/chat"
        assert client.cookie("lumina_session") and client.cookie("lumina_pending") is None
        principal = await grpc_whoami(stack, client.cookie("lumina_session") or "")
        assert principal.assurance_level == 2
        assert (await client.http.get("/chat")).status_code == 200

        # The same code again, in a new login: refused (each code works once).
        await client.logout()
        await client.login(account)
        replay = await client.submit("/login/verify", {"code": code, "next": "/chat"})
        assert replay.status_code == 401 and alerts(replay.text) == [BAD_CODE]
        # A recovery code works, once.
        recovered = await client.submit("/login/verify", {"code": codes[0], "next": "/account"})
        assert recovered.status_code == 303 and recovered.headers["location"] == "/account"
        await client.logout()
        await client.login(account)
        again = await client.submit("/login/verify", {"code": codes[0], "next": "/chat"})
        assert again.status_code == 401


async def test_step_up_with_a_code_rotates_the_session(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        await client.sign_up()
        totp, _ = await enrol_totp(client)
        page = await client.http.get("/account")
        assert 'id="step-up"' in page.text  # offered once the account has a second factor
        before = client.cookie("lumina_session")
        wrong = await client.submit("/account/verify", {"code": "000000"})
        assert wrong.status_code == 401 and BAD_CODE in alerts(wrong.text)
        done = await client.submit("/account/verify", {"code": later_code(totp)})
        assert done.status_code == 303 and done.headers["location"] == "/account?notice=verified"
        assert client.cookie("lumina_session") not in (None, before)
        assert "Confirmed" in (await client.http.get("/account?notice=verified")).text


async def test_totp_enrolment_works_without_javascript(stack: Stack) -> None:
    """The same forms posted as plain HTML (no htmx): whole pages come back."""
    async with ConsoleClient(stack.console_url) as client:
        await client.sign_up()
        begun = await client.submit("/account/totp", {})
        assert begun.status_code == 200 and "<h1>Account</h1>" in begun.text and 'id="totp-qr"' in begun.text
        secret = re.search(r'<code id="totp-secret">([A-Z2-7]+)</code>', begun.text)
        enrolment_id = re.search(r'name="enrolment_id" value="([^"]+)"', begun.text)
        assert secret and enrolment_id
        wrong = await client.submit("/account/totp/confirm", {"enrolment_id": enrolment_id.group(1), "code": "12"})
        assert wrong.status_code == 401 and "That code is not right." in wrong.text and 'id="totp-qr"' not in wrong.text
        done = await client.submit(
            "/account/totp/confirm", {"enrolment_id": enrolment_id.group(1), "code": pyotp.TOTP(secret.group(1)).now()}
        )
        assert done.status_code == 200 and "<h1>Account</h1>" in done.text
        assert len(re.findall(r"<li><code>([^<]+)</code></li>", done.text)) >= 8
        assert set_cookie_headers(done, "lumina_session")  # rotated with the new factor
        assert 'id="totp-state">On.' in (await client.http.get("/account")).text


# --- CSRF, headers, cookies -------------------------------------------------------------------


async def test_state_changing_requests_without_the_right_csrf_token_are_refused(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        account = await client.sign_up()
        stale = await client.token()
        missing = await client.http.post("/keys", data={"name": "sneaky", "expires": "30"})
        wrong = await client.http.post("/keys", data={"name": "sneaky", "expires": "30", "csrf_token": "0" * 64})
        foreign = await client.http.post(
            "/keys", data={"name": "sneaky", "expires": "30", "csrf_token": stale},
            headers={"Origin": "https://evil.example"},
        )
        cross_site = await client.http.post(
            "/keys", data={"name": "sneaky", "expires": "30", "csrf_token": stale}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        json_without = await client.http.post("/account/passkeys/begin", json={"name": "x"})
        logout_without = await client.http.post("/logout")
        for response in (missing, wrong, foreign, cross_site, json_without, logout_without):
            assert response.status_code == 403
            assert "Reload the page" in response.text
        keys = await client.http.get("/keys")
        assert "sneaky" not in keys.text and 'id="no-keys"' in keys.text
        assert client.cookie("lumina_session")  # the refused logout did nothing

        # A token taken before signing in is worthless after it (the nonce rotated).
        await client.logout()
        before_login = await client.token()
        await client.login(account)
        old = await client.http.post("/keys", data={"name": "late", "expires": "30", "csrf_token": before_login})
        assert old.status_code == 403
        fresh = await client.http.post("/keys", data={"name": "fine", "expires": "30", "csrf_token": await client.token()})
        assert fresh.status_code == 200 and "lum_" in fresh.text


async def test_every_page_carries_security_headers_and_no_inline_script(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        login = await client.http.get("/login")
        await client.sign_up()
        chat = await client.http.get("/chat")
        static = await client.http.get("/static/auth.js")
    for response in (login, chat, static):
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["referrer-policy"] == "same-origin"
        assert response.headers["x-content-type-options"] == "nosniff"
    for response in (login, chat):
        assert response.headers["cache-control"] == "no-store"
        assert not re.search(r"<script(?![^>]*\bsrc=)", response.text)  # every script is a file
        assert " style=" not in response.text and "<style" not in response.text
    assert "strict-transport-security" not in login.headers


async def test_console_behind_tls_marks_its_cookies_secure(stack: Stack) -> None:
    async with running_console(stack.grpc_target, secure_cookies=True) as url, ConsoleClient(url) as client:
        page = await client.http.get("/login")
        assert "secure" in [p.strip().lower() for p in set_cookie_headers(page, "lumina_csrf")[0].split(";")]
        assert page.headers["strict-transport-security"].startswith("max-age=")
        # httpx keeps Secure cookies off plain http, as browsers do: send the nonce by hand
        nonce = re.match(r"lumina_csrf=([^;]+)", set_cookie_headers(page, "lumina_csrf")[0])
        assert nonce
        email = f"tls-{time.time_ns()}@example.com"
        response = await client.http.post(
            "/signup",
            data={"organisation": "Tls Co", "email": email, "password": PASSWORD, "confirm": PASSWORD,
                  "csrf_token": csrf_of(page.text)},
            headers={"Cookie": f"lumina_csrf={nonce.group(1)}"},
        )
    assert response.status_code == 303, alerts(response.text)
    for name in ("lumina_session", "lumina_csrf", "lumina_tenant"):
        [cookie] = set_cookie_headers(response, name)
        flags = [p.strip().lower() for p in cookie.split(";")]
        assert "secure" in flags and "httponly" in flags and "samesite=lax" in flags, cookie


# --- logout, password, recovery ---------------------------------------------------------------


async def test_logout_ends_the_session_in_the_backend_and_clears_the_cookie(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        await client.sign_up()
        token = client.cookie("lumina_session") or ""
        assert (await grpc_whoami(stack, token)).email
        response = await client.logout()
        assert response.status_code == 303 and response.headers["location"] == "/login?notice=signed_out"
        [cleared] = set_cookie_headers(response, "lumina_session")
        assert "max-age=0" in cleared.lower() or "expires=thu, 01 jan 1970" in cleared.lower()
        assert client.cookie("lumina_session") is None
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await grpc_whoami(stack, token)
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        # the old cookie, replayed, only leads to the login page
        client.http.cookies.set("lumina_session", token)
        assert (await client.http.get("/chat")).status_code == 303
        signed_out = await client.http.get("/login?notice=signed_out")
        assert "You are signed out." in signed_out.text


async def test_password_change_rotates_the_session_and_ends_the_others(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client, ConsoleClient(stack.console_url) as other:
        account = await client.sign_up()
        assert (await other.login(account)).status_code == 303
        before = client.cookie("lumina_session")
        wrong = await client.submit("/account/password", {
            "current_password": "not-it-at-all", "new_password": "amber-meadow-compass-77", "confirm": "amber-meadow-compass-77",
        })
        assert wrong.status_code == 401 and "The current password is not right." in wrong.text
        changed = await client.submit("/account/password", {
            "current_password": PASSWORD, "new_password": "amber-meadow-compass-77", "confirm": "amber-meadow-compass-77",
        })
        assert changed.status_code == 303 and changed.headers["location"] == "/account?notice=password"
        assert client.cookie("lumina_session") not in (None, before)
        assert (await client.http.get("/account")).status_code == 200
        assert (await other.http.get("/account")).status_code == 303  # the other session ended
        await client.logout()
        assert (await client.login(account)).status_code == 401
        assert (await client.login(account, password="amber-meadow-compass-77")).status_code == 303


async def test_recovery_answers_alike_and_the_mailed_link_sets_a_new_password(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        account = await client.sign_up()
        await client.logout()
        known = await client.submit("/forgot", {"tenant": account.tenant, "email": account.email})
        unknown = await client.submit("/forgot", {"tenant": account.tenant, "email": "nobody-here@example.com"})
        assert known.status_code == unknown.status_code == 200
        assert RESET_SENT in known.text
        assert known.text.replace(account.email, "E") == unknown.text.replace("nobody-here@example.com", "E")

        mail = await stack.mail_to(account.email)
        link = re.search(r"(http://localhost:\d+/recover\?token=[\w-]+)", mail)
        assert link, mail
        path = link.group(1).removeprefix(stack.console_url)
        form = await client.http.get(path)
        assert form.status_code == 200 and 'id="recover-form"' in form.text
        token = path.split("token=", 1)[1]
        weak = await client.submit("/recover", {"token": token, "password": "password1", "confirm": "password1"})
        assert weak.status_code == 422 and 'id="password-error"' in weak.text
        done = await client.submit("/recover", {"token": token, "password": "cobalt-river-lantern-58",
                                                "confirm": "cobalt-river-lantern-58"})
        assert done.status_code == 200 and "Your password is changed." in done.text
        assert client.cookie("lumina_session") is None  # recovery never signs in
        used = await client.submit("/recover", {"token": token, "password": "cobalt-river-lantern-59",
                                                "confirm": "cobalt-river-lantern-59"})
        assert used.status_code == 400 and "not valid any more" in used.text
        assert (await client.login(account, password="cobalt-river-lantern-58")).status_code == 303
        bad_link = await client.http.get("/recover")
        assert bad_link.status_code == 400 and "/forgot" in bad_link.text


# --- API keys ---------------------------------------------------------------------------------


async def test_api_keys_are_shown_once_listed_and_revoked(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        await client.sign_up()
        htmx = {"HX-Request": "true", "X-CSRF-Token": await client.token()}
        created = await client.http.post("/keys", data={"name": "ci-pipeline", "expires": "90"}, headers=htmx)
        assert created.status_code == 200 and created.text.lstrip().startswith('<div id="keys">')
        raw = re.search(r'<code id="new-key">(lum_[^<]+)</code>', created.text)
        assert raw, created.text
        principal = await grpc_whoami(stack, raw.group(1))  # the key works on the backend
        assert principal.kind == "api_key"
        listing = await client.http.get("/keys")
        assert "ci-pipeline" in listing.text and raw.group(1) not in listing.text  # shown once only
        key_id = re.search(r'data-key-id="([^"]+)" data-key-name="ci-pipeline"', listing.text)
        assert key_id
        row = listing.text[listing.text.index(key_id.group(0)):]
        assert '<td class="key-state">active</td>' in row[:2000]

        revoked = await client.http.post(f"/keys/{key_id.group(1)}/revoke", headers=htmx)
        assert revoked.status_code == 200
        row = revoked.text[revoked.text.index(key_id.group(0)):]
        assert '<td class="key-state">revoked</td>' in row[:2000]
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await grpc_whoami(stack, raw.group(1))
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
        nameless = await client.http.post("/keys", data={"name": "", "expires": "30"}, headers=htmx)
        assert nameless.status_code == 400 and "Give the key a name." in nameless.text


# --- password fields and sign-out (ASVS V6.2.6, V6.2.7, V7.4.4) --------------------------------

_PASSWORD_INPUT = re.compile(r'<input[^>]*\bname="(?:current_password|new_password|password|confirm)"[^>]*>')


async def test_password_fields_are_masked_and_open_to_password_managers(stack: Stack) -> None:
    from web.app import STATIC

    async with ConsoleClient(stack.console_url) as client:
        pages = {path: (await client.http.get(path)).text for path in ("/login", "/signup", "/recover?token=t")}
        await client.sign_up("pm")
        pages["/account"] = (await client.http.get("/account")).text
    for path, html in pages.items():
        fields = _PASSWORD_INPUT.findall(html)
        assert fields, path
        for field in fields:
            assert 'type="password"' in field, (path, field)
            assert re.search(r'autocomplete="(current|new)-password"', field), (path, field)  # managers fill and save
            assert int(re.search(r'maxlength="(\d+)"', field).group(1)) >= 64, (path, field)  # type: ignore[union-attr]
        assert "onpaste" not in html and 'autocomplete="off"' not in html, path
    scripts = "".join((STATIC / name).read_text() for name in ("auth.js", "console.js"))
    assert "paste" not in scripts  # nothing listens to (or blocks) pasting


async def test_every_signed_in_page_offers_sign_out(stack: Stack) -> None:
    async with ConsoleClient(stack.console_url) as client:
        await client.sign_up("so")
        for path in ("/chat", "/account", "/keys"):
            html = (await client.http.get(path)).text
            assert '<form class="signout" method="post" action="/logout">' in html, path
            assert 'id="sign-out"' in html and ">Sign out</button>" in html, path
