"""What the caller may read about itself (``WhoAmI``): its user and which factors it has."""

from __future__ import annotations

import msgspec

from application.identity.context import IdentityContext
from domain.errors import NotFound
from domain.identity import Principal, PrincipalKind

__all__ = ["DescribePrincipal", "Profile"]


class Profile(msgspec.Struct, frozen=True):
    principal: Principal
    email: str
    display_name: str
    has_totp: bool
    passkey_count: int
    has_password: bool
    # a single-factor session in a tenant that requires MFA: it may only enrol a factor (ASVS V6.3.3)
    mfa_enrolment_required: bool = False


class DescribePrincipal:
    def __init__(self, ctx: IdentityContext) -> None:
        self._ctx = ctx

    async def __call__(self, principal: Principal) -> Profile:
        async with self._ctx.uow() as uow:
            user = await uow.users.get(principal.tenant_id, principal.user_id)
            if user is None:
                raise NotFound("user", principal.user_id)
            totp = await uow.totp.get(user.tenant_id, user.id)
            passkeys = await uow.passkeys.list_for_user(user.tenant_id, user.id)
            tenant = await uow.tenants.get(user.tenant_id)
        must_enrol = (
            principal.kind is PrincipalKind.USER and principal.assurance_level < 2
            and tenant is not None and tenant.policy.require_mfa
        )
        return Profile(
            principal=principal, email=user.email, display_name=user.display_name,
            has_totp=totp is not None and totp.confirmed, passkey_count=len(passkeys),
            has_password=user.password_hash is not None, mfa_enrolment_required=must_enrol,
        )
