"""The one table from domain errors to gRPC status codes and HTTP statuses."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from domain import errors as e
from domain.identity import errors as ie

__all__ = ["Mapped", "Unimplemented", "map_error"]


class Unimplemented(e.DomainError):
    """A call of the contract this server does not serve (yet)."""

    code = "unimplemented"


@dataclass(frozen=True, slots=True)
class Mapped:
    grpc_code: grpc.StatusCode
    http_status: int
    title: str


_TABLE: dict[type[e.DomainError], Mapped] = {
    # identity: uniform messages; WeakPassword is an InvalidRequest (422 with the field)
    ie.InvalidCredentials: Mapped(grpc.StatusCode.UNAUTHENTICATED, 401, "Unauthenticated"),
    ie.SessionExpired: Mapped(grpc.StatusCode.UNAUTHENTICATED, 401, "Unauthenticated"),
    ie.SecondFactorRequired: Mapped(grpc.StatusCode.UNAUTHENTICATED, 401, "Second factor required"),
    ie.ReauthenticationRequired: Mapped(grpc.StatusCode.UNAUTHENTICATED, 401, "Re-authentication required"),
    ie.StepUpRequired: Mapped(grpc.StatusCode.UNAUTHENTICATED, 401, "Recent second factor required"),
    ie.Forbidden: Mapped(grpc.StatusCode.PERMISSION_DENIED, 403, "Forbidden"),
    ie.TooManyAttempts: Mapped(grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "Too many attempts"),
    Unimplemented: Mapped(grpc.StatusCode.UNIMPLEMENTED, 501, "Not implemented"),
    e.InvalidRequest: Mapped(grpc.StatusCode.INVALID_ARGUMENT, 422, "Invalid request"),
    e.NotFound: Mapped(grpc.StatusCode.NOT_FOUND, 404, "Not found"),
    e.Unavailable: Mapped(grpc.StatusCode.UNAVAILABLE, 503, "Service unavailable"),
    e.BudgetExceeded: Mapped(grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "Budget exceeded"),
    e.RateLimitExceeded: Mapped(grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "Rate limit exceeded"),
    e.RateLimited: Mapped(grpc.StatusCode.RESOURCE_EXHAUSTED, 429, "Rate limited by the provider"),
    e.AuthenticationFailed: Mapped(grpc.StatusCode.FAILED_PRECONDITION, 502, "Provider rejected Lumina's credentials"),
    e.PermissionDenied: Mapped(grpc.StatusCode.FAILED_PRECONDITION, 502, "Provider denied access"),
    e.ContextLengthExceeded: Mapped(grpc.StatusCode.INVALID_ARGUMENT, 400, "Context length exceeded"),
    e.ContentFiltered: Mapped(grpc.StatusCode.FAILED_PRECONDITION, 400, "Content filtered by the provider"),
    e.UpstreamInvalidRequest: Mapped(grpc.StatusCode.INVALID_ARGUMENT, 400, "Provider rejected the request"),
    e.Overloaded: Mapped(grpc.StatusCode.UNAVAILABLE, 503, "Provider overloaded"),
    e.UpstreamUnavailable: Mapped(grpc.StatusCode.UNAVAILABLE, 502, "Provider unavailable"),
    e.UpstreamTimeout: Mapped(grpc.StatusCode.DEADLINE_EXCEEDED, 504, "Provider timed out"),
    e.ProviderError: Mapped(grpc.StatusCode.UNAVAILABLE, 502, "Provider error"),
    e.DomainError: Mapped(grpc.StatusCode.INTERNAL, 500, "Internal error"),
}


def map_error(exc: e.DomainError) -> Mapped:
    for cls in type(exc).__mro__:
        if cls in _TABLE:
            return _TABLE[cls]  # type: ignore[index]
    return _TABLE[e.DomainError]
