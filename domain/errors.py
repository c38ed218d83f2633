"""The domain's exception tree.

DomainError
├── InvalidRequest          bad input; carries one FieldViolation per problem
├── NotFound                a named thing (model, provider, ...) does not exist
├── Unavailable             a dependency of Lumina's own (database, bus) cannot be reached
└── ProviderError           a provider failed; ``retryable`` says whether trying again may help
    ├── RateLimited         429; ``retry_after`` seconds when the vendor said
    ├── AuthenticationFailed
    ├── PermissionDenied
    ├── ContextLengthExceeded
    ├── ContentFiltered
    ├── UpstreamInvalidRequest
    ├── Overloaded
    ├── UpstreamUnavailable
    └── UpstreamTimeout

Edges map these to gRPC status codes and HTTP statuses in one table each (``api/errors.py``).
Messages never contain secrets.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AuthenticationFailed",
    "ContentFiltered",
    "ContextLengthExceeded",
    "DomainError",
    "FieldViolation",
    "InvalidRequest",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "ProviderError",
    "RateLimited",
    "UpstreamInvalidRequest",
    "UpstreamTimeout",
    "Unavailable",
    "UpstreamUnavailable",
]


class DomainError(Exception):
    """Base of every error the domain and application raise on purpose."""

    code: str = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True, slots=True)
class FieldViolation:
    field: str
    description: str


class InvalidRequest(DomainError):
    code = "invalid_request"

    def __init__(self, violations: list[FieldViolation] | tuple[FieldViolation, ...]) -> None:
        self.violations = tuple(violations)
        text = "; ".join(f"{v.field}: {v.description}" for v in self.violations)
        super().__init__(f"invalid request: {text}")

    @classmethod
    def single(cls, field: str, description: str) -> InvalidRequest:
        return cls([FieldViolation(field, description)])


class NotFound(DomainError):
    code = "not_found"

    def __init__(self, kind: str, name: str) -> None:
        self.kind = kind
        self.name = name
        super().__init__(f"{kind} {name!r} not found")


class Unavailable(DomainError):
    code = "unavailable"
    retryable = True


class ProviderError(DomainError):
    code = "provider_error"
    retryable = False

    def __init__(self, message: str, *, provider: str = "") -> None:
        self.provider = provider
        super().__init__(f"{provider}: {message}" if provider else message)


class RateLimited(ProviderError):
    code = "rate_limited"
    retryable = True

    def __init__(self, message: str, *, provider: str = "", retry_after: float | None = None) -> None:
        super().__init__(message, provider=provider)
        self.retry_after = retry_after


class AuthenticationFailed(ProviderError):
    code = "authentication_failed"


class PermissionDenied(ProviderError):
    code = "permission_denied"


class ContextLengthExceeded(ProviderError):
    code = "context_length_exceeded"


class ContentFiltered(ProviderError):
    code = "content_filtered"


class UpstreamInvalidRequest(ProviderError):
    code = "upstream_invalid_request"


class Overloaded(ProviderError):
    code = "overloaded"
    retryable = True


class UpstreamUnavailable(ProviderError):
    code = "upstream_unavailable"
    retryable = True


class UpstreamTimeout(ProviderError):
    code = "upstream_timeout"
    retryable = True
