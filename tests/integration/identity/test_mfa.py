"""TOTP (single use, atomic across concurrent verifications), recovery codes, step-up, tenant MFA
policy, passkeys (registration, passwordless, second factor, replay, sign count, foreign origin)."""

from __future__ import annotations

import asyncio

import pyotp
import pytest

from application.identity import (
    BeginPasskeyLogin,
    BeginPasskeyRegistration,
    BeginTotpEnrolment,
    ConfirmTotpEnrolment,
    FinishPasskeyLogin,
    FinishPasskeyRegistration,
    PasswordLogin,
    ResolveSession,
    VerifySecondFactor,
)
from domain.identity import (
    InvalidCredentials,
    SecondFactorRequired,
    SessionExpired,
    StepUpRequired,
    TenantPolicy,
)
from tests.integration.identity.conftest import ORIGIN, PASSWORD, World
from tests.unit.identity.soft_authenticator import SoftAuthenticator


async def _enrol_totp(world: World) -> tuple[str, tuple[str, ...]]:
    await world.user()
    session = await PasswordLogin(world.ctx)(world.tenant, "ann@example.com", PASSWORD)
    enrolment = await BeginTotpEnrolment(world.ctx)(session.token)
    assert enrolment.qr_svg.startswith("<svg") and enrolment.secret in enrolment.uri
    with pytest.raises(InvalidCredentials):
        await ConfirmTotpEnrolment(world.ctx)(session.token, "000000")
    enrolled = await ConfirmTotpEnrolment(world.ctx)(
        session.token, pyotp.TOTP(enrolment.secret).at(world.clock.now())
    )
    assert len(enrolled.recovery_codes) == 10 and enrolled.session.session.assurance_level == 2
    with pytest.raises(SessionExpired):  # factor change ended the other sessions (and rotated this one)
        await ResolveSession(world.ctx)(session.token)
    world.clock.advance(seconds=60)  # past the enrolment code's step
    return enrolment.secret, enrolled.recovery_codes


async def test_totp_login_needs_the_second_factor_and_each_code_works_once(world: World) -> None:
    secret, _ = await _enrol_totp(world)
    login, verify, resolve = PasswordLogin(world.ctx), VerifySecondFactor(world.ctx), ResolveSession(world.ctx)
    pending = await login(world.tenant, "ann@example.com", PASSWORD)
    assert pending.pending_second_factor
    with pytest.raises(SecondFactorRequired):
        await resolve(pending.token)
    code = pyotp.TOTP(secret).at(world.clock.now())
    with pytest.raises(InvalidCredentials):
        await verify(pending.token, "123456" if code != "123456" else "654321")
    full = await verify(pending.token, code)
    assert (await resolve(full.token)).assurance_level == 2
    with pytest.raises(SessionExpired):  # the pending token was rotated away
        await resolve(pending.token)
    other = await login(world.tenant, "ann@example.com", PASSWORD)
    with pytest.raises(InvalidCredentials) as err:  # replay of an accepted code
        await verify(other.token, code)
    assert err.value.reason == "code already used"
    world.clock.advance(seconds=30)
    await verify(other.token, pyotp.TOTP(secret).at(world.clock.now()))


async def test_concurrent_use_of_one_code_succeeds_once(world: World) -> None:
    secret, _ = await _enrol_totp(world)
    login, verify = PasswordLogin(world.ctx), VerifySecondFactor(world.ctx)
    a = await login(world.tenant, "ann@example.com", PASSWORD)
    b = await login(world.tenant, "ann@example.com", PASSWORD)
    code = pyotp.TOTP(secret).at(world.clock.now())
    results = await asyncio.gather(verify(a.token, code), verify(b.token, code), return_exceptions=True)
    assert sorted(type(r).__name__ for r in results) == ["InvalidCredentials", "IssuedSession"]


async def test_recovery_codes_are_single_use(world: World) -> None:
    _, codes = await _enrol_totp(world)
    login, verify = PasswordLogin(world.ctx), VerifySecondFactor(world.ctx)
    first = await login(world.tenant, "ann@example.com", PASSWORD)
    assert (await verify(first.token, codes[0].upper())).session.assurance_level == 2
    second = await login(world.tenant, "ann@example.com", PASSWORD)
    with pytest.raises(InvalidCredentials):
        await verify(second.token, codes[0])
    with pytest.raises(InvalidCredentials):
        await verify(second.token, "zzzzz-zzzzz")
    await verify(second.token, codes[1])
    methods = [(a.method, a.outcome) for a in await world.audits()]
    assert ("recovery_code", "succeeded") in methods and ("recovery_code", "failed") in methods


async def test_step_up_needs_a_recent_second_factor(world: World) -> None:
    secret, _ = await _enrol_totp(world)
    pending = await PasswordLogin(world.ctx)(world.tenant, "ann@example.com", PASSWORD)
    full = await VerifySecondFactor(world.ctx)(pending.token, pyotp.TOTP(secret).at(world.clock.now()))
    resolve = ResolveSession(world.ctx)
    await resolve(full.token, step_up=True)
    world.clock.advance(minutes=11)
    await resolve(full.token)
    with pytest.raises(StepUpRequired):
        await resolve(full.token, step_up=True)
    with pytest.raises(StepUpRequired):  # replacing the authenticator is a sensitive action
        await BeginTotpEnrolment(world.ctx)(full.token)
    again = await VerifySecondFactor(world.ctx)(full.token, pyotp.TOTP(secret).at(world.clock.now()))
    await resolve(again.token, step_up=True)


