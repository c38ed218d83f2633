"""Account recovery by email: single-use, short-lived reset tokens stored hashed, mailed through
the mail outbox. A reset sets the password and ends every session; it never signs in, so an account
with a second factor still needs it at the next login (recovery never bypasses MFA)."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Protocol

from application.identity.accounts import check_new_password
from application.identity.context import IdentityContext, RateLimit, audit, client_key
from application.identity.ports import (
    IdentityUnitOfWorkFactory,
    MailMessage,
    MailRejected,
    MailSender,
)
from domain.errors import InvalidRequest
from domain.identity import (
    InvalidCredentials,
    PasswordResetToken,
    TooManyAttempts,
    normalize_email,
    validate_tenant_id,
)
from domain.ports import Clock

__all__ = ["DeliverMail", "MailRelayContext", "RequestPasswordReset", "ResetPassword"]


class RequestPasswordReset:
    """Always answers the same way (nothing tells whether the account exists). When it does, a
    reset link is queued for mail in the same transaction as the token's hash.

    Requests are limited per client address (``reset_limit``) and per (tenant, email) asked for
    (``reset_account_limit``, counted whether or not the account exists, so the 429 says nothing
    about it either): no mail flood through Lumina, to one victim or many."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, tenant_id: str, email: str, *, client: str = "") -> None:
        ctx = self._ctx
        try:
            tenant_id, email = validate_tenant_id(tenant_id), normalize_email(email)
            valid = True
        except InvalidRequest:
            valid = False
        if client:  # malformed requests count too
            await self._hit(f"reset:{client_key(client)}", ctx.reset_limit, tenant_id if valid else "", client)
        if not valid:
            return
        await self._hit(f"reset-acct:{tenant_id}:{email}", ctx.reset_account_limit, tenant_id, client)
        async with ctx.uow() as uow:
            user = await uow.users.by_email(tenant_id, email)
            if user is None or user.disabled:
                audit(ctx, uow, tenant_id, "password_reset", "requested", reason="unknown account", client=client)
                await uow.commit()
                return
            token = ctx.secrets.token(32)
            now = ctx.clock.now()
            await uow.reset_tokens.add(
                PasswordResetToken(
                    token_hash=ctx.secrets.digest(token), user_id=user.id, tenant_id=tenant_id,
                    expires_at=now + timedelta(seconds=ctx.reset_ttl_seconds),
                )
            )
            minutes = max(1, ctx.reset_ttl_seconds // 60)
            await uow.mail.add(
                MailMessage(
                    id=ctx.ids.new_id(), to=user.email, subject="Reset your Lumina password",
                    body=(
                        f"Someone asked to reset the password of your Lumina account.\n\n"
                        f"Open this link within {minutes} minutes to choose a new one:\n{ctx.reset_url}{token}\n\n"
                        "If it was not you, ignore this message; your password stays as it is.\n"
                    ),
                )
            )
            audit(ctx, uow, tenant_id, "password_reset", "requested", user_id=user.id, client=client)
            await uow.commit()

    async def _hit(self, key: str, limit: RateLimit, tenant_id: str, client: str) -> None:
        ctx = self._ctx
        try:
            await ctx.limiter.hit(key, limit=limit.limit, window_seconds=limit.window_seconds)
        except TooManyAttempts:
            async with ctx.uow() as uow:
                audit(ctx, uow, tenant_id, "password_reset", "locked_out", reason=key.split(":", 1)[0], client=client)
                await uow.commit()
            raise


class ResetPassword:
    """Token + new password. The token is consumed atomically (single use) and must be unexpired.
    Opening the mailed link proves control of the mailbox, so the address counts as verified."""

    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, token: str, new_password: str, *, client: str = "") -> None:
        ctx = self._ctx
        async with ctx.uow() as uow:
            consumed = await uow.reset_tokens.consume(ctx.secrets.digest(token), ctx.clock.now()) if token else None
            user = await uow.users.get(consumed.tenant_id, consumed.user_id) if consumed else None
            if consumed is None or user is None:
                audit(ctx, uow, "", "password_reset", "failed", reason="unknown, used or expired token", client=client)
                await uow.commit()
                raise InvalidCredentials("unknown, used or expired token")
            # A weak password fails before anything is committed: the token stays usable.
            check_new_password(ctx, new_password, [user.email, user.display_name, user.email.split("@")[0], user.tenant_id])
            await uow.users.set_password_hash(user.tenant_id, user.id, await asyncio.to_thread(ctx.hasher.hash, new_password))
            await uow.sessions.delete_for_user(user.tenant_id, user.id)
            if not user.email_verified:
                await uow.users.set_email_verified(user.tenant_id, user.id)
            audit(ctx, uow, user.tenant_id, "password_reset", "succeeded", user_id=user.id, client=client)
            await uow.commit()


class MailRelayContext(Protocol):
    """What the mail relay needs (an ``IdentityContext`` has it; the worker builds just this)."""

    @property
    def uow(self) -> IdentityUnitOfWorkFactory: ...

    @property
    def clock(self) -> Clock: ...


class DeliverMail:
    """The mail relay: send what the outbox holds, oldest first, and mark each sent (body wiped).
    Each message is claimed, sent and marked in a transaction of its own (SKIP LOCKED: two workers
    never send the same one), so a failure part way keeps what went out marked. A message the
    server refuses for good (``MailRejected``) is marked failed and leaves the queue; any other
    failure propagates and the message is tried again on the next run. Returns how many were sent."""

    def __init__(self, ctx: MailRelayContext, sender: MailSender, batch: int = 20) -> None:
        self._ctx = ctx
        self._sender = sender
        self._batch = batch

    async def __call__(self) -> int:
        sent = 0
        for _ in range(self._batch):
            async with self._ctx.uow() as uow:
                claimed = await uow.mail.claim_unsent(1)
                if not claimed:
                    break
                message = claimed[0]
                try:
                    await self._sender.send(message)
                except MailRejected as exc:
                    await uow.mail.mark_failed(message.id, self._ctx.clock.now(), str(exc))
                else:
                    await uow.mail.mark_sent(message.id, self._ctx.clock.now())
                    sent += 1
                await uow.commit()
        return sent
