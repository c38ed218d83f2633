"""Sessions a user sees and ends (ASVS V7.5.2), an admin ending a user's sessions (V7.4.5), the
tenant's MFA requirement set by its admins (V6.3.3) and re-authentication before a first second
factor (V7.5.1): the use cases on real Postgres and Redis with a movable clock."""

from __future__ import annotations

import pyotp
import pytest

from application.identity import (
    BeginPasskeyRegistration,
    BeginTotpEnrolment,
    ConfirmTotpEnrolment,
    CreateTenant,
    EndSession,
    EndUserSessions,
    ListSessions,
    PasswordLogin,
    RegisterUser,
    ResolveSession,
    UpdateTenantPolicy,
)
from application.identity.context import issue_session
from domain.errors import NotFound
from domain.identity import (
    Forbidden,
    ReauthenticationRequired,
    Role,
    SecondFactorRequired,
    SessionExpired,
    StepUpRequired,
)
from tests.integration.identity.conftest import PASSWORD, World


async def _login(world: World, email: str = "ann@example.com") -> str:
    return (await PasswordLogin(world.ctx)(world.tenant, email, PASSWORD, client="198.51.100.7")).token


async def test_users_list_their_live_sessions_and_end_any_one(world: World) -> None:
    await world.user()
    first, second = await _login(world), await _login(world)
    world.clock.advance(seconds=5)
    third = await _login(world)
    me = await ResolveSession(world.ctx)(third)
    views = await ListSessions(world.ctx)(me)
    assert len(views) == 3 and views[0].session.id == me.credential_id  # newest first
    assert [v.current for v in views] == [True, False, False]
    assert {v.session.assurance_level for v in views} == {1}
    # end the first one: it stops working, the others go on
    victim = (await ResolveSession(world.ctx)(first)).credential_id
    await EndSession(world.ctx)(me, victim, client="198.51.100.7")
    with pytest.raises(SessionExpired):
        await ResolveSession(world.ctx)(first)
    await ResolveSession(world.ctx)(second)
    assert len(await ListSessions(world.ctx)(me)) == 2
    # someone else's session, and an unknown id, answer alike
    await world.user("bob@example.com")
    bob = await ResolveSession(world.ctx)(await _login(world, "bob@example.com"))
    for other in (me.credential_id, "no-such-session", ""):
        with pytest.raises(NotFound):
            await EndSession(world.ctx)(bob, other)
    await ResolveSession(world.ctx)(third)
    # expired sessions are not listed
    world.clock.advance(minutes=31)
    fresh = await ResolveSession(world.ctx)(await _login(world))
    assert [v.session.id for v in await ListSessions(world.ctx)(fresh)] == [fresh.credential_id]
    ended = [e for e in await world.audits() if e.method == "session" and e.outcome == "ended"]
    assert len(ended) == 1 and ended[0].user_id == me.user_id and victim in ended[0].reason
    assert ended[0].client_address == "198.51.100.7"


async def test_a_tenant_admin_ends_every_session_of_a_user_of_their_tenant(world: World) -> None:
    ann = await world.user()
    await world.user("root@example.com", role=Role.OWNER)
    await world.user("adm@example.com", role=Role.ADMIN)
    tokens = [await _login(world), await _login(world)]
    admin = await ResolveSession(world.ctx)(await _login(world, "adm@example.com"))
    member = await ResolveSession(world.ctx)(tokens[0])
    with pytest.raises(Forbidden):  # a member may not
        await EndUserSessions(world.ctx)(member, ann.id)
    owner_token = await _login(world, "root@example.com")
    owner = await ResolveSession(world.ctx)(owner_token)
    with pytest.raises(Forbidden):  # an admin may not end an owner's
        await EndUserSessions(world.ctx)(admin, owner.user_id)
    assert await EndUserSessions(world.ctx)(admin, ann.id, client="203.0.113.9") == 2
    for token in tokens:
        with pytest.raises(SessionExpired):
            await ResolveSession(world.ctx)(token)
    await ResolveSession(world.ctx)(owner_token)  # nobody else's
    # a user of another tenant is NotFound, like an unknown one
    other = f"{world.tenant}-x"
    await CreateTenant(world.ctx)(other, "Other")
    outsider = await RegisterUser(world.ctx)(other, "ann@example.com", "Ann", PASSWORD, Role.MEMBER)
    outsider_token = (await PasswordLogin(world.ctx)(other, "ann@example.com", PASSWORD)).token
    for user_id in (outsider.id, "nobody"):
        with pytest.raises(NotFound):
            await EndUserSessions(world.ctx)(admin, user_id)
    await ResolveSession(world.ctx)(outsider_token)
    assert await EndUserSessions(world.ctx)(owner, admin.user_id) == 1  # an owner may end an admin's
    ended = [e for e in await world.audits() if e.method == "session" and e.outcome == "ended"]
    assert [(e.user_id, e.client_address) for e in ended][:1] == [(ann.id, "203.0.113.9")]
    assert admin.user_id in ended[0].reason


