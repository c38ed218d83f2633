"""The domain's exception tree.

DomainError
├── InvalidRequest          bad input; carries one FieldViolation per problem
├── NotFound                a named thing (model, provider, ...) does not exist
├── Unavailable             a dependency of Lumina's own (database, bus) cannot be reached
├── BudgetExceeded          a hard budget would be exceeded; names the budget
├── RateLimitExceeded       Lumina's own rate limit (not the provider's); ``retry_after`` seconds
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
from datetime import datetime

__all__ = [
    "AuthenticationFailed",
    "BudgetExceeded",
    "ContentFiltered",
    "ContextLengthExceeded",
    "DomainError",
    "FieldViolation",
    "InvalidRequest",
    "NotFound",
    "Overloaded",
    "PermissionDenied",
    "ProviderError",
    "RateLimitExceeded",
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


class BudgetExceeded(DomainError):
    """A reservation would take a hard budget past its limit. The message names the budget (its
    name, id, scope and period); ``resets_at`` is when a calendar period ends (None: rolling)."""

    code = "budget_exceeded"

    def __init__(
        self,
        budget_id: str,
        budget_name: str,
        *,
        scope: str = "",
        limit_micros: int = 0,
        resets_at: datetime | None = None,
    ) -> None:
        self.budget_id = budget_id
        self.budget_name = budget_name
        self.limit_micros = limit_micros
        self.resets_at = resets_at
        where = f" ({scope})" if scope else ""
        super().__init__(
            f"budget {budget_name!r} [{budget_id}]{where} would be exceeded: limit {limit_micros / 1e6:.6f} USD"
        )


class RateLimitExceeded(DomainError):
    """A Lumina rate limit (requests or tokens per minute of a key, user, team, model or tenant)
    rejected the request; ``retry_after`` seconds until it could pass (None: it never can, being
    larger than the limit's burst). Distinct from ``RateLimited``, the provider's 429."""

    code = "rate_limit_exceeded"

    def __init__(self, message: str, *, limit_id: str = "", retry_after: float | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.limit_id = limit_id
        self.retry_after = retry_after
        self.headers = dict(headers or {})


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
