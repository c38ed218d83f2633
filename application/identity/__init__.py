"""Identity use cases and their ports. Build one ``IdentityContext`` in the composition root and
construct the use cases from it; each is a callable class (``await PasswordLogin(ctx)(...)``)."""

from application.identity.accounts import ChangePassword, CreateTeam, CreateTenant, RegisterUser, SetRole
from application.identity.api_keys import AuthenticateApiKey, CreateApiKey, CreatedApiKey, ListApiKeys, RevokeApiKey
from application.identity.context import IdentityContext, IssuedSession
from application.identity.login import PasswordLogin, VerifySecondFactor
from application.identity.passkeys import (
    BeginPasskeyLogin,
    BeginPasskeyRegistration,
    Ceremony,
    FinishPasskeyLogin,
    FinishPasskeyRegistration,
)
from application.identity.recovery import DeliverMail, RequestPasswordReset, ResetPassword
from application.identity.sessions import EndOtherSessions, Logout, ResolveSession
from application.identity.totp import (
    BeginTotpEnrolment,
    ConfirmTotpEnrolment,
    RegenerateRecoveryCodes,
    TotpEnrolled,
    TotpEnrolment,
)

__all__ = [
    "AuthenticateApiKey",
    "BeginPasskeyLogin",
    "BeginPasskeyRegistration",
    "BeginTotpEnrolment",
    "Ceremony",
    "ChangePassword",
    "ConfirmTotpEnrolment",
    "CreateApiKey",
    "CreateTeam",
    "CreateTenant",
    "CreatedApiKey",
    "DeliverMail",
    "EndOtherSessions",
    "FinishPasskeyLogin",
    "FinishPasskeyRegistration",
    "IdentityContext",
    "IssuedSession",
    "ListApiKeys",
    "Logout",
    "PasswordLogin",
    "RegenerateRecoveryCodes",
    "RegisterUser",
    "RequestPasswordReset",
    "ResetPassword",
    "ResolveSession",
    "RevokeApiKey",
    "SetRole",
    "TotpEnrolled",
    "TotpEnrolment",
    "VerifySecondFactor",
]
