"""WebAuthn passkeys: registration, passwordless login and second factor, listing and removal.
Challenges live server-side, expire, and are taken (deleted) on first use."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import msgspec

from application.identity.context import (
    IdentityContext,
    IssuedSession,
    audit,
    issue_session,
)
from application.identity.sessions import load_session, require_fresh_sign_in
from domain.errors import NotFound
from domain.identity import (
    CeremonyPurpose,
    Forbidden,
    InvalidCredentials,
    PasskeyCredential,
    Principal,
    StepUpRequired,
    WebAuthnChallenge,
)

__all__ = [
    "BeginPasskeyLogin",
    "BeginPasskeyRegistration",
    "Ceremony",
    "DeletePasskey",
    "FinishPasskeyLogin",
    "FinishPasskeyRegistration",
    "ListPasskeys",
]

CHALLENGE_TTL = timedelta(minutes=5)


class Ceremony(msgspec.Struct, frozen=True):
    ceremony_id: str  # hand back with the response
    options_json: str  # for navigator.credentials.create() / get()


class BeginPasskeyRegistration:
    """Options to register a passkey for the session's user. Adding a passkey to an account that
    already has a second factor needs step-up; the first one a session signed in within the last 10
    minutes (ASVS V7.5.1)."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, token: str) -> Ceremony:
        ctx = self._ctx
        async with ctx.uow() as uow:
            session = await load_session(ctx, uow, token)
            user = await uow.users.get(session.tenant_id, session.user_id)
            assert user is not None
            existing = await uow.passkeys.list_for_user(user.tenant_id, user.id)
            totp = await uow.totp.get(user.tenant_id, user.id)
            has_factor = bool(existing) or (totp is not None and totp.confirmed)
            if has_factor and not session.recent_second_factor(ctx.clock.now(), ctx.session_policy):
                raise StepUpRequired()
            if not has_factor:  # the first second factor: a fresh sign-in (ASVS V7.5.1)
                require_fresh_sign_in(ctx, session)
            options, challenge = ctx.webauthn.registration_options(
                user_id=user.id, user_name=user.email, display_name=user.display_name,
                exclude=[c.credential_id for c in existing],
            )
            ceremony = WebAuthnChallenge(
                id=ctx.ids.new_id(), purpose=CeremonyPurpose.REGISTRATION, challenge=challenge,
                expires_at=ctx.clock.now() + CHALLENGE_TTL, tenant_id=user.tenant_id, user_id=user.id,
            )
            await uow.challenges.add(ceremony)
            await uow.commit()
        return Ceremony(ceremony_id=ceremony.id, options_json=options)


