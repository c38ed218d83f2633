"""OIDC sign-in through the whole authorization code flow against a real OpenID Provider (npm
``oidc-provider`` on loopback, ``oidc_idp``), its login form walked like a browser: just-in-time
users, linking by verified email (and every refusal), single-use and expiring state, redirect URI
checks (ours and the IdP's), nonce, forged and tampered ID tokens, iss/aud/exp, the second factor.
Every outcome is checked in the audit trail."""

from __future__ import annotations

import base64
import json
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import msgspec
import pyotp
import pytest
import sqlalchemy as sa
from joserfc import jwt
from joserfc.jwk import RSAKey

from adapters.identity import AuthlibOidcClient
from adapters.postgres.identity_repositories import oidc_secret_context
from application.identity import (
    BeginOidcLogin,
    BeginTotpEnrolment,
    ConfigureOidc,
    ConfirmTotpEnrolment,
    FinishOidcLogin,
    OidcClaims,
    OidcClient,
    OidcMetadata,
    OidcTokens,
    PasswordLogin,
    RegisterUser,
    ResolveSession,
    VerifySecondFactor,
)
from domain.errors import InvalidRequest, NotFound
from domain.identity import InvalidCredentials, OidcProvider, Role, SecondFactorRequired
from tests.harness.oidc import OidcProviderServer, callback_params, sign_in
from tests.integration.identity.conftest import (
    IDP_PASSWORD,
    OIDC_ACCOUNTS,
    OIDC_CLIENT,
    PASSWORD,
    World,
)

REDIRECT, OTHER_REDIRECT = OIDC_CLIENT.redirect_uris


@pytest.fixture
def rp() -> AuthlibOidcClient:
    return AuthlibOidcClient()


class Recording:
    """An ``OidcClient`` around the real one: counts userinfo calls and can rewrite the ID token
    between the token endpoint and validation (what an attacker in the middle would try)."""

    def __init__(self, inner: OidcClient, tamper=None) -> None:
        self._inner = inner
        self._tamper = tamper
        self.userinfo_calls = 0
        self.id_tokens: list[str] = []

    async def discover(self, issuer: str) -> OidcMetadata:
        return await self._inner.discover(issuer)

    async def authorization_url(self, provider: OidcProvider, **kwargs: str) -> str:
        return await self._inner.authorization_url(provider, **kwargs)

    async def exchange_code(self, provider: OidcProvider, **kwargs: str) -> OidcTokens:
        tokens = await self._inner.exchange_code(provider, **kwargs)
        self.id_tokens.append(tokens.id_token)
        if self._tamper is not None:
            tokens = msgspec.structs.replace(tokens, id_token=self._tamper(tokens.id_token))
        return tokens

    async def validate_id_token(self, provider: OidcProvider, id_token: str, *, nonce: str, now: datetime) -> OidcClaims:
        return await self._inner.validate_id_token(provider, id_token, nonce=nonce, now=now)

    async def userinfo(self, provider: OidcProvider, access_token: str, *, subject: str) -> OidcClaims:
        self.userinfo_calls += 1
        return await self._inner.userinfo(provider, access_token, subject=subject)


async def configure(world: World, idp: OidcProviderServer, rp: OidcClient, *, jit: bool = False, link: bool = False) -> None:
    await ConfigureOidc(world.ctx, rp)(
        world.tenant, issuer=idp.issuer, client_id=OIDC_CLIENT.client_id, client_secret=OIDC_CLIENT.client_secret,
        redirect_uris=OIDC_CLIENT.redirect_uris, jit_users=jit, link_by_verified_email=link,
    )


async def at_idp(world: World, rp: OidcClient, account: str, redirect: str = REDIRECT) -> tuple[str, str]:
    """Begin a sign-in and log in at the IdP as ``account``: (state, code) as the callback gets them."""
    url, state = await BeginOidcLogin(world.ctx, rp)(world.tenant, redirect)
    params = callback_params(await sign_in(url, login=account, password=IDP_PASSWORD, redirect_uri=redirect))
    assert params["state"] == state and params["code"]
    return state, params["code"]


