"""Listing and removing passkeys (a lost device, ASVS V6.5.6 / V7.4.3), on real Postgres with a
software authenticator: the list shows names, creation and last use; removal needs a recent second
factor, ends the user's other sessions, is audited, touches only the caller's own passkeys, and
never takes the last second factor of a user whose tenant requires MFA."""

from __future__ import annotations

import pyotp
import pytest

from application.identity import (
    BeginPasskeyLogin,
    BeginPasskeyRegistration,
    BeginTotpEnrolment,
    ConfirmTotpEnrolment,
    DeletePasskey,
    FinishPasskeyLogin,
    FinishPasskeyRegistration,
    ListPasskeys,
    PasswordLogin,
    ResolveSession,
)
from domain.errors import NotFound
from domain.identity import Forbidden, InvalidCredentials, SessionExpired, StepUpRequired, TenantPolicy
from tests.integration.identity.conftest import ORIGIN, PASSWORD, World
from tests.unit.identity.soft_authenticator import SoftAuthenticator


async def _register(world: World, token: str, device: SoftAuthenticator, name: str) -> str:
    ceremony = await BeginPasskeyRegistration(world.ctx)(token)
    response, _ = device.create(ceremony.options_json)
    return (await FinishPasskeyRegistration(world.ctx)(token, ceremony.ceremony_id, response, name)).token


async def _two_passkeys(world: World, email: str = "ann@example.com") -> tuple[str, SoftAuthenticator]:
    await world.user(email)
    device = SoftAuthenticator("localhost", ORIGIN)
    token = (await PasswordLogin(world.ctx)(world.tenant, email, PASSWORD)).token
    token = await _register(world, token, device, "laptop")
    world.clock.advance(seconds=5)
    token = await _register(world, token, device, "phone")  # level 2 and recent: no step-up needed yet
    return token, device


async def test_the_list_shows_names_creation_and_last_use(world: World) -> None:
    token, device = await _two_passkeys(world)
    principal = await ResolveSession(world.ctx)(token)
    laptop, phone = await ListPasskeys(world.ctx)(principal)
    assert (laptop.name, phone.name) == ("laptop", "phone") and laptop.created_at < phone.created_at
    assert laptop.last_used_at is None and laptop.transports == ("internal",)
    world.clock.advance(minutes=3)
    ceremony = await BeginPasskeyLogin(world.ctx)()
    await FinishPasskeyLogin(world.ctx)(ceremony.ceremony_id, device.get(ceremony.options_json, device.credentials[1]))
    laptop, phone = await ListPasskeys(world.ctx)(principal)
    assert laptop.last_used_at is None and phone.last_used_at == world.clock.now()


async def test_removal_needs_step_up_ends_other_sessions_and_is_audited(world: World) -> None:
    token, device = await _two_passkeys(world)
    laptop = device.credentials[0].credential_id
    world.clock.advance(minutes=11)  # past the step-up window
    with pytest.raises(StepUpRequired):
        await DeletePasskey(world.ctx)(token, laptop)
    ceremony = await BeginPasskeyLogin(world.ctx)(token)  # step up with the other passkey
    token = (await FinishPasskeyLogin(world.ctx)(
        ceremony.ceremony_id, device.get(ceremony.options_json, device.credentials[1]), token=token)).token
    ceremony = await BeginPasskeyLogin(world.ctx)()  # another device's session, signed in a moment ago
    other = await FinishPasskeyLogin(world.ctx)(ceremony.ceremony_id, device.get(ceremony.options_json, device.credentials[1]))
    await ResolveSession(world.ctx)(other.token)
    await DeletePasskey(world.ctx)(token, laptop, client="198.51.100.5")
    principal = await ResolveSession(world.ctx)(token)  # this session stays
    assert [p.name for p in await ListPasskeys(world.ctx)(principal)] == ["phone"]
    with pytest.raises(SessionExpired):  # the others ended
        await ResolveSession(world.ctx)(other.token)
    ceremony = await BeginPasskeyLogin(world.ctx)()
    with pytest.raises(InvalidCredentials):  # the removed passkey signs in no more
        await FinishPasskeyLogin(world.ctx)(ceremony.ceremony_id, device.get(ceremony.options_json, device.credentials[0]))
    with pytest.raises(NotFound):  # gone already
        await DeletePasskey(world.ctx)(token, laptop)
    removed = [a for a in await world.audits() if (a.method, a.outcome) == ("passkey", "removed")]
    assert len(removed) == 1 and removed[0].client_address == "198.51.100.5" and "'laptop'" in removed[0].reason


async def test_only_the_callers_own_passkeys(world: World) -> None:
    token, _ = await _two_passkeys(world)
    _, bea_device = await _two_passkeys(world, "bea@example.com")
    with pytest.raises(NotFound):
        await DeletePasskey(world.ctx)(token, bea_device.credentials[0].credential_id)
    async with world.ctx.uow() as uow:
        bea = await uow.users.by_email(world.tenant, "bea@example.com")
        assert bea is not None and len(await uow.passkeys.list_for_user(world.tenant, bea.id)) == 2


@pytest.mark.parametrize("world", [TenantPolicy(require_mfa=True)], indirect=True)
async def test_a_tenant_requiring_mfa_keeps_the_last_second_factor(world: World) -> None:
    token, device = await _two_passkeys(world)
    laptop, phone = (c.credential_id for c in device.credentials)
    await DeletePasskey(world.ctx)(token, laptop)
    with pytest.raises(Forbidden):
        await DeletePasskey(world.ctx)(token, phone)
    principal = await ResolveSession(world.ctx)(token)
    assert [p.name for p in await ListPasskeys(world.ctx)(principal)] == ["phone"]
    # with an authenticator app as well, the passkey may go
    enrolment = await BeginTotpEnrolment(world.ctx)(token)
    token = (await ConfirmTotpEnrolment(world.ctx)(
        token, pyotp.TOTP(enrolment.secret).at(world.clock.now()))).session.token
    await DeletePasskey(world.ctx)(token, phone)
    assert list(await ListPasskeys(world.ctx)(await ResolveSession(world.ctx)(token))) == []
    outcomes = [(a.outcome, a.reason) for a in await world.audits() if a.method == "passkey"]
    assert ("failed", "removal refused: the last second factor of an MFA tenant") in outcomes