@pytest.mark.parametrize("world", [TenantPolicy(require_mfa=True)], indirect=True)
async def test_tenant_requiring_mfa_refuses_single_factor_sessions(world: World) -> None:
    await world.user()
    session = await PasswordLogin(world.ctx)(world.tenant, "ann@example.com", PASSWORD)
    with pytest.raises(SecondFactorRequired):
        await ResolveSession(world.ctx)(session.token)
    await ResolveSession(world.ctx)(session.token, allow_single_factor=True)  # enrolment pages
    enrolment = await BeginTotpEnrolment(world.ctx)(session.token)
    enrolled = await ConfirmTotpEnrolment(world.ctx)(session.token, pyotp.TOTP(enrolment.secret).at(world.clock.now()))
    assert (await ResolveSession(world.ctx)(enrolled.session.token)).assurance_level == 2


async def _register_passkey(world: World, token: str, device: SoftAuthenticator) -> str:
    ceremony = await BeginPasskeyRegistration(world.ctx)(token)
    response, _ = device.create(ceremony.options_json)
    issued = await FinishPasskeyRegistration(world.ctx)(token, ceremony.ceremony_id, response, "laptop")
    return issued.token


async def test_passkeys_register_and_sign_in_without_password(world: World) -> None:
    user = await world.user(password=None)  # passwordless account
    device = SoftAuthenticator("localhost", ORIGIN)
    async with world.ctx.uow() as uow:  # a first session as sign-up would give (edge: sign-up page)
        from application.identity.context import issue_session

        first = await issue_session(world.ctx, uow, user, assurance_level=1)
        await uow.commit()
    token = await _register_passkey(world, first.token, device)
    token = await _register_passkey(world, token, device)  # several credentials (step-up: level 2 is recent)
    async with world.ctx.uow() as uow:
        assert len(await uow.passkeys.list_for_user(world.tenant, user.id)) == 2
    for cred in device.credentials:
        ceremony = await BeginPasskeyLogin(world.ctx)()
        issued = await FinishPasskeyLogin(world.ctx)(ceremony.ceremony_id, device.get(ceremony.options_json, cred))
        principal = await ResolveSession(world.ctx)(issued.token, step_up=True)
        assert principal.user_id == user.id and principal.assurance_level == 2


async def test_passkey_failures_are_uniform_and_audited(world: World) -> None:
    await world.user()
    device = SoftAuthenticator("localhost", ORIGIN)
    session = await PasswordLogin(world.ctx)(world.tenant, "ann@example.com", PASSWORD)
    # foreign origin at registration
    ceremony = await BeginPasskeyRegistration(world.ctx)(session.token)
    bad, _ = device.create(ceremony.options_json, origin="https://evil.example")
    device.credentials.clear()
    with pytest.raises(InvalidCredentials):
        await FinishPasskeyRegistration(world.ctx)(session.token, ceremony.ceremony_id, bad)
    # the challenge was consumed: a good response to it now fails too
    good, _ = device.create(ceremony.options_json)
    device.credentials.clear()
    with pytest.raises(InvalidCredentials):
        await FinishPasskeyRegistration(world.ctx)(session.token, ceremony.ceremony_id, good)
    token = await _register_passkey(world, session.token, device)
    login, finish = BeginPasskeyLogin(world.ctx), FinishPasskeyLogin(world.ctx)
    # replayed challenge
    c1 = await login()
    assertion = device.get(c1.options_json)
    await finish(c1.ceremony_id, assertion)
    with pytest.raises(InvalidCredentials):
        await finish(c1.ceremony_id, assertion)
    # sign-count regression (a cloned authenticator)
    c2 = await login()
    with pytest.raises(InvalidCredentials):
        await finish(c2.ceremony_id, device.get(c2.options_json, sign_count=1))
    # foreign origin, wrong rp id, expired challenge, malformed
    c3 = await login()
    with pytest.raises(InvalidCredentials):
        await finish(c3.ceremony_id, device.get(c3.options_json, origin="https://evil.example", sign_count=10))
    c4 = await login()
    with pytest.raises(InvalidCredentials):
        await finish(c4.ceremony_id, device.get(c4.options_json, rp_id="evil.example", sign_count=11))
    c5 = await login()
    world.clock.advance(minutes=6)
    with pytest.raises(InvalidCredentials):
        await finish(c5.ceremony_id, device.get(c5.options_json, sign_count=12))
    c6 = await login()
    with pytest.raises(InvalidCredentials):
        await finish(c6.ceremony_id, "{not json")
    reasons = [a.reason for a in await world.audits() if a.method == "passkey" and a.outcome == "failed"]
    assert reasons == [
        "registration: registration: foreign origin", "registration: unknown or used challenge",
        "unknown or used challenge", "assertion: sign count regression", "assertion: foreign origin",
        "assertion: wrong rp id", "challenge expired",
    ]  # the malformed one names no credential, so its audit goes to the "unknown" tenant
    assert token