async def refused(world: World, rp: OidcClient, state: str, code: str, redirect: str = REDIRECT) -> str:
    """Finish must fail with the uniform error; returns the audited reason."""
    with pytest.raises(InvalidCredentials) as err:
        await FinishOidcLogin(world.ctx, rp)(state, code, redirect)
    assert str(err.value) == "invalid credentials"
    return err.value.reason


async def oidc_audits(world: World) -> list[tuple[str, str]]:
    return [(a.outcome, a.reason) for a in await world.audits() if a.method == "oidc"]


async def count(world: World, sql: str, **params: object) -> int:
    async with world.engine.connect() as conn:
        return int((await conn.execute(sa.text(sql), params)).scalar_one())


async def test_just_in_time_user_then_the_link_finds_it(world: World, oidc_idp: OidcProviderServer, rp: AuthlibOidcClient) -> None:
    recording = Recording(rp)
    await configure(world, oidc_idp, recording, jit=True)
    url, state = await BeginOidcLogin(world.ctx, recording)(world.tenant, REDIRECT)
    query = {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}
    assert url.startswith(oidc_idp.issuer + "/auth?")
    assert query["response_type"] == "code" and query["client_id"] == OIDC_CLIENT.client_id
    assert query["code_challenge_method"] == "S256" and len(query["code_challenge"]) == 43
    assert query["state"] == state and len(query["nonce"]) >= 43 and query["redirect_uri"] == REDIRECT
    assert set(query["scope"].split()) == {"openid", "email", "profile"}
    assert OIDC_CLIENT.client_secret not in url
    params = callback_params(await sign_in(url, login="sub-carol", password=IDP_PASSWORD, redirect_uri=REDIRECT))

    issued, created, linked = await FinishOidcLogin(world.ctx, recording)(params["state"], params["code"], REDIRECT)

    assert (created, linked) == (True, False)
    assert recording.userinfo_calls == 1  # a strict IdP keeps email out of the ID token
    principal = await ResolveSession(world.ctx)(issued.token)
    assert principal.role == Role.MEMBER and principal.assurance_level == 1 and principal.tenant_id == world.tenant
    async with world.ctx.uow() as uow:
        user = await uow.users.get(world.tenant, principal.user_id)
    assert user is not None and (user.email, user.email_verified, user.password_hash, user.display_name) == (
        "carol@example.com", True, None, "Carol")
    # the next sign-in finds the link: same user, nothing created
    state, code = await at_idp(world, recording, "sub-carol")
    again, created, linked = await FinishOidcLogin(world.ctx, recording)(state, code, REDIRECT)
    assert (created, linked, again.session.user_id) == (False, False, user.id)
    assert await count(world, "SELECT count(*) FROM oidc_identities WHERE tenant_id = :t", t=world.tenant) == 1
    assert await oidc_audits(world) == [
        ("configured", f"issuer {oidc_idp.issuer}"), ("started", ""), ("succeeded", "user created just in time"),
        ("started", ""), ("succeeded", ""),
    ]


async def test_client_secret_is_sealed_at_rest(world: World, oidc_idp: OidcProviderServer, rp: AuthlibOidcClient) -> None:
    await configure(world, oidc_idp, rp)
    async with world.engine.connect() as conn:
        row = (await conn.execute(sa.text("SELECT * FROM oidc_providers WHERE tenant_id = :t"), {"t": world.tenant})).one()
    sealed = bytes(row.client_secret_ciphertext)
    assert OIDC_CLIENT.client_secret.encode() not in sealed
    context = oidc_secret_context(world.tenant, oidc_idp.issuer, OIDC_CLIENT.client_id)
    assert world.kms.decrypt(sealed, context) == OIDC_CLIENT.client_secret.encode()


