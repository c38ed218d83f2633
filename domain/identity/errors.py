"""Identity errors. Every credential failure surfaces as the same ``InvalidCredentials`` message,
whatever the cause (unknown tenant or user, wrong password or code, replayed or expired token,
malformed or foreign WebAuthn response), so nothing about an account's existence leaks. The precise
reason goes to the audit event only.

DomainError
└── IdentityError
    ├── InvalidCredentials      uniform "invalid credentials"; ``reason`` for audit, never shown
    ├── TooManyAttempts         brute-force limiter said wait ``retry_after`` seconds
    ├── SessionExpired          unknown, expired, revoked or half-finished session (uniform)
    ├── SecondFactorRequired    the session (or tenant policy) needs a second factor first
    ├── StepUpRequired          a sensitive action needs a recent second factor
    │   └── ReauthenticationRequired  a first second factor needs a fresh sign-in (password or IdP)
    ├── WeakPassword            an InvalidRequest too: the new password breaks the policy
    └── Forbidden               the principal lacks the role for this action
"""

from __future__ import annotations

from domain.errors import DomainError, FieldViolation, InvalidRequest

__all__ = [
    "Forbidden",
    "IdentityError",
    "InvalidCredentials",
    "ReauthenticationRequired",
    "SecondFactorRequired",
    "SessionExpired",
    "StepUpRequired",
    "TooManyAttempts",
    "WeakPassword",
]


class IdentityError(DomainError):
    code = "identity_error"


class InvalidCredentials(IdentityError):
    code = "invalid_credentials"

    def __init__(self, reason: str = "") -> None:
        super().__init__("invalid credentials")
        self.reason = reason  # for audit events and logs of the server only


class TooManyAttempts(IdentityError):
    code = "too_many_attempts"

    def __init__(self, retry_after: float) -> None:
        super().__init__("too many attempts; try again later")
        self.retry_after = retry_after


class SessionExpired(IdentityError):
    code = "unauthenticated"

    def __init__(self, reason: str = "") -> None:
        super().__init__("session expired or invalid")
        self.reason = reason


class SecondFactorRequired(IdentityError):
    code = "second_factor_required"

    def __init__(self) -> None:
        super().__init__("a second factor is required")


class StepUpRequired(IdentityError):
    code = "step_up_required"

    def __init__(self) -> None:
        super().__init__("this action needs a recent second factor")


class ReauthenticationRequired(StepUpRequired):
    """Enrolling the first second factor of a single-factor account needs a session signed in (with
    the password, or at the identity provider) within the step-up window (ASVS V7.5.1)."""

    code = "reauthentication_required"

    def __init__(self) -> None:
        IdentityError.__init__(self, "sign in again: adding a first second factor needs a sign-in from the last few minutes")


class Forbidden(IdentityError):
    code = "permission_denied"

    def __init__(self, action: str) -> None:
        super().__init__(f"not allowed: {action}")
        self.action = action


class WeakPassword(InvalidRequest):
    code = "weak_password"

    def __init__(self, description: str) -> None:
        super().__init__([FieldViolation("password", description)])
