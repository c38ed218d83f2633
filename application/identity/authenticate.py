"""One entry point for the edges: a bearer credential -> ``Principal``.

``lum_…`` is an API key (``AuthenticateApiKey``); anything else is a session token
(``ResolveSession``). Every failure is the same ``InvalidCredentials`` whatever the cause (no
credential, unknown, wrong, revoked or expired key, unknown or expired session) and leaves an audit
event; a pending or single-factor session where a second factor is needed stays
``SecondFactorRequired`` (its holder already proved a password)."""

from __future__ import annotations

from application.identity.api_keys import AuthenticateApiKey
from application.identity.context import IdentityContext, audit
from application.identity.sessions import ResolveSession
from domain.identity import InvalidCredentials, Principal, SessionExpired
from domain.identity.credentials import API_KEY_SCHEME

__all__ = ["Authenticate"]

_KEY_PREFIX = f"{API_KEY_SCHEME}_"


class Authenticate:
    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx
        self._keys = AuthenticateApiKey(ctx)
        self._sessions = ResolveSession(ctx)

    async def authenticate(self, credential: str, *, client: str = "", allow_single_factor: bool = False) -> Principal:
        """``allow_single_factor``: a single-factor session of a tenant that requires MFA is accepted
        (the calls that let it enrol a factor, ``api.auth.ENROLMENT_AUTH_RPCS``)."""
        if not credential:
            await self._failed("bearer", "no credential", client)
            raise InvalidCredentials("no credential")
        if credential.startswith(_KEY_PREFIX):
            return await self._keys(credential, client=client)  # audits its own failures
        try:
            return await self._sessions(credential, allow_single_factor=allow_single_factor)
        except SessionExpired as exc:
            await self._failed("session", exc.reason or "invalid session", client)
            raise InvalidCredentials(exc.reason) from None

    __call__ = authenticate

    async def _failed(self, method: str, reason: str, client: str) -> None:
        async with self._ctx.uow() as uow:
            audit(self._ctx, uow, "", method, "failed", reason=reason, client=client)
            await uow.commit()