class FinishPasskeyRegistration:
    """Verify the attestation, store the credential, end the user's other sessions (factor change)."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, token: str, ceremony_id: str, response_json: str, name: str = "passkey", *, client: str = "") -> IssuedSession:
        ctx = self._ctx
        async with ctx.uow() as uow:
            session = await load_session(ctx, uow, token)
            challenge = await uow.challenges.take(ceremony_id)
            reason = ""
            if challenge is None:
                reason = "unknown or used challenge"
            elif challenge.purpose is not CeremonyPurpose.REGISTRATION or challenge.user_id != session.user_id:
                reason = "challenge of another ceremony"
            elif challenge.expires_at <= ctx.clock.now():
                reason = "challenge expired"
            new = None
            if not reason and challenge is not None:
                try:
                    new = ctx.webauthn.verify_registration(response_json, challenge.challenge)
                except InvalidCredentials as exc:
                    reason = exc.reason
            if new is not None and await uow.passkeys.get(new.credential_id) is not None:
                new, reason = None, "credential already registered"
            if new is None:
                audit(ctx, uow, session.tenant_id, "passkey", "failed", user_id=session.user_id, reason=f"registration: {reason}", client=client)
                await uow.commit()  # the challenge stays consumed
                raise InvalidCredentials(reason)
            user = await uow.users.get(session.tenant_id, session.user_id)
            assert user is not None
            await uow.passkeys.add(
                PasskeyCredential(
                    credential_id=new.credential_id, user_id=user.id, tenant_id=user.tenant_id, public_key=new.public_key,
                    sign_count=new.sign_count, name=name[:64], created_at=ctx.clock.now(), transports=new.transports,
                )
            )
            await uow.sessions.delete_for_user(user.tenant_id, user.id)
            issued = await issue_session(ctx, uow, user, assurance_level=2, second_factor=True)
            audit(ctx, uow, user.tenant_id, "passkey", "enrolled", user_id=user.id, client=client)
            await uow.commit()
        return issued


class BeginPasskeyLogin:
    """Options for an assertion: passwordless (discoverable credentials, ``token`` empty) or as the
    second factor of a pending or step-up session (``token`` given: its user's credentials)."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, token: str = "") -> Ceremony:
        ctx = self._ctx
        async with ctx.uow() as uow:
            allow: list[bytes] = []
            tenant_id = user_id = ""
            if token:
                session = await load_session(ctx, uow, token, allow_pending=True)
                tenant_id, user_id = session.tenant_id, session.user_id
                allow = [c.credential_id for c in await uow.passkeys.list_for_user(tenant_id, user_id)]
            options, challenge = ctx.webauthn.authentication_options(allow)
            ceremony = WebAuthnChallenge(
                id=ctx.ids.new_id(), purpose=CeremonyPurpose.AUTHENTICATION, challenge=challenge,
                expires_at=ctx.clock.now() + CHALLENGE_TTL, tenant_id=tenant_id, user_id=user_id,
            )
            await uow.challenges.add(ceremony)
            await uow.commit()
        return Ceremony(ceremony_id=ceremony.id, options_json=options)


class FinishPasskeyLogin:
    """Verify an assertion; a new level-2 session (user verification is required by the relying
    party adapter, so a passkey counts as two factors). With ``token`` the assertion must come from
    that session's user and the session is rotated."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, ceremony_id: str, response_json: str, *, token: str = "", client: str = "") -> IssuedSession:
        ctx = self._ctx
        async with ctx.uow() as uow:
            replaces = ""
            if token:
                session = await load_session(ctx, uow, token, allow_pending=True)
                replaces = session.id
            challenge = await uow.challenges.take(ceremony_id)
            reason, credential = "", None
            try:
                credential = await uow.passkeys.get(ctx.webauthn.credential_id_of(response_json))
            except InvalidCredentials as exc:
                reason = exc.reason
            # The audit goes to the credential's tenant when one is named, else the ceremony's.
            tenant_id = credential.tenant_id if credential else (challenge.tenant_id if challenge else "")
            if reason:
                pass
            elif challenge is None:
                reason = "unknown or used challenge"
            elif challenge.purpose is not CeremonyPurpose.AUTHENTICATION:
                reason = "challenge of another ceremony"
            elif challenge.expires_at <= ctx.clock.now():
                reason = "challenge expired"
            elif credential is None:
                reason = "unknown credential"
            elif challenge.user_id and credential.user_id != challenge.user_id:
                reason = "credential of another user"
            else:
                try:
                    new_count = ctx.webauthn.verify_authentication(
                        response_json, challenge.challenge, credential.public_key, credential.sign_count
                    )
                    if not await uow.passkeys.update_sign_count(
                        credential.credential_id, credential.sign_count, new_count, ctx.clock.now()
                    ):
                        reason = "sign count raced"
                except InvalidCredentials as exc:
                    reason = exc.reason
            user = None
            if not reason and credential is not None:
                user = await uow.users.get(credential.tenant_id, credential.user_id)
                if user is None or user.disabled:
                    reason = "user gone"
            if user is None or credential is None:
                audit(ctx, uow, tenant_id, "passkey", "failed",
                      user_id=credential.user_id if credential else "", reason=reason, client=client)
                await uow.commit()
                raise InvalidCredentials(reason)
            issued = await issue_session(ctx, uow, user, assurance_level=2, replaces=replaces, second_factor=True)
            audit(ctx, uow, user.tenant_id, "passkey", "succeeded", user_id=user.id, client=client)
            await uow.commit()
        return issued



class ListPasskeys:
    """The principal's own passkeys (oldest first): names, creation and last use; never the keys."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, principal: Principal) -> Sequence[PasskeyCredential]:
        async with self._ctx.uow() as uow:
            return await uow.passkeys.list_for_user(principal.tenant_id, principal.user_id)


class DeletePasskey:
    """Remove one of the session's user's passkeys (a lost or retired device). A factor change: it
    needs a recent second factor (step-up), ends the user's other sessions, and is audited. When
    the tenant requires MFA, the user's last second factor (passkey or TOTP) stays: ``Forbidden``.
    (Two concurrent removals of a user's last two factors can both pass that check; the tenant's
    MFA requirement still holds at the next sign-in, which then asks for a new factor.)"""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, token: str, credential_id: bytes, *, client: str = "") -> None:
        ctx = self._ctx
        async with ctx.uow() as uow:
            session = await load_session(ctx, uow, token)
            if not session.recent_second_factor(ctx.clock.now(), ctx.session_policy):
                raise StepUpRequired()
            tenant_id, user_id = session.tenant_id, session.user_id
            passkeys = await uow.passkeys.list_for_user(tenant_id, user_id)
            target = next((p for p in passkeys if p.credential_id == credential_id), None)
            if target is None:
                raise NotFound("passkey", "")
            tenant = await uow.tenants.get(tenant_id)
            totp = await uow.totp.get(tenant_id, user_id)
            remaining = len(passkeys) - 1 + (1 if totp is not None and totp.confirmed else 0)
            if remaining == 0 and tenant is not None and tenant.policy.require_mfa:
                audit(ctx, uow, tenant_id, "passkey", "failed", user_id=user_id,
                      reason="removal refused: the last second factor of an MFA tenant", client=client)
                await uow.commit()
                raise Forbidden("remove your last second factor (your organisation requires one)")
            if not await uow.passkeys.delete(tenant_id, user_id, credential_id):
                raise NotFound("passkey", "")
            ended = await uow.sessions.delete_for_user(tenant_id, user_id, except_id=session.id)
            audit(ctx, uow, tenant_id, "passkey", "removed", user_id=user_id,
                  reason=f"{target.name!r}; {ended} other session(s) ended", client=client)
            await uow.commit()
