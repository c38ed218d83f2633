"""Identity use cases and their ports. Build one ``IdentityContext`` in the composition root and
construct the use cases from it; each is a callable class (``await PasswordLogin(ctx)(...)``)."""

from application.identity.accounts import ChangePassword, CreateTeam, CreateTenant, RegisterUser, SetRole
from application.identity.api_keys import AuthenticateApiKey, CreateApiKey, CreatedApiKey, ListApiKeys, RevokeApiKey
from application.identity.context import IdentityContext, IssuedSession, RateLimit
from application.identity.login import LoginOptions, PasswordLogin, VerifySecondFactor
from application.identity.oidc import (
    BeginOidcLogin,
    ConfigureOidc,
    FinishOidcLogin,
    OidcClaims,
    OidcClient,
    OidcMetadata,
    OidcTokens,
    RemoveOidc,
)
from application.identity.passkeys import (
    BeginPasskeyLogin,
    BeginPasskeyRegistration,
    Ceremony,
    DeletePasskey,
    FinishPasskeyLogin,
    FinishPasskeyRegistration,
    ListPasskeys,
)
from application.identity.recovery import DeliverMail, MailRelayContext, RequestPasswordReset, ResetPassword
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
    "BeginOidcLogin",
    "BeginPasskeyLogin",
    "BeginPasskeyRegistration",
    "BeginTotpEnrolment",
    "Ceremony",
    "ChangePassword",
    "ConfigureOidc",
    "ConfirmTotpEnrolment",
    "CreateApiKey",
    "CreateTeam",
    "CreateTenant",
    "CreatedApiKey",
    "DeletePasskey",
    "DeliverMail",
    "EndOtherSessions",
    "FinishOidcLogin",
    "FinishPasskeyLogin",
    "FinishPasskeyRegistration",
    "IdentityContext",
    "IssuedSession",
    "ListApiKeys",
    "ListPasskeys",
    "LoginOptions",
    "Logout",
    "MailRelayContext",
    "OidcClaims",
    "OidcClient",
    "OidcMetadata",
    "OidcTokens",
    "PasswordLogin",
    "RateLimit",
    "RegenerateRecoveryCodes",
    "RegisterUser",
    "RemoveOidc",
    "RequestPasswordReset",
    "ResetPassword",
    "ResolveSession",
    "RevokeApiKey",
    "SetRole",
    "TotpEnrolled",
    "TotpEnrolment",
    "VerifySecondFactor",
]