async def test_link_by_verified_email_keeps_the_second_factor(
    world: World, oidc_idp: OidcProviderServer, rp: AuthlibOidcClient
) -> None:
    dave = await RegisterUser(world.ctx)(world.tenant, "dave@example.com", "Dave", PASSWORD, email_verified=True)
    session = await PasswordLogin(world.ctx)(world.tenant, "dave@example.com", PASSWORD)
    enrolment = await BeginTotpEnrolment(world.ctx)(session.token)
    await ConfirmTotpEnrolment(world.ctx)(session.token, pyotp.TOTP(enrolment.secret).at(world.clock.now()))
    world.clock.advance(seconds=60)
    await configure(world, oidc_idp, rp, link=True)

    issued, created, linked = await FinishOidcLogin(world.ctx, rp)(*await at_idp(world, rp, "sub-dave"), REDIRECT)

    assert (created, linked, issued.session.user_id) == (False, True, dave.id)
    assert issued.pending_second_factor and issued.session.assurance_level == 1  # OIDC is one factor
    with pytest.raises(SecondFactorRequired):
        await ResolveSession(world.ctx)(issued.token)
    full = await VerifySecondFactor(world.ctx)(issued.token, pyotp.TOTP(enrolment.secret).at(world.clock.now()))
    assert (await ResolveSession(world.ctx)(full.token)).assurance_level == 2
    assert ("succeeded", "linked by verified email; second factor pending") in await oidc_audits(world)


@pytest.mark.parametrize(
    ("account", "local_email", "local_verified", "link", "jit", "reason"),
    [
        ("sub-erin", "erin@example.com", True, True, True,
         "email not verified by the identity provider matches an existing user"),
        ("sub-dave", "dave@example.com", False, True, True, "email matches a user whose address Lumina has not verified"),
        ("sub-dave", "dave@example.com", True, False, True,
         "email matches an existing user; linking is disabled for the tenant"),
        ("sub-carol", None, False, True, False, "no such user and just-in-time creation is disabled"),
        ("sub-frank", None, False, True, True, "no usable email claim for an unlinked account"),
    ],
    ids=["unverified-at-idp", "unverified-locally", "linking-off", "jit-off", "no-email"],
)
async def test_refusals_never_link_or_create(
    world: World, oidc_idp: OidcProviderServer, rp: AuthlibOidcClient,
    account: str, local_email: str | None, local_verified: bool, link: bool, jit: bool, reason: str,
) -> None:
    if local_email:
        await RegisterUser(world.ctx)(world.tenant, local_email, "Local", PASSWORD, email_verified=local_verified)
    await configure(world, oidc_idp, rp, jit=jit, link=link)
    users = await count(world, "SELECT count(*) FROM users WHERE tenant_id = :t", t=world.tenant)

    assert await refused(world, rp, *await at_idp(world, rp, account)) == reason

    assert await count(world, "SELECT count(*) FROM users WHERE tenant_id = :t", t=world.tenant) == users
    assert await count(world, "SELECT count(*) FROM oidc_identities WHERE tenant_id = :t", t=world.tenant) == 0
    assert await count(world, "SELECT count(*) FROM auth_sessions WHERE tenant_id = :t", t=world.tenant) == 0
    assert (await oidc_audits(world))[-1] == ("failed", reason)


async def test_state_is_single_use_and_expires(world: World, oidc_idp: OidcProviderServer, rp: AuthlibOidcClient) -> None:
    await configure(world, oidc_idp, rp, jit=True)
    finish = FinishOidcLogin(world.ctx, rp)
    state, code = await at_idp(world, rp, "sub-carol")
    await finish(state, code, REDIRECT)
    assert await refused(world, rp, state, code) == "unknown, used or expired state"  # replayed
    assert await refused(world, rp, "made-up-state", code) == "unknown, used or expired state"
    state, code = await at_idp(world, rp, "sub-carol")
    world.clock.advance(minutes=11)  # the state lives 10 minutes
    assert await refused(world, rp, state, code) == "unknown, used or expired state"
    assert await count(world, "SELECT count(*) FROM oidc_login_states WHERE tenant_id = :t", t=world.tenant) == 0
    failed = [r for o, r in await oidc_audits(world) if o == "failed"]
    assert failed.count("unknown, used or expired state") == 1  # the other two named no tenant (audited as "unknown")


