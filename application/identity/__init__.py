"""Identity use cases and their ports. Build one ``IdentityContext`` in the composition root and
construct the use cases from it; each is a callable class (``await PasswordLogin(ctx)(...)``)."""

from application.identity.accounts import (
    ChangePassword,
    CreateTeam,
    CreateTenant,
    RegisterUser,
    SetRole,
    UpdateTenantPolicy,
)
from application.identity.api_keys import (
    AuthenticateApiKey,
    CreateApiKey,
    CreatedApiKey,
    ListApiKeys,
    RevokeApiKey,
)
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
from application.identity.recovery import (
    DeliverMail,
    MailRelayContext,
    RequestPasswordReset,
    ResetPassword,
)
from application.identity.sessions import (
    EndOtherSessions,
    EndSession,
    EndUserSessions,
    ListSessions,
    Logout,
    ResolveSession,
    SessionView,
)
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
    "EndSession",
    "EndUserSessions",
    "FinishOidcLogin",
    "FinishPasskeyLogin",
    "FinishPasskeyRegistration",
    "IdentityContext",
    "IssuedSession",
    "ListApiKeys",
    "ListPasskeys",
    "ListSessions",
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
    "SessionView",
    "SetRole",
    "TotpEnrolled",
    "TotpEnrolment",
    "UpdateTenantPolicy",
    "VerifySecondFactor",
]
