"""Password login and the second factor (TOTP or a recovery code), with brute-force limiting and an
audit event for every outcome. Failures are uniform: ``InvalidCredentials`` whatever the cause."""

from __future__ import annotations

import asyncio

from application.identity.context import IdentityContext, IssuedSession, audit, client_key, issue_session
from application.identity.ports import IdentityUnitOfWork
from application.identity.sessions import load_session
from application.identity.totp import normalize_recovery_code
from domain.errors import InvalidRequest
from domain.identity import (
    InvalidCredentials,
    RecoveryCode,
    TooManyAttempts,
    User,
    normalize_email,
    validate_tenant_id,
)

__all__ = ["LoginOptions", "PasswordLogin", "VerifySecondFactor", "has_second_factor", "limiter_keys"]


def limiter_keys(tenant_id: str, account: str, client: str) -> list[str]:
    keys = [f"acct:{tenant_id}:{account}"]
    if client:
        keys.append(f"ip:{client_key(client)}")
    return keys


async def has_second_factor(uow: IdentityUnitOfWork, user: User) -> bool:
    totp = await uow.totp.get(user.tenant_id, user.id)
    if totp is not None and totp.confirmed:
        return True
    return bool(await uow.passkeys.list_for_user(user.tenant_id, user.id))


class PasswordLogin:
    """Email + password in a tenant. Users with a second factor get a *pending* session that only
    ``VerifySecondFactor`` (or a passkey assertion) can complete. ``current_token`` (a session the
    client already holds) is ended: login always rotates the token (ASVS V7.2.4)."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(
        self, tenant_id: str, email: str, password: str, *, client: str = "", current_token: str = ""
    ) -> IssuedSession:
        ctx = self._ctx
        try:
            tenant_id = validate_tenant_id(tenant_id)
            email = normalize_email(email)
        except InvalidRequest:
            await asyncio.to_thread(ctx.hasher.dummy_verify, password)
            async with ctx.uow() as uow:
                audit(ctx, uow, "", "password", "failed", reason="malformed tenant or email", client=client)
                await uow.commit()
            raise InvalidCredentials("malformed tenant or email") from None
        keys = limiter_keys(tenant_id, email, client)
        try:
            await ctx.limiter.check(keys)
        except TooManyAttempts:
            async with ctx.uow() as uow:
                audit(ctx, uow, tenant_id, "password", "locked_out", client=client)
                await uow.commit()
            raise
        async with ctx.uow() as uow:
            tenant = await uow.tenants.get(tenant_id)
            user = await uow.users.by_email(tenant_id, email) if tenant is not None else None
            if user is None or user.password_hash is None or user.disabled:
                await asyncio.to_thread(ctx.hasher.dummy_verify, password)
                reason = "unknown account" if user is None else "no password or disabled"
                ok = False
            else:
                ok = await asyncio.to_thread(ctx.hasher.verify, user.password_hash, password)
                reason = "wrong password"
            if not ok or user is None:
                audit(ctx, uow, tenant_id, "password", "failed", user_id=user.id if user else "", reason=reason, client=client)
                await uow.commit()
                await ctx.limiter.failed(keys)
                raise InvalidCredentials(reason)
            assert user.password_hash is not None
            if ctx.hasher.needs_rehash(user.password_hash):
                await uow.users.set_password_hash(tenant_id, user.id, await asyncio.to_thread(ctx.hasher.hash, password))
            if current_token:
                old = await uow.sessions.by_token_hash(ctx.secrets.digest(current_token))
                if old is not None:
                    await uow.sessions.delete(old.id)
            pending = await has_second_factor(uow, user)
            issued = await issue_session(ctx, uow, user, assurance_level=1, pending_second_factor=pending)
            audit(
                ctx, uow, tenant_id, "password", "succeeded", user_id=user.id,
                reason="second factor pending" if pending else "", client=client,
            )
            await uow.commit()
        await ctx.limiter.succeeded(keys[:1])
        return issued


class VerifySecondFactor:
    """A TOTP code or a recovery code on a session: completes a pending login, or refreshes the
    step-up time of a full session. Either way the token rotates and the session reaches level 2.
    Each TOTP code is accepted once (atomically, across replicas); each recovery code once."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, token: str, code: str, *, client: str = "") -> IssuedSession:
        ctx = self._ctx
        async with ctx.uow() as uow:
            session = await load_session(ctx, uow, token, allow_pending=True)
        keys = [f"mfa:{session.tenant_id}:{session.user_id}"]
        try:
            await ctx.limiter.check(keys)
        except TooManyAttempts:
            async with ctx.uow() as uow:
                audit(ctx, uow, session.tenant_id, "totp", "locked_out", user_id=session.user_id, client=client)
                await uow.commit()
            raise
        code = code.strip().replace(" ", "")
        now = ctx.clock.now()
        async with ctx.uow() as uow:
            user = await uow.users.get(session.tenant_id, session.user_id)
            method, ok, reason = "totp", False, "no second factor"
            totp = await uow.totp.get(session.tenant_id, session.user_id)
            if user is not None and code.isdigit() and totp is not None and totp.confirmed:
                timecode = ctx.totp.match(totp.secret, code, now)
                if timecode is None:
                    reason = "wrong code"
                elif await uow.totp.advance_timecode(session.tenant_id, session.user_id, timecode):
                    ok, reason = True, ""
                else:
                    reason = "code already used"
            elif user is not None and not code.isdigit():
                method = "recovery_code"
                ok, reason = await _use_recovery_code(ctx, uow, user, code)
            if not ok or user is None:
                audit(ctx, uow, session.tenant_id, method, "failed", user_id=session.user_id, reason=reason, client=client)
                await uow.commit()
                await ctx.limiter.failed(keys)
                raise InvalidCredentials(reason)
            issued = await issue_session(ctx, uow, user, assurance_level=2, replaces=session.id, second_factor=True)
            audit(ctx, uow, session.tenant_id, method, "succeeded", user_id=user.id, client=client)
            await uow.commit()
        await ctx.limiter.succeeded(keys)
        return issued


async def _use_recovery_code(ctx: IdentityContext, uow: IdentityUnitOfWork, user: User, code: str) -> tuple[bool, str]:
    normalized = normalize_recovery_code(code)
    candidates = await uow.recovery_codes.unused(user.id)

    def find() -> RecoveryCode | None:
        match = None
        for candidate in candidates:  # check every one: the time says nothing about which matched
            if candidate.code_hash.startswith("$argon2"):
                ok = ctx.hasher.verify(candidate.code_hash, normalized)
            else:  # a SHA-256 digest stored before codes were argon2-hashed
                ok = ctx.secrets.equal(candidate.code_hash, ctx.secrets.digest(normalized))
            if ok:
                match = candidate
        return match

    match = await asyncio.to_thread(find)
    if match is None:
        return False, "wrong recovery code"
    if not await uow.recovery_codes.use(match.id, ctx.clock.now()):
        return False, "recovery code already used"
    return True, ""


class LoginOptions:
    """What a tenant's sign-in page may offer: ``tenant_id -> oidc_enabled``. An unknown or
    malformed tenant answers like a tenant without an identity provider (False)."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, tenant_id: str) -> bool:
        try:
            tenant_id = validate_tenant_id(tenant_id)
        except InvalidRequest:
            return False
        async with self._ctx.uow() as uow:
            return await uow.oidc_providers.get(tenant_id) is not None