async def test_redirect_uri_is_checked_by_lumina_and_by_the_idp(
    world: World, oidc_idp: OidcProviderServer, rp: AuthlibOidcClient
) -> None:
    await configure(world, oidc_idp, rp, jit=True)
    with pytest.raises(InvalidRequest):  # not registered for the tenant
        await BeginOidcLogin(world.ctx, rp)(world.tenant, "https://evil.example/callback")
    with pytest.raises(NotFound):
        await BeginOidcLogin(world.ctx, rp)("no-such-tenant", REDIRECT)
    state, code = await at_idp(world, rp, "sub-carol")
    assert await refused(world, rp, state, code, OTHER_REDIRECT) == "redirect_uri differs from the authorization request's"
    # the state is spent even so: the right redirect_uri afterwards does not help
    assert await refused(world, rp, state, code) == "unknown, used or expired state"
    # past our check (the stored URI rewritten), the IdP itself refuses a code issued for another URI
    state, code = await at_idp(world, rp, "sub-carol")
    async with world.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE oidc_login_states SET redirect_uri = :r WHERE state_hash = :h"),
                           {"r": OTHER_REDIRECT, "h": world.ctx.secrets.digest(state)})
    assert await refused(world, rp, state, code, OTHER_REDIRECT) == "token exchange: invalid_grant"
    assert await count(world, "SELECT count(*) FROM users WHERE tenant_id = :t", t=world.tenant) == 0


def _segments(token: str) -> tuple[dict, dict, str]:
    def part(s: str) -> dict:
        return json.loads(base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)))

    header, payload, signature = token.split(".")
    return part(header), part(payload), signature


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _other_subject(token: str) -> str:
    header, payload, signature = _segments(token)
    return f"{_b64(header)}.{_b64({**payload, 'sub': 'sub-dave'})}.{signature}"


def _unsigned(token: str) -> str:
    _, payload, _ = _segments(token)
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(payload)}."


def _forged(token: str) -> str:  # signed with an attacker's key under the IdP's key id
    header, payload, _ = _segments(token)
    return jwt.encode({"alg": "RS256", "kid": header["kid"]}, payload, RSAKey.generate_key(2048))


def _hmac_with_client_secret(token: str) -> str:  # the classic RS256 -> HS256 confusion
    from joserfc.jwk import OctKey

    header, payload, _ = _segments(token)
    return jwt.encode({"alg": "HS256", "kid": header["kid"]}, payload, OctKey.import_key(OIDC_CLIENT.client_secret))


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (_other_subject, "id token: bad signature"),
        (_unsigned, "id token: algorithm not allowed"),
        (_forged, "id token: bad signature"),
        (_hmac_with_client_secret, "id token: algorithm not allowed"),
    ],
    ids=["payload-edited", "alg-none", "foreign-key", "hs256-confusion"],
)
async def test_tampered_id_tokens_are_refused(
    world: World, oidc_idp: OidcProviderServer, rp: AuthlibOidcClient, tamper, reason: str
) -> None:
    tampering = Recording(rp, tamper)
    await configure(world, oidc_idp, tampering, jit=True)
    assert await refused(world, tampering, *await at_idp(world, tampering, "sub-carol")) == reason
    assert await count(world, "SELECT count(*) FROM users WHERE tenant_id = :t", t=world.tenant) == 0
    assert (await oidc_audits(world))[-1] == ("failed", reason)


async def test_wrong_nonce_is_refused(world: World, oidc_idp: OidcProviderServer, rp: AuthlibOidcClient) -> None:
    await configure(world, oidc_idp, rp, jit=True)
    state, code = await at_idp(world, rp, "sub-carol")
    async with world.engine.begin() as conn:  # as if the token answered another authorization request
        await conn.execute(sa.text("UPDATE oidc_login_states SET nonce = 'another-request' WHERE state_hash = :h"),
                           {"h": world.ctx.secrets.digest(state)})
    assert await refused(world, rp, state, code) == "id token: nonce mismatch"
    assert (await oidc_audits(world))[-1] == ("failed", "id token: nonce mismatch")


