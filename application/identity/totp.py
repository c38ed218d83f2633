"""TOTP enrolment (otpauth URI + QR code SVG) and recovery codes."""

from __future__ import annotations

import asyncio

import msgspec

from application.identity.context import (
    IdentityContext,
    IssuedSession,
    audit,
    issue_session,
)
from application.identity.ports import IdentityUnitOfWork
from application.identity.sessions import load_session, require_fresh_sign_in
from domain.identity import (
    InvalidCredentials,
    RecoveryCode,
    StepUpRequired,
    TotpCredential,
)

__all__ = [
    "BeginTotpEnrolment",
    "ConfirmTotpEnrolment",
    "RegenerateRecoveryCodes",
    "TotpEnrolled",
    "TotpEnrolment",
    "normalize_recovery_code",
]


class TotpEnrolment(msgspec.Struct, frozen=True):
    secret: str  # shown once, for manual entry
    uri: str  # otpauth://totp/...
    qr_svg: str


class TotpEnrolled(msgspec.Struct, frozen=True):
    session: IssuedSession  # the rotated session, now at level 2
    recovery_codes: tuple[str, ...]  # shown once


def normalize_recovery_code(code: str) -> str:
    return code.strip().lower().replace("-", "").replace(" ", "")


async def new_recovery_codes(ctx: IdentityContext, uow: IdentityUnitOfWork, user_id: str) -> tuple[str, ...]:
    """Fresh recovery codes (50 random bits each), stored as salted argon2id hashes: under 112 bits
    of entropy a lookup secret needs a password hash, not a plain digest (ASVS V6.5.2)."""
    codes = tuple(ctx.secrets.short_code() for _ in range(ctx.recovery_code_count))
    hashes = await asyncio.to_thread(lambda: [ctx.hasher.hash(normalize_recovery_code(c)) for c in codes])
    await uow.recovery_codes.replace(
        user_id, [RecoveryCode(id=ctx.ids.new_id(), user_id=user_id, code_hash=h) for h in hashes]
    )
    return codes


class BeginTotpEnrolment:
    """Start (or restart) TOTP enrolment. With a second factor already (TOTP or passkey) it needs
    step-up; the first one needs a session signed in within the last 10 minutes (ASVS V7.5.1)."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, token: str) -> TotpEnrolment:
        ctx = self._ctx
        async with ctx.uow() as uow:
            session = await load_session(ctx, uow, token)
            user = await uow.users.get(session.tenant_id, session.user_id)
            assert user is not None
            existing = await uow.totp.get(user.tenant_id, user.id)
            has_factor = (existing is not None and existing.confirmed) or bool(
                await uow.passkeys.list_for_user(user.tenant_id, user.id)
            )
            if has_factor:  # replacing or adding to a second factor: a recent one (step-up)
                if not session.recent_second_factor(ctx.clock.now(), ctx.session_policy):
                    raise StepUpRequired()
            else:  # the first second factor: a fresh sign-in (ASVS V7.5.1)
                require_fresh_sign_in(ctx, session)
            secret = ctx.totp.new_secret()
            await uow.totp.put(
                TotpCredential(
                    user_id=user.id, tenant_id=user.tenant_id, secret=secret, confirmed=False, created_at=ctx.clock.now()
                )
            )
            await uow.commit()
        uri = ctx.totp.provisioning_uri(secret, user.email, ctx.issuer)
        return TotpEnrolment(secret=secret, uri=uri, qr_svg=ctx.totp.qr_svg(uri))


class ConfirmTotpEnrolment:
    """The first valid code confirms the authenticator: recovery codes are issued, every other
    session ends (factor change) and this one rotates to level 2."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, token: str, code: str, *, client: str = "") -> TotpEnrolled:
        ctx = self._ctx
        async with ctx.uow() as uow:
            session = await load_session(ctx, uow, token)
            user = await uow.users.get(session.tenant_id, session.user_id)
            pending = await uow.totp.get(session.tenant_id, session.user_id)
            if user is None or pending is None or pending.confirmed:
                raise InvalidCredentials("no enrolment in progress")
            timecode = ctx.totp.match(pending.secret, code.strip(), ctx.clock.now())
            if timecode is None:
                audit(ctx, uow, user.tenant_id, "totp", "failed", user_id=user.id, reason="enrolment: wrong code", client=client)
                await uow.commit()
                raise InvalidCredentials("wrong code")
            await uow.totp.put(msgspec.structs.replace(pending, confirmed=True, last_timecode=timecode))
            codes = await new_recovery_codes(ctx, uow, user.id)
            await uow.sessions.delete_for_user(user.tenant_id, user.id)
            issued = await issue_session(ctx, uow, user, assurance_level=2, second_factor=True)
            audit(ctx, uow, user.tenant_id, "totp", "enrolled", user_id=user.id, client=client)
            await uow.commit()
        return TotpEnrolled(session=issued, recovery_codes=codes)


class RegenerateRecoveryCodes:
    """New recovery codes (the old ones stop working); needs a recent second factor."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, token: str) -> tuple[str, ...]:
        ctx = self._ctx
        async with ctx.uow() as uow:
            session = await load_session(ctx, uow, token)
            if not session.recent_second_factor(ctx.clock.now(), ctx.session_policy):
                raise StepUpRequired()
            codes = await new_recovery_codes(ctx, uow, session.user_id)
            audit(ctx, uow, session.tenant_id, "recovery_code", "enrolled", user_id=session.user_id)
            await uow.commit()
        return codes
