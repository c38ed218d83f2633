"""The one table from domain errors to gRPC status codes and HTTP statuses."""

from __future__ import annotations

from dataclasses import dataclass

import grpc

from domain import errors as e

__all__ = ["Mapped", "map_error"]


@dataclass(frozen=True, slots=True)
class Mapped:
    grpc_code: grpc.StatusCode
    http_status: int
    title: str


_TABLE: dict[type[e.DomainError], Mapped] = {
    e.InvalidRequest: Mapped(grpc.StatusCode.INVALID_ARGUMENT, 422, "Invalid request"),
    e.NotFound: Mapped(grpc.StatusCode.NOT_FOUND, 404, "Not found"),
    e.Unavailable: Mapped(grpc.StatusCode.UNAVAILABLE, 503, "Service unavailable"),
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