async def test_id_token_issuer_audience_and_expiry(world: World, oidc_idp: OidcProviderServer, rp: AuthlibOidcClient) -> None:
    """The adapter's checks on a genuine ID token of the real IdP."""
    recording = Recording(rp)
    await configure(world, oidc_idp, recording, jit=True)
    url, state = await BeginOidcLogin(world.ctx, recording)(world.tenant, REDIRECT)
    nonce = parse_qs(urlsplit(url).query)["nonce"][0]
    code = callback_params(await sign_in(url, login="sub-carol", password=IDP_PASSWORD, redirect_uri=REDIRECT))["code"]
    await FinishOidcLogin(world.ctx, recording)(state, code, REDIRECT)
    [token] = recording.id_tokens
    async with world.ctx.uow() as uow:
        provider = await uow.oidc_providers.get(world.tenant)
    assert provider is not None
    now = world.clock.now()
    claims = await rp.validate_id_token(provider, token, nonce=nonce, now=now)
    assert (claims.issuer, claims.subject) == (oidc_idp.issuer, "sub-carol")
    cases = [
        (msgspec.structs.replace(provider, client_id="another-client"), nonce, now, "aud mismatch"),
        (provider, nonce, now + timedelta(hours=2), "expired"),
        (provider, "", now, "nonce mismatch"),
    ]
    for bad_provider, bad_nonce, at, reason in cases:
        with pytest.raises(InvalidCredentials) as err:
            await rp.validate_id_token(bad_provider, token, nonce=bad_nonce, now=at)
        assert err.value.reason == f"id token: {reason}"
    # another issuer: its discovery names the real one, so nothing of it is trusted
    localhost = oidc_idp.issuer.replace("127.0.0.1", "localhost")
    with pytest.raises(InvalidCredentials) as err:
        await rp.validate_id_token(msgspec.structs.replace(provider, issuer=localhost), token, nonce=nonce, now=now)
    assert err.value.reason == "discovery: the document names another issuer"
    with pytest.raises(InvalidRequest):
        await ConfigureOidc(world.ctx, rp)(world.tenant, issuer=localhost, client_id="c", client_secret="s",
                                           redirect_uris=[REDIRECT])


async def test_email_straight_from_the_id_token(world: World, rp: AuthlibOidcClient) -> None:
    """An IdP that puts email claims in the ID token (most do): no userinfo call."""
    with OidcProviderServer(clients=[OIDC_CLIENT], accounts=OIDC_ACCOUNTS, conform_id_token_claims=False) as idp:
        recording = Recording(rp)
        await configure(world, idp, recording, jit=True)
        issued, created, _ = await FinishOidcLogin(world.ctx, recording)(*await at_idp(world, recording, "sub-carol"), REDIRECT)
    assert created and recording.userinfo_calls == 0
    async with world.ctx.uow() as uow:
        user = await uow.users.get(world.tenant, issued.session.user_id)
    assert user is not None and (user.email, user.email_verified) == ("carol@example.com", True)


async def test_only_a_tenant_admin_configures(world: World, oidc_idp: OidcProviderServer, rp: AuthlibOidcClient) -> None:
    from domain.identity import Forbidden

    await world.user("member@example.com")
    member = await ResolveSession(world.ctx)((await PasswordLogin(world.ctx)(world.tenant, "member@example.com", PASSWORD)).token)
    with pytest.raises(Forbidden):
        await ConfigureOidc(world.ctx, rp)(world.tenant, issuer=oidc_idp.issuer, client_id="c", client_secret="s",
                                           redirect_uris=[REDIRECT], by=member)
    await world.user("admin@example.com", role=Role.ADMIN)
    admin = await ResolveSession(world.ctx)((await PasswordLogin(world.ctx)(world.tenant, "admin@example.com", PASSWORD)).token)
    with pytest.raises(NotFound):  # another tenant's admin sees no such tenant
        await ConfigureOidc(world.ctx, rp)("other-tenant", issuer=oidc_idp.issuer, client_id="c", client_secret="s",
                                           redirect_uris=[REDIRECT], by=admin)
    provider = await ConfigureOidc(world.ctx, rp)(world.tenant, issuer=oidc_idp.issuer, client_id="c",
                                                  client_secret="s", redirect_uris=[REDIRECT], by=admin)
    assert provider.client_id == "c"
    with pytest.raises(InvalidRequest):  # http only on loopback
        await ConfigureOidc(world.ctx, rp)(world.tenant, issuer="http://idp.example", client_id="c", client_secret="s",
                                           redirect_uris=[REDIRECT], by=admin)
