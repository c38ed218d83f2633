"""Password login, uniform failures, rehash, sessions (rotation, timeouts, revocation), roles."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa

from adapters.identity import Argon2PasswordHasher
from application.identity import (
    ChangePassword,
    CreateTeam,
    EndOtherSessions,
    Logout,
    PasswordLogin,
    RegisterUser,
    ResolveSession,
    SetRole,
)
from dataclasses import replace

from domain.errors import InvalidRequest
from domain.identity import (
    Forbidden,
    InvalidCredentials,
    PrincipalKind,
    Role,
    SessionExpired,
    TooManyAttempts,
    WeakPassword,
)
from tests.integration.identity.conftest import PASSWORD, World


async def test_login_resolves_a_principal_and_stores_only_a_hash(world: World) -> None:
    user = await world.user(role=Role.ADMIN)
    issued = await PasswordLogin(world.ctx)(world.tenant, "ANN@example.com", PASSWORD, client="10.0.0.1")
    assert not issued.pending_second_factor and len(issued.token) >= 43
    principal = await ResolveSession(world.ctx)(issued.token)
    assert (principal.tenant_id, principal.user_id, principal.role, principal.kind, principal.assurance_level) == (
        world.tenant, user.id, Role.ADMIN, PrincipalKind.USER, 1)
    async with world.engine.connect() as conn:
        stored = await conn.scalar(sa.text("SELECT token_hash FROM auth_sessions WHERE user_id = :u"), {"u": user.id})
    assert stored == world.ctx.secrets.digest(issued.token) and issued.token not in stored
    audits = await world.audits()
    assert [(a.method, a.outcome, a.user_id, a.client_address) for a in audits] == [
        ("password", "succeeded", user.id, "10.0.0.1")]


async def test_failures_are_uniform_and_audited(world: World) -> None:
    user = await world.user()
    login = PasswordLogin(world.ctx)
    errors = []
    for tenant, email, password in [
        (world.tenant, "ann@example.com", "wrong-password-123"),
        (world.tenant, "nobody@example.com", PASSWORD),
        ("no-such-tenant", "ann@example.com", PASSWORD),
    ]:
        with pytest.raises(InvalidCredentials) as err:
            await login(tenant, email, password)
        errors.append((type(err.value), str(err.value), err.value.code))
    assert len(set(errors)) == 1 and errors[0][1] == "invalid credentials"
    audits = await world.audits()
    assert [(a.outcome, a.user_id, a.reason) for a in audits] == [
        ("failed", user.id, "wrong password"), ("failed", "", "unknown account")]


async def test_registration_enforces_the_password_policy(world: World) -> None:
    register = RegisterUser(world.ctx)
    for weak in ["short1!", "password123", "ann@example.com", "a" * 129]:
        with pytest.raises(WeakPassword):
            await register(world.tenant, "ann@example.com", "Ann", weak)
    await world.user()
    with pytest.raises(InvalidRequest):  # same email twice in one tenant
        await world.user()
    # 64+ characters and any Unicode are accepted
    await register(world.tenant, "bob@example.com", "Bob", "ünïcødé pässwörd " * 4)


async def test_login_rehashes_when_parameters_change(world: World) -> None:
    weak_ctx = replace(world.ctx, hasher=Argon2PasswordHasher(memory_kib=8 * 1024, time_cost=1))
    user = await RegisterUser(weak_ctx)(world.tenant, "ann@example.com", "Ann", PASSWORD)
    assert "m=8192,t=1" in (user.password_hash or "")
    await PasswordLogin(world.ctx)(world.tenant, "ann@example.com", PASSWORD)
    async with world.ctx.uow() as uow:
        stored = await uow.users.get(world.tenant, user.id)
    assert stored is not None and "m=19456,t=2,p=1" in (stored.password_hash or "")
    await PasswordLogin(world.ctx)(world.tenant, "ann@example.com", PASSWORD)  # still verifies


async def test_login_rotates_and_logout_ends(world: World) -> None:
    await world.user()
    login = PasswordLogin(world.ctx)
    first = await login(world.tenant, "ann@example.com", PASSWORD)
    second = await login(world.tenant, "ann@example.com", PASSWORD, current_token=first.token)
    assert second.token != first.token
    with pytest.raises(SessionExpired):
        await ResolveSession(world.ctx)(first.token)
    await ResolveSession(world.ctx)(second.token)
    await Logout(world.ctx)(second.token)
    with pytest.raises(SessionExpired):
        await ResolveSession(world.ctx)(second.token)
    with pytest.raises(SessionExpired):
        await ResolveSession(world.ctx)("made-up-token")


async def test_idle_and_absolute_timeouts(world: World) -> None:
    await world.user()
    login, resolve = PasswordLogin(world.ctx), ResolveSession(world.ctx)
    idle = await login(world.tenant, "ann@example.com", PASSWORD)
    world.clock.advance(minutes=29)
    await resolve(idle.token)  # activity resets the idle timer
    world.clock.advance(minutes=29)
    await resolve(idle.token)
    world.clock.advance(minutes=31)
    with pytest.raises(SessionExpired) as err:
        await resolve(idle.token)
    assert err.value.reason == "idle"
    busy = await login(world.tenant, "ann@example.com", PASSWORD)
    for _ in range(25):  # active every 29 minutes for 12 hours
        world.clock.advance(minutes=29)
        try:
            await resolve(busy.token)
        except SessionExpired as exc:
            assert exc.reason == "absolute"
            break
    else:
        pytest.fail("the absolute timeout never ended the session")


async def test_password_change_ends_every_other_session(world: World) -> None:
    await world.user()
    login = PasswordLogin(world.ctx)
    a = await login(world.tenant, "ann@example.com", PASSWORD)
    b = await login(world.tenant, "ann@example.com", PASSWORD)
    with pytest.raises(InvalidCredentials):
        await ChangePassword(world.ctx)(a.token, "not-the-current-one", "amber-kestrel-window-77")
    fresh = await ChangePassword(world.ctx)(a.token, PASSWORD, "amber-kestrel-window-77")
    for old in (a.token, b.token):
        with pytest.raises(SessionExpired):
            await ResolveSession(world.ctx)(old)
    await ResolveSession(world.ctx)(fresh.token)
    with pytest.raises(InvalidCredentials):
        await login(world.tenant, "ann@example.com", PASSWORD)
    await login(world.tenant, "ann@example.com", "amber-kestrel-window-77")


async def test_end_other_sessions(world: World) -> None:
    await world.user()
    login = PasswordLogin(world.ctx)
    tokens = [(await login(world.tenant, "ann@example.com", PASSWORD)).token for _ in range(3)]
    assert await EndOtherSessions(world.ctx)(tokens[0]) == 2
    await ResolveSession(world.ctx)(tokens[0])
    with pytest.raises(SessionExpired):
        await ResolveSession(world.ctx)(tokens[1])


async def test_role_change_needs_admin_and_ends_the_users_sessions(world: World) -> None:
    admin = await world.user("admin@example.com", role=Role.ADMIN)
    member = await world.user("bob@example.com")
    login, resolve = PasswordLogin(world.ctx), ResolveSession(world.ctx)
    admin_p = await resolve((await login(world.tenant, "admin@example.com", PASSWORD)).token)
    member_s = await login(world.tenant, "bob@example.com", PASSWORD)
    member_p = await resolve(member_s.token)
    with pytest.raises(Forbidden):
        await SetRole(world.ctx)(member_p, admin.id, Role.VIEWER)
    with pytest.raises(Forbidden):
        await CreateTeam(world.ctx)(member_p, "ops")
    with pytest.raises(Forbidden):
        await SetRole(world.ctx)(admin_p, member.id, Role.OWNER)
    await SetRole(world.ctx)(admin_p, member.id, Role.ADMIN)
    with pytest.raises(SessionExpired):
        await resolve(member_s.token)
    again = await resolve((await login(world.tenant, "bob@example.com", PASSWORD)).token)
    assert again.role is Role.ADMIN
    team = await CreateTeam(world.ctx)(again, "ops")
    assert team.tenant_id == world.tenant


async def test_brute_force_backoff_per_account_and_address_is_never_permanent(world: World) -> None:
    # conftest policy: 2 free failures, then 0.3 s doubling, capped at 0.6 s
    await world.user()
    await world.user("bob@example.com")
    login = PasswordLogin(world.ctx)
    for _ in range(3):
        with pytest.raises(InvalidCredentials):
            await login(world.tenant, "ann@example.com", "wrong-password-1", client="10.9.9.9")
    with pytest.raises(TooManyAttempts) as err:  # locked, even with the right password, from anywhere
        await login(world.tenant, "ann@example.com", PASSWORD, client="10.1.1.1")
    assert 0 < err.value.retry_after <= 0.3
    with pytest.raises(TooManyAttempts):  # the address is limited for other accounts too
        await login(world.tenant, "bob@example.com", PASSWORD, client="10.9.9.9")
    await login(world.tenant, "bob@example.com", PASSWORD, client="10.2.2.2")
    for _ in range(4):  # keep failing: the wait doubles, up to the cap
        await asyncio.sleep(0.65)
        with pytest.raises(InvalidCredentials):
            await login(world.tenant, "ann@example.com", "wrong-password-1", client=f"10.0.0.{_}")
    with pytest.raises(TooManyAttempts) as err:
        await login(world.tenant, "ann@example.com", PASSWORD, client="10.1.1.1")
    assert 0.3 < err.value.retry_after <= 0.6
    await asyncio.sleep(0.65)  # never permanent: after the capped wait the owner gets in
    await login(world.tenant, "ann@example.com", PASSWORD, client="10.1.1.1")
    assert any(a.outcome == "locked_out" for a in await world.audits())


async def test_disabling_or_deleting_an_account_ends_its_sessions(world: World) -> None:
    """ASVS V7.4.2: a disabled user's sessions stop working (and are deleted) at their next use; a
    deleted user's sessions go with the row."""
    ann, bob = await world.user("ann@example.com"), await world.user("bob@example.com")
    tokens = [(await PasswordLogin(world.ctx)(world.tenant, "ann@example.com", PASSWORD)).token for _ in range(2)]
    bob_token = (await PasswordLogin(world.ctx)(world.tenant, "bob@example.com", PASSWORD)).token
    for token in tokens:
        await ResolveSession(world.ctx)(token)
    async with world.engine.begin() as conn:
        await conn.execute(sa.text("UPDATE users SET disabled = true WHERE id = :u"), {"u": ann.id})
    for token in tokens:
        with pytest.raises(SessionExpired):
            await ResolveSession(world.ctx)(token)
    with pytest.raises(InvalidCredentials):  # and no new one
        await PasswordLogin(world.ctx)(world.tenant, "ann@example.com", PASSWORD)
    async with world.engine.begin() as conn:
        left = (await conn.execute(sa.text("SELECT count(*) FROM auth_sessions WHERE user_id = :u"), {"u": ann.id})).scalar_one()
        await conn.execute(sa.text("DELETE FROM memberships WHERE user_id = :u"), {"u": bob.id})
        await conn.execute(sa.text("DELETE FROM users WHERE id = :u"), {"u": bob.id})
        bobs = (await conn.execute(sa.text("SELECT count(*) FROM auth_sessions WHERE user_id = :u"), {"u": bob.id})).scalar_one()
    assert left == 0 and bobs == 0
    with pytest.raises(SessionExpired):
        await ResolveSession(world.ctx)(bob_token)


async def test_passwords_built_on_context_words_are_refused(world: World) -> None:
    """ASVS V6.1.2 / V6.2.11: the product's name and the user's own words (email, name, organisation,
    tenant) add no strength: what is left without them must be a good password on its own."""
    from application.identity.accounts import CONTEXT_WORDS
    from application.identity.signup import SignUp

    assert CONTEXT_WORDS == ("lumina",)
    register = RegisterUser(world.ctx)
    tenant_part = world.tenant.split("-", 1)[1]
    for weak in ["AcmeRobotics!Lumina", "robotics-acme-lumina-77", f"{tenant_part}-Acme-Lumina-9", "Example.Robotics.2025"]:
        assert world.ctx.strength.estimate(weak, []).score >= 3, weak  # zxcvbn alone would let it through
        with pytest.raises(WeakPassword) as refused:
            await register(world.tenant, "ann@example.com", "Acme Robotics", weak)
        assert "built on a name" in str(refused.value.violations[0].description)
    await register(world.tenant, "ann@example.com", "Acme Robotics", "lumina violet harbour lantern")  # the rest is strong
    with pytest.raises(WeakPassword):
        await SignUp(world.ctx)("neb@example.org", "Nebula-Dynamics-2025!", "Neb", "Nebula Dynamics")
