"""Identity: tenants, users, memberships and roles, sessions, credentials and their policies."""

from domain.identity.credentials import (
    ApiKey,
    CeremonyPurpose,
    PasskeyCredential,
    PasswordResetToken,
    RecoveryCode,
    TotpCredential,
    WebAuthnChallenge,
    format_api_key,
    parse_api_key,
)
from domain.identity.errors import (
    Forbidden,
    IdentityError,
    InvalidCredentials,
    ReauthenticationRequired,
    SecondFactorRequired,
    SessionExpired,
    StepUpRequired,
    TooManyAttempts,
    WeakPassword,
)
from domain.identity.lockout import BackoffPolicy
from domain.identity.model import (
    Membership,
    Principal,
    PrincipalKind,
    Role,
    Team,
    Tenant,
    TenantPolicy,
    User,
    normalize_email,
    validate_tenant_id,
)
from domain.identity.oidc import OidcIdentity, OidcLoginState, OidcProvider
from domain.identity.passwords import PasswordPolicy, StrengthReport
from domain.identity.sessions import Session, SessionPolicy

__all__ = [
    "ApiKey",
    "BackoffPolicy",
    "CeremonyPurpose",
    "Forbidden",
    "IdentityError",
    "InvalidCredentials",
    "Membership",
    "OidcIdentity",
    "OidcLoginState",
    "OidcProvider",
    "PasskeyCredential",
    "PasswordPolicy",
    "PasswordResetToken",
    "Principal",
    "PrincipalKind",
    "ReauthenticationRequired",
    "RecoveryCode",
    "Role",
    "SecondFactorRequired",
    "Session",
    "SessionExpired",
    "SessionPolicy",
    "StepUpRequired",
    "StrengthReport",
    "Team",
    "Tenant",
    "TenantPolicy",
    "TooManyAttempts",
    "TotpCredential",
    "User",
    "WeakPassword",
    "WebAuthnChallenge",
    "format_api_key",
    "normalize_email",
    "parse_api_key",
    "validate_tenant_id",
]