async def test_admins_require_mfa_and_turning_it_off_needs_step_up(world: World) -> None:
    await world.user("adm@example.com", role=Role.ADMIN)
    await world.user()
    member = await ResolveSession(world.ctx)(await _login(world))
    with pytest.raises(Forbidden):
        await UpdateTenantPolicy(world.ctx)(member, require_mfa=True)
    admin_token = await _login(world, "adm@example.com")
    admin = await ResolveSession(world.ctx)(admin_token)
    assert (await UpdateTenantPolicy(world.ctx)(admin, require_mfa=True)).require_mfa
    # single-factor sessions now reach the enrolment calls only
    member_token = await _login(world)
    with pytest.raises(SecondFactorRequired):
        await ResolveSession(world.ctx)(member_token)
    with pytest.raises(SecondFactorRequired):
        await ResolveSession(world.ctx)(admin_token)
    enrolment = await BeginTotpEnrolment(world.ctx)(admin_token)
    enrolled = await ConfirmTotpEnrolment(world.ctx)(admin_token, pyotp.TOTP(enrolment.secret).at(world.clock.now()))
    admin = await ResolveSession(world.ctx)(enrolled.session.token)
    assert admin.assurance_level == 2
    # turning it off: a recent second factor, never an old one
    world.clock.advance(minutes=11)
    with pytest.raises(StepUpRequired):
        await UpdateTenantPolicy(world.ctx)(admin, require_mfa=False)
    world.clock.advance(minutes=-11)
    assert not (await UpdateTenantPolicy(world.ctx)(admin, require_mfa=False)).require_mfa
    await ResolveSession(world.ctx)(member_token)
    changes = [e.reason for e in await world.audits() if e.method == "tenant_policy"]
    assert changes == ["require_mfa=on", "require_mfa=off"]


async def test_the_first_second_factor_needs_a_sign_in_from_the_last_ten_minutes(world: World) -> None:
    await world.user()
    stale = await _login(world)
    world.clock.advance(minutes=11)
    await ResolveSession(world.ctx)(stale)  # the session itself is fine (kept alive by use)...
    with pytest.raises(ReauthenticationRequired):  # ...but enrols no factor
        await BeginTotpEnrolment(world.ctx)(stale)
    with pytest.raises(ReauthenticationRequired):
        await BeginPasskeyRegistration(world.ctx)(stale)
    fresh = await PasswordLogin(world.ctx)(world.tenant, "ann@example.com", PASSWORD, current_token=stale)
    enrolment = await BeginTotpEnrolment(world.ctx)(fresh.token)
    await BeginPasskeyRegistration(world.ctx)(fresh.token)
    enrolled = await ConfirmTotpEnrolment(world.ctx)(fresh.token, pyotp.TOTP(enrolment.secret).at(world.clock.now()))
    # with a second factor, adding another needs step-up (a recent second factor) instead
    world.clock.advance(minutes=11)
    await ResolveSession(world.ctx)(enrolled.session.token)
    for begin in (BeginTotpEnrolment(world.ctx), BeginPasskeyRegistration(world.ctx)):
        with pytest.raises(StepUpRequired) as info:
            await begin(enrolled.session.token)
        assert not isinstance(info.value, ReauthenticationRequired)


async def test_a_passwordless_first_session_is_fresh_for_ten_minutes(world: World) -> None:
    user = await world.user("pat@example.com", password=None)
    async with world.ctx.uow() as uow:  # as an OIDC sign-in would issue it
        issued = await issue_session(world.ctx, uow, user, assurance_level=1)
        await uow.commit()
    world.clock.advance(minutes=9)
    await BeginPasskeyRegistration(world.ctx)(issued.token)
    world.clock.advance(minutes=2)
    with pytest.raises(ReauthenticationRequired):
        await BeginPasskeyRegistration(world.ctx)(issued.token)
